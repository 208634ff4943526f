"""pytest fixtures for your own tests: a real Kafka broker in a container.

Enable them in your ``conftest.py``::

    pytest_plugins = ["durafka.dev.pytest_plugin"]

    def test_orders(durafka_kafka: str) -> None:
        app = durafka.App("orders", bootstrap_servers=durafka_kafka)
        ...

``durafka_kafka`` is the ``host:port`` of a one-node Kafka broker started once
per test session through testcontainers, over Podman's Docker-compatible API
(no Docker engine or registry needed: the image is built locally, see
:mod:`durafka.dev.kafka_container`), and stopped at the end. It needs
``testcontainers``, Podman, runc and debootstrap (``DURAFKA_INSTALL_PODMAN=1``
installs the last three with apt when missing), Java's Kafka jars come from
Maven Central once (``mvn``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from durafka.errors import DurafkaError

__all__ = ["durafka_kafka"]


@pytest.fixture(scope="session")
def durafka_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka broker in a container, for the whole session."""
    from durafka.dev.kafka_container import podman_kafka

    install = os.environ.get("DURAFKA_INSTALL_PODMAN") == "1"
    with contextlib.ExitStack() as stack:
        try:
            kafka = stack.enter_context(
                podman_kafka(install=install, workdir=tmp_path_factory.mktemp("podman"))
            )
        except DurafkaError as exc:
            reason = str(exc)
        else:
            reason = ""
        if reason:  # outside the except block: the report shows the reason alone
            pytest.fail(f"no Kafka container for durafka_kafka: {reason}", pytrace=False)
        yield kafka.bootstrap
