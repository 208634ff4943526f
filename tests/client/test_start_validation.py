"""Client-side checks of a start: the name against the registry, the input against its type.

A client whose registry knows orchestrations refuses a start the processor would
fail (an unknown name, an input its type does not accept) before writing
anything; a client without a registry (another service's Python) sends any name
and any JSON, and the processor decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from durafka.cli import app as cli
from durafka.client import AsyncClient, Client
from durafka.codec.records import decode_message
from durafka.errors import SerializationError, UnknownFunctionError
from durafka.registry import Registry
from tests.client.conftest import Hub


@dataclass
class Order:
    item: str
    quantity: int


async def place_order(ctx: Any, order: Order) -> str:  # never run: only registered
    raise NotImplementedError


async def not_registered(ctx: Any) -> None:
    raise NotImplementedError


@pytest.fixture
def registry() -> Registry:
    r = Registry()
    r.add_orchestration(place_order)
    return r


def test_an_unknown_name_is_refused_before_anything_is_written(
    env: Hub, registry: Registry
) -> None:
    with Client(env.settings, registry, env.transport) as client:
        with pytest.raises(UnknownFunctionError, match=r"'place_ordr'.*known: \['place_order'\]"):
            client.start_new("place_ordr", Order("tea", 1))
        with pytest.raises(UnknownFunctionError, match="'not_registered'"):
            client.start_new(not_registered)
    assert env.orchestrations_written() == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"item": "tea", "quantity": "three"},  # a field of the wrong type
        {"item": "tea"},  # a required field missing
        "tea",  # not an Order at all
        Order("tea", "three"),  # type: ignore[arg-type]  # dataclasses check nothing
    ],
)
def test_an_input_its_type_refuses_is_refused_before_anything_is_written(
    env: Hub, registry: Registry, bad: Any
) -> None:
    with (
        Client(env.settings, registry, env.transport) as client,
        pytest.raises(SerializationError, match=r"input of 'place_order'.*Order"),
    ):
        client.start_new(place_order, bad)
    assert env.orchestrations_written() == 0


def test_an_input_its_type_accepts_is_sent_as_json(env: Hub, registry: Registry) -> None:
    with Client(env.settings, registry, env.transport) as client:
        client.start_new(place_order, Order("tea", 2), instance_id="typed")
        client.start_new("place_order", {"item": "tea", "quantity": 3}, instance_id="a-dict")
    payloads = {}
    for record in env.read_orchestrations(2):
        iid, event = decode_message(record.value() or b"")
        payloads[iid] = event.payload
    assert payloads == {
        "typed": b'{"item":"tea","quantity":2}',
        "a-dict": b'{"item":"tea","quantity":3}',
    }


def test_a_client_without_a_registry_sends_any_name_and_json(env: Hub) -> None:
    with Client(env.settings, None, env.transport) as client:
        client.start_new("some.other.service", {"quantity": "three"}, instance_id="foreign")
    [record] = env.read_orchestrations(1)
    iid, event = decode_message(record.value() or b"")
    assert (iid, event.name, event.payload) == (
        "foreign",
        "some.other.service",
        b'{"quantity":"three"}',
    )


async def test_the_async_client_checks_the_same(env: Hub, registry: Registry) -> None:
    async with AsyncClient(env.settings, registry) as client:
        with pytest.raises(UnknownFunctionError, match="'place_ordr'"):
            await client.start_new("place_ordr", Order("tea", 1))
        with pytest.raises(SerializationError, match="input of 'place_order'"):
            await client.start_new(place_order, {"item": "tea", "quantity": "three"})
        await client.start_new(place_order, {"item": "tea", "quantity": 1}, instance_id="ok")
    [record] = env.read_orchestrations(1)
    assert decode_message(record.value() or b"")[0] == "ok"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["hello_wrld", '"World"'], ["hello_wrld", "hello_world"]),
        (["hello_world", '{"name": 1}'], ["input of 'hello_world'", "string"]),
        (["checkout", '{"item": "pen"}'], ["input of 'checkout'", "quantity"]),
    ],
)
def test_durafka_start_checks_before_connecting(args: list[str], words: list[str]) -> None:
    # Nothing listens on port 1: a start that got as far as connecting would fail otherwise.
    env = {"COLUMNS": "300", "DURAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = CliRunner().invoke(cli, ["start", "tests.e2e.apps:app", *args], env=env)
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output
