"""The entity programming model: ids, definitions and running one operation (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

import durafka
from durafka import EntityContext, EntityId
from durafka.entities import DELETE_OPERATION
from durafka.errors import ConfigurationError
from durafka.registry import define_entity
from durafka.runtime.entity_executor import run_operation

E = EntityId("thing", "k")


class Counter(durafka.Entity[int]):
    def add(self, amount: int) -> None:
        self.state += amount

    def get(self) -> int:
        return self.state

    def add_then_fail(self, amount: int) -> None:
        self.state += amount
        raise ValueError("boom")

    def gone(self) -> None:
        self.delete()

    def notify(self, target: str) -> None:
        self.state += 1
        self.signal_entity(EntityId("Counter", target), "add", self.state)

    def notify_then_fail(self) -> None:
        self.signal_entity(EntityId("Counter", "x"), "add", 1)
        raise RuntimeError("no")

    def unencodable(self) -> object:
        return object()

    def _helper(self) -> None:  # private: not an operation
        pass


@dataclass
class Cart:
    items: list[str] = field(default_factory=list)


class Shop(durafka.Entity[Cart]):
    def put(self, item: str) -> int:
        self.state.items.append(item)
        return len(self.state.items)


class Point(BaseModel):
    x: int = 0
    y: int = 0


class Mover(durafka.Entity[Point]):
    def move(self, by: Point) -> Point:
        self.state = Point(x=self.state.x + by.x, y=self.state.y + by.y)
        return self.state

    def initial_state(self) -> Point:
        return Point(x=100)


def run(entity: Any, op: str, input: bytes | None = None, state: bytes | None = None) -> Any:
    return run_operation(define_entity(entity), E, op, input, state)


# -- ids ---------------------------------------------------------------------------------------


def test_entity_id_string_form_roundtrips() -> None:
    eid = EntityId("counter", "a@b/c")
    assert str(eid) == "@counter@a@b/c"
    assert EntityId.parse(str(eid)) == eid
    assert sorted([EntityId("b", "1"), EntityId("a", "2")], key=str)[0].name == "a"


@pytest.mark.parametrize("text", ["counter@x", "@counter", "@@x", "@c@"])
def test_entity_id_parse_rejects_other_strings(text: str) -> None:
    with pytest.raises(ValueError):
        EntityId.parse(text)


def test_entity_id_rejects_nul_and_overlong_keys() -> None:
    with pytest.raises(ValueError, match="NUL"):
        EntityId("c", "a\x00b")
    with pytest.raises(ValueError, match="longer"):
        EntityId("c", "k" * 300)


# -- definitions ----------------------------------------------------------------------------------


def test_class_definition_lists_public_methods_with_their_types() -> None:
    d = define_entity(Counter)
    assert d.is_class and d.name == "Counter"
    assert set(d.operations) == {
        "add",
        "get",
        "add_then_fail",
        "gone",
        "notify",
        "notify_then_fail",
        "unencodable",
    }
    add = d.operations["add"]
    assert add.takes_input and add.input_adapter is not None
    assert not d.operations["get"].takes_input


def test_bad_entity_classes_are_rejected_at_registration() -> None:
    class NotAnEntity:
        def op(self) -> None: ...

    class AsyncOp(durafka.Entity[int]):
        async def op(self) -> None: ...

    class TwoInputs(durafka.Entity[int]):
        def op(self, a: int, b: int) -> None: ...

    class NoOps(durafka.Entity[int]):
        pass

    for cls, message in [
        (NotAnEntity, "must derive from durafka.Entity"),
        (AsyncOp, "plain 'def'"),
        (TwoInputs, "at most one input"),
        (NoOps, "no operations"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            define_entity(cls)
    with pytest.raises(ConfigurationError, match="without '@'"):
        define_entity(Counter, "a@b")

    def two_params(ctx: EntityContext, x: int) -> None: ...

    with pytest.raises(ConfigurationError, match=r"exactly \(ctx"):
        define_entity(two_params)


def test_a_name_is_registered_once() -> None:
    app = durafka.App("t")
    app.entity(Counter)
    app.entity(Counter)  # the same class again is fine
    with pytest.raises(ConfigurationError, match="already registered"):
        app.entity(name="Counter")(Shop)


# -- running operations --------------------------------------------------------------------------


def test_operations_start_from_the_state_type_zero_value() -> None:
    out = run(Counter, "add", b"5")
    assert out.failure is None and out.state == b"5" and out.result is None
    assert run(Counter, "add", b"2", out.state).state == b"7"
    assert run(Shop, "put", b'"pen"').state == b'{"items":["pen"]}'
    moved = run(Mover, "move", b'{"x":1,"y":2}')
    assert moved.state == b'{"x":101,"y":2}'
    assert moved.result == moved.state


def test_reading_a_missing_entity_does_not_create_it() -> None:
    out = run(Counter, "get")
    assert out.failure is None and out.result == b"0"
    assert out.state is None


def test_a_failing_operation_keeps_the_previous_state_and_drops_its_signals() -> None:
    out = run(Counter, "add_then_fail", b"5", b"10")
    assert out.state == b"10"
    assert out.failure is not None
    assert out.failure.error_type == "builtins.ValueError" and out.failure.message == "boom"
    assert out.failure.stack_trace and "add_then_fail" in out.failure.stack_trace
    failed = run(Counter, "notify_then_fail", None, b"3")
    assert failed.failure is not None and failed.signals == [] and failed.state == b"3"


def test_results_and_states_that_cannot_be_encoded_fail_the_operation() -> None:
    out = run(Counter, "unencodable", None, b"1")
    assert out.failure is not None and "SerializationError" in out.failure.error_type
    assert out.state == b"1"
    big = run_operation(
        define_entity(Shop), E, "put", b'"' + b"x" * 200 + b'"', None, max_payload_bytes=100
    )
    assert big.failure is not None and "PayloadTooLargeError" in big.failure.error_type
    assert big.state is None


def test_bad_inputs_and_unknown_operations_fail_clearly() -> None:
    bad = run(Counter, "add", b'"not a number"', b"1")
    assert bad.failure is not None and "input of Counter.add" in bad.failure.message
    extra = run(Counter, "get", b"1", b"1")
    assert extra.failure is not None and "takes no input" in extra.failure.message
    unknown = run(Counter, "nope", None, b"1")
    assert unknown.failure is not None and "'nope'" in unknown.failure.message
    assert "UnknownFunctionError" in unknown.failure.error_type


def test_delete_and_signals() -> None:
    assert run(Counter, "gone", None, b"4").state is None
    assert run(Counter, DELETE_OPERATION, None, b"4").state is None
    out = run(Counter, "notify", b'"other"', b"1")
    assert out.state == b"2"
    assert out.signals == [(EntityId("Counter", "other"), "add", b"2")]


def test_function_entities() -> None:
    def fn(ctx: EntityContext) -> Any:
        assert ctx.entity_id == E
        if ctx.operation == "set":
            ctx.set_state({"v": ctx.input(int)})
            return None
        if ctx.operation == "peek":
            return ctx.get_state(default="nothing")
        if ctx.operation == "drop":
            ctx.delete_state()
            return ctx.has_state
        raise ValueError(ctx.operation)

    out = run(fn, "set", b"3")
    assert out.state == b'{"v":3}' and out.result is None
    assert run(fn, "peek", None, out.state).result == b'{"v":3}'
    assert run(fn, "peek").result == b'"nothing"'
    dropped = run(fn, "drop", None, out.state)
    assert dropped.state is None and dropped.result == b"false"
    failed = run(fn, "explode", None, out.state)
    assert failed.failure is not None and failed.state == out.state
