"""Waiting for a condition with a deadline (no fixed sleeps in tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from durafka.processor import Processor

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> T:
    """Call ``probe`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(interval)


def run_until(proc: Processor, done: Callable[[], bool], what: str, rounds: int = 5000) -> None:
    """Drive ``proc`` by hand (``run_once``) until ``done()``; fail after ``rounds`` iterations."""
    for _ in range(rounds):
        if done():
            return
        proc.run_once(poll_timeout=0.01)
    raise AssertionError(f"the processor did not get there: {what}")
