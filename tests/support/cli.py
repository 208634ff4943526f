"""Running ``python -m durafka.cli`` as a user would: a fresh process, its own environment."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.support.processes import REPO_ROOT

#: Variables that would point a command somewhere the test did not choose.
_SCRUBBED = ("DURAFKA_",)


def cli_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without ``DURAFKA_*``, plus ``env``; durafka from this checkout."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    return {
        **base,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
        ),
        "COLUMNS": "200",
    }


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    cwd: Path = REPO_ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run ``durafka ARGS`` in ``cwd`` to its end (``TimeoutExpired`` after ``timeout`` s)."""
    return subprocess.run(
        [sys.executable, "-m", "durafka.cli", *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``durafka ARGS`` in the background (stdout and stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "durafka.cli", *args],
        cwd=REPO_ROOT,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def serving(
    *args: str,
    stderr: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """``durafka ARGS`` (a role command) in the background, once it says it is serving.

    Its stderr goes to the file ``stderr``, to read while it runs and after; the
    process is killed if it still runs when the block ends.
    """
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "durafka.cli", *args],
            cwd=cwd,
            env=cli_env(env),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + timeout
        while "serving task hub" not in stderr.read_text():
            assert proc.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
