"""Running one entity operation against a state: ``(state, operation, input) -> outcome``, no I/O.

The entity's counterpart of :mod:`durafka.runtime.executor`: the processor
(:mod:`durafka.processor.entities`) hands it the stored state bytes and takes
back the new state, the result and the signals to send. An operation that
raises keeps the state from before it: the scope holding its changes is
simply dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from durafka.codec.payload import DEFAULT_MAX_PAYLOAD_BYTES, decode_payload, encode_payload
from durafka.entities import DELETE_OPERATION, EntityContext, EntityId, new_entity
from durafka.errors import FailureDetails, UnknownFunctionError
from durafka.registry import EntityDefinition

__all__ = ["OperationOutcome", "run_operation"]


class _Scope:
    """The state, input and outgoing signals of one running operation.

    The state before the operation stays untouched in ``original``: a failing
    operation simply drops the scope, which is the rollback.
    """

    __slots__ = (
        "assigned",
        "deleted",
        "entity_id",
        "initial_bytes",
        "input",
        "loaded",
        "max_bytes",
        "operation",
        "original",
        "signals",
        "state_adapter",
        "value",
    )

    def __init__(
        self,
        entity_id: EntityId,
        operation: str,
        input: bytes | None,
        state: bytes | None,
        state_adapter: TypeAdapter[Any] | None,
        max_bytes: int,
    ) -> None:
        self.entity_id = entity_id
        self.operation = operation
        self.input = input
        self.original = state
        self.state_adapter = state_adapter
        self.max_bytes = max_bytes
        self.loaded = False
        self.value: Any = None
        self.assigned = False
        self.deleted = False
        self.initial_bytes: bytes | None = None
        self.signals: list[tuple[EntityId, str, bytes | None]] = []

    def current_bytes(self) -> bytes | None:
        """The state as stored before this operation, unless the operation deleted it."""
        return None if self.deleted else self.original

    def encode_state(self, value: Any) -> bytes:
        return encode_payload(
            value,
            self.state_adapter,
            max_bytes=self.max_bytes,
            what=f"state of entity {self.entity_id}",
        )

    def signal(self, entity_id: EntityId, operation: str, input: Any) -> None:
        if not isinstance(entity_id, EntityId):
            raise TypeError(f"signal_entity needs an EntityId, got {entity_id!r}")
        payload = (
            None
            if input is None
            else encode_payload(
                input,
                None,
                max_bytes=self.max_bytes,
                what=f"input of {operation!r} for entity {entity_id}",
            )
        )
        self.signals.append((entity_id, operation, payload))


@dataclass(slots=True)
class OperationOutcome:
    """What one operation did.

    Attributes:
        state: the state after the operation: the one before it if it failed.
        result: the result as JSON bytes (None: no result, or it failed).
        failure: why it failed, or None.
        signals: ``(entity id, operation, input JSON)`` to send, empty if it failed.
    """

    state: bytes | None
    result: bytes | None = None
    failure: FailureDetails | None = None
    signals: list[tuple[EntityId, str, bytes | None]] = field(default_factory=list)


def run_operation(
    definition: EntityDefinition,
    entity_id: EntityId,
    operation: str,
    input: bytes | None,
    state: bytes | None,
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> OperationOutcome:
    """Run one operation against ``state`` (JSON bytes); never raises for user errors.

    Anything the operation raises, including a result or a state that cannot be
    encoded, makes it a failure that keeps ``state`` as it was.
    """
    scope = _Scope(entity_id, operation, input, state, definition.state_adapter, max_payload_bytes)
    try:
        if operation == DELETE_OPERATION:
            scope.deleted = True
            result = None
        elif definition.is_class:
            result = _run_method(definition, scope)
        else:
            value = definition.target(EntityContext(scope))
            result = _encode_result(value, definition.output_adapter, scope)
        new_state = _final_state(scope, definition.is_class)
    except Exception as exc:
        return OperationOutcome(state, failure=FailureDetails.from_exception(exc))
    return OperationOutcome(new_state, result, None, scope.signals)


def _run_method(definition: EntityDefinition, scope: _Scope) -> bytes | None:
    op = definition.operation(scope.operation)
    if op is None:
        raise UnknownFunctionError(
            f"entity {definition.name!r} has no operation {scope.operation!r} "
            f"(known: {sorted(definition.operations)})"
        )
    method = getattr(new_entity(definition.target, scope), op.name)
    if op.takes_input:
        arg = decode_payload(
            scope.input, op.input_adapter, what=f"input of {definition.name}.{op.name}"
        )
        value = method(arg)
    else:
        if scope.input is not None:
            raise TypeError(
                f"operation {definition.name}.{op.name} takes no input, but one was given"
            )
        value = method()
    return _encode_result(value, op.output_adapter, scope)


def _encode_result(value: Any, adapter: TypeAdapter[Any] | None, scope: _Scope) -> bytes | None:
    if value is None:
        return None
    return encode_payload(
        value,
        adapter,
        max_bytes=scope.max_bytes,
        what=f"result of {scope.operation!r} on entity {scope.entity_id}",
    )


def _final_state(scope: _Scope, is_class: bool) -> bytes | None:
    if not scope.loaded:
        return scope.current_bytes()
    encoded = scope.encode_state(scope.value) if is_class else _encode_untyped(scope)
    if (
        scope.current_bytes() is None
        and not scope.assigned
        and scope.initial_bytes is not None
        and encoded == scope.initial_bytes
    ):
        return None  # only read the initial state: the entity still does not exist
    return encoded


def _encode_untyped(scope: _Scope) -> bytes:
    return encode_payload(
        scope.value, None, max_bytes=scope.max_bytes, what=f"state of entity {scope.entity_id}"
    )
