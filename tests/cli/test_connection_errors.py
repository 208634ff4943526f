"""A cluster that cannot be reached: one line naming the cause, in seconds, no client noise.

Before: 32 s and ~700 lines of librdkafka's log, ending in "no metadata ...
Broker transport failure" (a refused port), and the same for a wrong password
or an untrusted certificate authority.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from durafka.dev.broker import free_port
from tests.support.cli import run_cli
from tests.support.security import SecuredBroker

HELLO = "examples.hello:app"
#: Far more than the commands need (about 7 s at most), far less than before (32 s).
_BOUND_S = 25.0


def _the_one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot reach Kafka at "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["start", HELLO, "hello_world", '"World"'], id="start"),
        pytest.param(["run", HELLO], id="run"),
        pytest.param(["topology", "apply"], id="topology-apply"),
    ],
)
def test_a_refused_port_is_one_line_naming_the_cause(args: list[str]) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    done = run_cli(*args, env={"DURAFKA_BOOTSTRAP_SERVERS": bootstrap}, timeout=_BOUND_S)
    line = _the_one_line(done)
    assert f"cannot reach Kafka at {bootstrap}: connection refused" in line
    assert "is the broker running" in line


def test_debug_shows_the_client_library_log() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    done = run_cli(
        "topology", "apply", "--bootstrap", bootstrap, "--log-level", "debug", timeout=_BOUND_S
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert any("durafka.librdkafka" in line and "Connection refused" in line for line in lines)
    assert lines[-1].startswith(f"error: cannot reach Kafka at {bootstrap}: connection refused")


@pytest.mark.kafka
def test_a_wrong_password_is_one_line_naming_the_cause(secured_broker: SecuredBroker) -> None:
    done = run_cli(
        "start",
        HELLO,
        "hello_world",
        '"World"',
        env={
            "DURAFKA_BOOTSTRAP_SERVERS": secured_broker.bootstrap("SCRAM"),
            "DURAFKA_CLIENT_CONFIG": json.dumps(secured_broker.scram_config(password="wrong")),
        },
        timeout=_BOUND_S,
    )
    line = _the_one_line(done)
    assert ": authentication failed (" in line
    assert "invalid credentials" in line
    assert "sasl.password" in line


@pytest.mark.kafka
def test_an_untrusted_certificate_is_one_line_naming_the_cause(
    secured_broker: SecuredBroker,
) -> None:
    done = run_cli(
        "topology",
        "apply",
        env={
            "DURAFKA_BOOTSTRAP_SERVERS": secured_broker.bootstrap("SSL"),
            "DURAFKA_CLIENT_CONFIG": json.dumps(
                secured_broker.ssl_config(ca=secured_broker.pki.other_ca)
            ),
        },
        timeout=_BOUND_S,
    )
    line = _the_one_line(done)
    assert ": TLS failure (" in line
    assert "certificate verify failed" in line
    assert "ssl.ca.location" in line


@pytest.mark.kafka
def test_a_plaintext_client_on_a_tls_listener_is_told_the_protocol(
    secured_broker: SecuredBroker,
) -> None:
    done = run_cli(
        "topology",
        "apply",
        env={"DURAFKA_BOOTSTRAP_SERVERS": secured_broker.bootstrap("SSL")},
        timeout=_BOUND_S,
    )
    line = _the_one_line(done)
    assert ": security protocol mismatch (" in line
    assert "security.protocol" in line
