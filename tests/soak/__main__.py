"""``python -m tests.soak --seed N --minutes M``: the chaos soak at any size.

Runs from the repository root (the role processes import ``tests.soak.app``).
It starts a Kafka broker of its own (Java and Maven, see
:mod:`durafka.devbroker`) in the work directory and kills it on purpose, so it
never touches a broker anyone else uses. Exit status 0: every check passed;
1: problems were found (listed, with the command that replays the run).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from tests.soak.report import SoakFailure
from tests.soak.runner import run_soak
from tests.soak.schedule import CI_SIZE, SoakSize


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak",
        description="durafka's chaos soak: a mixed workload on role processes that are "
        "killed and restarted, a broker that is killed and frozen, and exactly-once checks.",
    )
    parser.add_argument("--seed", type=int, help="the seed (default: a random one, printed)")
    parser.add_argument(
        "--minutes", type=float, default=5.0, help="chaos time, 2/3 group phase, 1/3 static"
    )
    parser.add_argument(
        "--ci", action="store_true", help="the size of tests/soak/test_soak.py (not --minutes)"
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="instances started per second (default 8)"
    )
    parser.add_argument(
        "--partitions", type=int, default=None, help="partitions of each task hub (default 8)"
    )
    parser.add_argument(
        "--phases",
        default="group,static",
        help="which phases to run: group, static or both (default)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="kept after the run (default: a temp dir)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every check passed."""
    args = _parser().parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = phases - {"group", "static"}
    if unknown:
        _parser().error(f"unknown phases {sorted(unknown)}: use group and/or static")
    size = CI_SIZE if args.ci else SoakSize.for_minutes(args.minutes)
    if "group" not in phases:
        size = replace(size, group_seconds=0)
    if "static" not in phases:
        size = replace(size, static_seconds=0)
    if args.rate is not None:
        size = replace(size, starts_per_second=args.rate)
    if args.partitions is not None:
        size = replace(size, partitions=args.partitions)
    replay = (
        f"python -m tests.soak --seed {seed} "
        + ("--ci " if args.ci else f"--minutes {args.minutes:g} ")
        + f"--phases {','.join(sorted(phases))}"
        + (f" --rate {args.rate:g}" if args.rate is not None else "")
        + (f" --partitions {args.partitions}" if args.partitions is not None else "")
    )
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix=f"durafka-soak-{seed}-"))
    report = run_soak(seed, size, work_dir, replay=replay, out=sys.stdout)
    print(report.summary())
    try:
        report.verdict()
    except SoakFailure as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
