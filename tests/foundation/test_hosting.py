"""Hosting: the runner runs roles on threads and tunes the process's garbage collector;
the marker that tells a process the last one on its state dir died."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from durafka import App
from durafka.dev.broker import free_port
from durafka.errors import ClusterConnectionError, DurafkaError
from durafka.hosting import CleanExitMarker, Runner, tune_garbage_collector


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


def test_a_marker_is_left_behind_by_a_dead_process_not_by_a_live_one(tmp_path: Path) -> None:
    path = tmp_path / "state" / "h.running"
    assert not CleanExitMarker(path).left_behind()
    live = CleanExitMarker(path)
    live.begin()
    assert path.exists()
    assert not CleanExitMarker(path).left_behind()  # its process is alive
    live.remove()
    assert not path.exists()
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from pathlib import Path; from durafka.hosting import "
            "CleanExitMarker; CleanExitMarker(Path(sys.argv[1])).begin(); os._exit(9)",
            str(path),
        ],
        check=False,
    )
    assert killed.returncode == 9
    assert CleanExitMarker(path).left_behind()


def test_the_runner_takes_the_marker_when_its_roles_start(tmp_path: Path) -> None:
    marker = CleanExitMarker(tmp_path / "h.running")
    runner = Runner()
    runner.add("idle", lambda stop: stop.wait())
    runner.on_start(marker.begin)
    runner.on_clean_stop(marker.remove)
    assert not marker.path.exists()  # built, not started: nothing runs yet
    runner.start()
    assert marker.path.exists()
    runner.stop()
    assert not marker.path.exists()


def test_an_app_that_cannot_reach_its_cluster_leaves_no_marker(tmp_path: Path) -> None:
    # It ran no activity: the next start must not take it for a crash (and run every
    # activity through the worker for ten minutes, saying so in a warning).
    app = App("h", bootstrap_servers=f"127.0.0.1:{free_port()}", state_dir=tmp_path / "state")
    with pytest.raises(ClusterConnectionError):
        app.runner()
    assert not (tmp_path / "state" / "h.local-activities.running").exists()
