"""Hosting: the runner runs roles on threads and tunes the process's garbage collector."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from durafka.errors import DurafkaError
from durafka.hosting import Runner, tune_garbage_collector


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_young_threshold_is_raised_and_the_others_kept() -> None:
    gc.set_threshold(700, 11, 12)
    tune_garbage_collector(50_000)
    assert gc.get_threshold() == (50_000, 11, 12)


def test_a_larger_threshold_or_zero_is_left_alone() -> None:
    gc.set_threshold(100_000, 10, 10)
    tune_garbage_collector(50_000)
    assert gc.get_threshold() == (100_000, 10, 10)
    gc.set_threshold(700, 10, 10)
    tune_garbage_collector(0)
    assert gc.get_threshold() == (700, 10, 10)


def test_a_process_that_disabled_collection_keeps_it_disabled() -> None:
    gc.set_threshold(0, 10, 10)
    tune_garbage_collector(50_000)
    assert gc.get_threshold() == (0, 10, 10)


def test_the_runner_tunes_on_start_and_reraises_a_role_error() -> None:
    gc.set_threshold(700, 10, 10)
    ran = threading.Event()

    def fails(stop: threading.Event) -> None:
        ran.set()
        raise RuntimeError("role broke")

    runner = Runner(gc_young_threshold=20_000)
    runner.add("broken", fails)
    runner.start()
    assert ran.wait(5)
    assert gc.get_threshold()[0] == 20_000
    with pytest.raises(DurafkaError, match="role broke"):
        runner.stop()
