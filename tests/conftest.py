"""Test harness: one real Kafka broker per session, a fresh task hub per test.

``kafka_bootstrap`` finds or starts the broker (see ``tests/support/broker.py``);
a test that needs it and cannot get it FAILS with the reasons, never skips. A
failing test that used the broker gets the tail of the broker log in its report.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

import durafka
from durafka.errors import BrokerUnavailableError
from durafka.registry import Registry
from durafka.topology import TopicSpec, load_hub_spec
from durafka.transport.admin import apply_topics
from tests.support.apps import make_app
from tests.support.broker import BrokerHandle, acquire_broker, take_broker_env
from tests.support.kafka import admin_client
from tests.support.processes import RoleLauncher
from tests.support.security import SecuredBroker, start_secured_broker

# Taken out of the environment at once: an App under test that read it would run on
# the shared broker instead of the transport its test chose.
_SHARED_BROKER = take_broker_env(os.environ)

# The documented fixture for users' tests (durafka_kafka: a broker container through
# testcontainers over Podman); tests/deploy/test_testcontainers.py uses it, and may
# install Podman with apt as the container tests do.
pytest_plugins = ["durafka.dev.pytest_plugin"]
os.environ.setdefault("DURAFKA_INSTALL_PODMAN", "1")

_BROKER = pytest.StashKey[BrokerHandle]()
_REQUEST = pytest.StashKey[pytest.FixtureRequest]()
_LOG_LINES = 80


@pytest.fixture(scope="session")
def kafka_broker(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerHandle]:
    """The session's broker (bootstrap address, log tail)."""
    try:
        handle = acquire_broker(tmp_path_factory.mktemp("broker"), _SHARED_BROKER)
    except BrokerUnavailableError as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:  # outside the except block, so the report shows the reason alone
        pytest.fail(reason, pytrace=False)
    pytestconfig.stash[_BROKER] = handle
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: BrokerHandle) -> str:
    """``host:port`` of a real Kafka broker for this session."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """A broker of the session's own with TLS, mutual TLS, SASL/SCRAM and OAUTHBEARER listeners.

    Started on first use (Java and Maven, like the local broker): certificates
    and SCRAM credentials are made for it, so no shared broker can stand in.
    """
    try:
        secured = start_secured_broker(tmp_path_factory.mktemp("secured"))
    except BrokerUnavailableError as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:
        pytest.fail(reason, pytrace=False)
    yield secured
    secured.broker.stop()


@pytest.fixture
def hub() -> str:
    """A task hub name no other test uses (so no test sees another's records)."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kafka_hub_topics(kafka_bootstrap: str, hub: str) -> list[TopicSpec]:
    """The topics of ``hub`` (4 partitions each), created on the broker."""
    specs = load_hub_spec(hub, partitions=4)
    apply_topics(admin_client(kafka_bootstrap), specs)
    return specs


@pytest.fixture(autouse=True)
def _remember_request(request: pytest.FixtureRequest) -> None:
    # Its fixturenames also list fixtures taken with request.getfixturevalue().
    request.node.stash[_REQUEST] = request


@pytest.fixture(autouse=True)
def _delete_topics_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete the topics a test created on the session's own broker.

    Every test creates a task hub of its own (six topics); kept for the whole
    session they add up to tens of thousands of partitions, which a small test
    broker does not survive. A shared broker named by ``DURAFKA_BOOTSTRAP_SERVERS``
    (or ``DURAFKA_BOOTSTRAP``) is left alone (others may be using it).
    """
    handle = request.config.stash.get(_BROKER, None)
    before = _topics(handle) if handle is not None and _owned(handle) else None
    yield
    handle = request.config.stash.get(_BROKER, None)
    if handle is None or not _owned(handle) or not _used_kafka(request.node):
        return
    created = _topics(handle) - (before or set())
    if created:
        admin = admin_client(handle.bootstrap)
        for future in admin.delete_topics(sorted(created), operation_timeout=30).values():
            with contextlib.suppress(Exception):  # best effort: a leftover topic is harmless
                future.result()


def _owned(handle: BrokerHandle) -> bool:
    return not handle.shared


def _topics(handle: BrokerHandle) -> set[str]:
    names = admin_client(handle.bootstrap).list_topics(timeout=30).topics
    return {name for name in names if not name.startswith("__")}


def _used_kafka(item: pytest.Item) -> bool:
    request = item.stash.get(_REQUEST, None)
    names = request.fixturenames if request is not None else getattr(item, "fixturenames", ())
    return "kafka_bootstrap" in names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m kafka` / `-m "not kafka"` (only tests naming the fixture; ones that take it
    # through request.getfixturevalue() are known too late to be marked).
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    handle = item.config.stash.get(_BROKER, None)
    if report.failed and handle is not None and _used_kafka(item):
        report.sections.append(
            (
                f"Kafka broker log, last {_LOG_LINES} lines ({handle.origin})",
                handle.log_tail(_LOG_LINES),
            )
        )
    return report


# -- apps on both transports (each test package provides ``app_registry``) ----------


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bootstrap(request: pytest.FixtureRequest) -> str:
    """``memory://<unique>`` or the real broker's address: run the test on both."""
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex[:8]}"
    return str(request.getfixturevalue("kafka_bootstrap"))


@pytest.fixture
def app_registry() -> Registry:
    """The functions the package's tests run (overridden in each package's conftest)."""
    raise NotImplementedError("define an app_registry fixture in this test package")


@pytest.fixture
def app_factory(
    bootstrap: str, tmp_path: Path, app_registry: Registry
) -> Iterator[Callable[..., durafka.App]]:
    """Builds apps on a fresh task hub (one per test); ``registry=`` swaps the functions."""
    hub = f"t{uuid.uuid4().hex[:10]}"
    made: list[durafka.App] = []

    def factory(**overrides: Any) -> durafka.App:
        registry = overrides.pop("registry", app_registry)
        app = make_app(
            bootstrap, overrides.pop("hub", hub), tmp_path / "state", registry, **overrides
        )
        made.append(app)
        return app

    yield factory
    for app in made:
        app.close()


@pytest.fixture
def running_app(app_factory: Callable[..., durafka.App]) -> Iterator[durafka.App]:
    """An app with a processor and a worker running in this process."""
    app = app_factory()
    with app.running():
        yield app


@pytest.fixture
def roles(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RoleLauncher]:
    """Child processes of the test; stopped afterwards, their log tails shown on failure."""
    launcher = RoleLauncher(tmp_path / "logs")
    failed_before = request.session.testsfailed
    yield launcher
    launcher.stop_all()
    if request.session.testsfailed > failed_before:
        # Shown by pytest under "Captured stdout teardown" of the failed test.
        print(launcher.log_tails(60))
