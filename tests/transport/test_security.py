"""One DURAFKA_CLIENT_CONFIG serves every client, on TLS and SASL listeners of a real broker.

Every client type runs against each secured listener of the session's
``secured_broker``: the admin client (``durafka topology apply``), a processor
and an activity worker (activities through ``H.activities``, not run locally),
the sync client and the asyncio client. The asyncio client uses aiokafka where
every setting has an exact aiokafka equivalent, librdkafka on threads otherwise
(OAUTHBEARER).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from durafka.client import AsyncClient, Client
from durafka.errors import ClusterConnectionError, ConnectionCause
from durafka.settings import Settings
from examples.hello import app as hello
from tests.support.apps import make_app
from tests.support.cli import run_cli
from tests.support.security import SecuredBroker

pytestmark = pytest.mark.kafka

_CONFIGS: dict[str, Callable[[SecuredBroker], dict[str, str]]] = {
    "SSL": SecuredBroker.ssl_config,
    "MTLS": SecuredBroker.mtls_config,
    "SCRAM": lambda broker: broker.scram_config(),
    "SASLSSL": SecuredBroker.sasl_ssl_config,
    "OAUTH": lambda broker: broker.oauth_config(),
}
#: Which transport the asyncio client gets for the listener's settings.
_ASYNC_TRANSPORT = {
    "SSL": "AioKafkaTransport",
    "MTLS": "AioKafkaTransport",
    "SCRAM": "AioKafkaTransport",
    "SASLSSL": "AioKafkaTransport",
    "OAUTH": "ThreadedAsyncTransport",  # aiokafka needs a token provider object
}


@pytest.mark.parametrize("listener", list(_CONFIGS))
def test_every_client_works_on_a_secured_listener(
    secured_broker: SecuredBroker, listener: str, tmp_path: Path
) -> None:
    config = _CONFIGS[listener](secured_broker)
    bootstrap = secured_broker.bootstrap(listener)
    hub = f"s{uuid.uuid4().hex[:8]}"

    # The admin client: `topology apply` honours DURAFKA_CLIENT_CONFIG (it did not).
    applied = run_cli(
        "topology",
        "apply",
        "--hub",
        hub,
        "--partitions",
        "2",
        env={"DURAFKA_BOOTSTRAP_SERVERS": bootstrap, "DURAFKA_CLIENT_CONFIG": json.dumps(config)},
    )
    assert applied.returncode == 0, applied.stderr
    assert f"created    {hub}.orchestrations (partitions: 2)" in applied.stdout

    app = make_app(
        bootstrap,
        hub,
        tmp_path / "state",
        hello.registry,
        partitions=2,
        client_config=config,
        local_activities=False,  # the worker's own consumer and transactions
    )
    try:
        with app.running(), app.sync_client() as client:
            iid = client.start_new("hello_world", "sync")
            assert client.wait_for_completion(iid, timeout=60) == "Hello, sync!"
            kind, output = asyncio.run(_start_async(app.settings))
    finally:
        app.close()
    assert output == "Hello, async!"
    assert kind == _ASYNC_TRANSPORT[listener]


async def _start_async(settings: Settings) -> tuple[str, object]:
    async with AsyncClient(settings, hello.registry) as client:
        iid = await client.start_new("hello_world", "async")
        output = await client.wait_for_completion(iid, timeout=60)
        return type(client._transport).__name__, output


@pytest.mark.parametrize(
    ("listener", "bad_config", "cause"),
    [
        pytest.param(
            "SCRAM",
            lambda broker: broker.scram_config(password="wrong"),
            ConnectionCause.AUTHENTICATION,
            id="wrong-password",
        ),
        pytest.param(
            "SSL",
            lambda broker: broker.ssl_config(ca=broker.pki.other_ca),
            ConnectionCause.TLS,
            id="untrusted-ca",
        ),
    ],
)
def test_every_client_names_why_it_cannot_connect(
    secured_broker: SecuredBroker,
    listener: str,
    bad_config: Callable[[SecuredBroker], dict[str, str]],
    cause: ConnectionCause,
    tmp_path: Path,
) -> None:
    bootstrap = secured_broker.bootstrap(listener)
    settings = Settings(
        task_hub=f"s{uuid.uuid4().hex[:8]}",
        bootstrap_servers=bootstrap,
        state_dir=tmp_path / "state",
        client_config=bad_config(secured_broker),
    )
    app = make_app(
        bootstrap, settings.task_hub, tmp_path / "state", hello.registry,
        client_config=settings.client_config,
    )  # fmt: skip
    try:
        with pytest.raises(ClusterConnectionError) as processor_and_worker:
            app.runner()  # their topics first: the admin client
        assert processor_and_worker.value.cause is cause
    finally:
        app.close()

    with Client(settings, hello.registry) as client, pytest.raises(ClusterConnectionError) as sync:
        client.start_new("hello_world", "x")
    assert sync.value.cause is cause

    with pytest.raises(ClusterConnectionError) as aio:
        asyncio.run(AsyncClient(settings, hello.registry).start())
    assert aio.value.cause is cause
    assert str(aio.value).startswith(f"cannot reach Kafka at {bootstrap}: {cause} (")
