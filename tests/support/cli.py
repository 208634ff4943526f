"""Running ``python -m durafka.cli`` as a user would: a fresh process, its own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
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
