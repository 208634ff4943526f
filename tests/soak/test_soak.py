"""The CI-sized chaos soak against a real broker of its own (which it kills and freezes).

The seed is random unless ``DURAFKA_SOAK_SEED`` is set; it is printed first and
named in every failure, with the command that replays the run
(``python -m tests.soak --seed N --ci``). Every problem the soak finds is
listed in one failure; the progress log and the summary are in the captured
output.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from tests.soak.runner import run_soak
from tests.soak.schedule import CI_SIZE, FaultKind, plan_soak

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: What CI must exercise at least (issue 10).
MIN_KILL_CYCLES = 20
MIN_BROKER_KILLS = 1


@pytest.mark.timeout(900)
def test_chaos_soak(tmp_path: Path) -> None:
    seed = int(os.environ.get("DURAFKA_SOAK_SEED") or random.randrange(1, 1_000_000))
    print(f"chaos soak seed {seed}", flush=True)
    plans = plan_soak(seed, CI_SIZE)
    planned_kills = sum(p.kill_cycles for p in plans)
    assert planned_kills >= MIN_KILL_CYCLES, f"seed {seed}: only {planned_kills} kill cycles"
    assert any(f.kind is FaultKind.BROKER_KILL for p in plans for f in p.faults), seed

    report = run_soak(
        seed,
        CI_SIZE,
        tmp_path / "soak",
        replay=f"python -m tests.soak --seed {seed} --ci (or DURAFKA_SOAK_SEED={seed} pytest "
        "tests/soak/test_soak.py)",
        out=sys.stdout,
    )

    print(report.summary())
    assert report.kill_cycles >= MIN_KILL_CYCLES, f"seed {seed}: {report.kill_cycles} kills ran"
    assert report.broker_kills >= MIN_BROKER_KILLS, f"seed {seed}: no broker kill ran"
    report.verdict()
