"""The watchdog: a Kafka call stuck past its bound stops the roles, or the process.

The stuck call is simulated (a tracked call that does not return); the broker
freeze that makes librdkafka do it for real is tests/e2e/test_broker_freeze.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable

import pytest

from durafka.errors import StuckCallError
from durafka.hosting import Runner
from durafka.transport.calls import InFlightCall, calls_in_flight, overdue_calls, tracked
from durafka.watchdog import EXIT_STUCK, Watchdog
from tests.support.waiting import wait_until


def _stuck_role(
    release: threading.Event, entered: threading.Event
) -> Callable[[threading.Event], None]:
    def role(stop: threading.Event) -> None:
        with tracked("send_offsets_to_transaction(H.processor.p3)", 0.05):
            entered.set()
            release.wait(30)  # librdkafka not returning, ignoring stop

    return role


def test_calls_in_flight_are_known_until_they_return() -> None:
    inside = threading.Event()
    leave = threading.Event()

    def call() -> None:
        with tracked("commit_transaction(x)", 10.0):
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=call, name="caller")
    t.start()
    assert inside.wait(5)
    [c] = [c for c in calls_in_flight() if c.what == "commit_transaction(x)"]
    assert c.thread == "caller" and c.bound == 10.0
    assert all(o.what != "commit_transaction(x)" for o in overdue_calls(0.0))  # not yet
    leave.set()
    t.join(5)
    assert all(c.what != "commit_transaction(x)" for c in calls_in_flight())


def test_a_stuck_call_is_reported_once_with_the_stacks(capfd: pytest.CaptureFixture[str]) -> None:
    release, entered = threading.Event(), threading.Event()
    thread = threading.Thread(target=_stuck_role(release, entered), args=(threading.Event(),))
    thread.name = "durafka-processor"
    thread.start()
    reports: list[list[InFlightCall]] = []
    watchdog = Watchdog(0.1, reports.append)
    try:
        assert entered.wait(5)
        wait_until(lambda: bool(watchdog.check()), what="the stuck call")
        watchdog.check()
        [[call]] = reports  # once, however often it is checked
        assert "send_offsets_to_transaction(H.processor.p3)" in str(call)
        assert "durafka-processor" in str(call)
        assert 'test_watchdog.py", line' in capfd.readouterr().err  # every thread's stack
    finally:
        release.set()
        thread.join(5)


def test_an_embedded_runner_stops_its_roles_and_raises_stuck_call_error() -> None:
    release, entered = threading.Event(), threading.Event()
    polite = threading.Event()

    def well_behaved(stop: threading.Event) -> None:
        stop.wait(30)
        polite.set()

    runner = Runner(watchdog_grace=0.1)
    runner.add("processor", _stuck_role(release, entered))
    runner.add("worker", well_behaved)
    runner.start()
    try:
        assert entered.wait(5)
        runner.wait()  # woken by the watchdog
        assert isinstance(runner.failed, StuckCallError)
        with pytest.raises(StuckCallError, match=r"send_offsets_to_transaction"):
            runner.stop(timeout=1.0)
        assert polite.is_set()  # the other role was asked to stop, and did
        assert runner.alive == ["processor"]  # the stuck one cannot be
    finally:
        release.set()


def test_the_command_line_runner_exits_with_75() -> None:
    script = textwrap.dedent(
        """
        import threading, time
        from durafka.hosting import Runner
        from durafka.transport.calls import tracked

        def stuck(stop):
            with tracked("commit_transaction(H.worker.w1)", 0.05):
                time.sleep(60)

        runner = Runner(watchdog_grace=0.2, exit_when_stuck=True)
        runner.add("worker", stuck)
        runner.start()
        runner.wait()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == EXIT_STUCK, done.stderr
    assert "a Kafka call is stuck: commit_transaction(H.worker.w1)" in done.stderr
    assert "exiting with status 75" in done.stderr
    assert 'File "<string>"' in done.stderr  # every thread's stack
