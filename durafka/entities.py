"""Entities: durable actors addressed by ``(name, key)`` whose operations run one at a time.

An entity is a piece of state with operations on it, e.g. a counter or a bank
account. Two ways to write one:

* a class deriving from :class:`Entity` whose public methods are its
  operations, with the state type as the generic parameter::

      @app.entity
      class Counter(durafka.Entity[int]):
          def add(self, amount: int) -> None:
              self.state += amount

          def get(self) -> int:
              return self.state

* a function taking an :class:`EntityContext`, for dynamic dispatch::

      @app.entity(name="counter")
      def counter(ctx: durafka.EntityContext) -> Any:
          if ctx.operation == "add":
              ctx.set_state(ctx.get_state(int, 0) + ctx.input(int))

Operations run inside the processor that owns the entity's partition, in the
Kafka transaction of their batch: the new state, the response to the caller
and the changelog record commit together (exactly once per operation). An
operation that raises leaves the state as it was before that operation.

This module is the programming model (ids, base class, context, definitions
and running one operation); :mod:`durafka.processor.entities` is what the
processor does with them (store, queue, locks, responses).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter

from durafka.codec.payload import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    adapter_for,
    decode_payload,
    encode_payload,
)
from durafka.errors import ConfigurationError, FailureDetails, UnknownFunctionError

__all__ = [
    "DELETE_OPERATION",
    "Entity",
    "EntityContext",
    "EntityDefinition",
    "EntityId",
    "EntityMetadata",
    "OperationDef",
    "OperationOutcome",
    "define_entity",
    "is_entity_id",
    "run_operation",
]

S = TypeVar("S")

#: The built-in operation that deletes an entity's state (``client.delete_entity``).
#: ``$`` cannot start a method name, so no user operation can shadow it.
DELETE_OPERATION = "$delete"

#: Entity ids share the instance id space of ``H.orchestrations``; this prefix marks them.
ENTITY_ID_PREFIX = "@"
_MAX_ID_LENGTH = 256


def is_entity_id(instance_id: str) -> bool:
    """Whether an ``H.orchestrations`` key names an entity (``@<name>@<key>``)."""
    return instance_id.startswith(ENTITY_ID_PREFIX)


@dataclass(frozen=True, slots=True)
class EntityId:
    """The address of an entity: its registered name and a key (e.g. an account number).

    Its string form ``@<name>@<key>`` is the record key on ``H.orchestrations``
    and ``H.entities``, and the order in which ``ctx.lock`` acquires entities.

    Example:
        >>> EntityId("counter", "clicks")
        EntityId(name='counter', key='clicks')
        >>> str(EntityId("counter", "clicks"))
        '@counter@clicks'

    Raises:
        ValueError: the name is empty or contains ``@``, the key is empty, either
            contains a NUL byte, or the id is longer than 256 characters.
    """

    name: str
    key: str

    def __post_init__(self) -> None:
        name, key = self.name, self.key
        if not isinstance(name, str) or not name or "@" in name or "\x00" in name:
            raise ValueError(
                f"invalid entity name {name!r}: a non-empty string without '@' or NUL bytes"
            )
        if not isinstance(key, str) or not key or "\x00" in key:
            raise ValueError(f"invalid entity key {key!r}: a non-empty string without NUL bytes")
        if len(name) + len(key) + 2 > _MAX_ID_LENGTH:
            raise ValueError(
                f"entity id @{name}@{key[:20]}... is longer than {_MAX_ID_LENGTH} characters"
            )

    def __str__(self) -> str:
        return f"@{self.name}@{self.key}"

    @classmethod
    def parse(cls, entity_id: str) -> EntityId:
        """The id of a string ``@<name>@<key>``.

        Raises:
            ValueError: ``entity_id`` is not of that form.
        """
        if not entity_id.startswith(ENTITY_ID_PREFIX):
            raise ValueError(f"{entity_id!r} is not an entity id ('@<name>@<key>')")
        name, sep, key = entity_id[1:].partition("@")
        if not sep:
            raise ValueError(f"{entity_id!r} is not an entity id ('@<name>@<key>')")
        return cls(name, key)


@dataclass(frozen=True, slots=True)
class EntityMetadata:
    """An entity as the client sees it (from the compacted topic ``H.entities``).

    Attributes:
        entity_id: the entity.
        state: the state, decoded with the entity's state type when the client's
            app registers the entity, else as plain JSON values.
        serialized_state: the state as the JSON bytes stored.
        last_modified_at_ms: when the state last changed, ms since the epoch.
        locked_by: the orchestration holding the entity's lock, if any.
        queued: operations and lock requests waiting for the lock.
        error_count: operations that raised (and were rolled back).
        last_error: why the latest failed operation failed.
    """

    entity_id: EntityId
    state: Any
    serialized_state: bytes
    last_modified_at_ms: int
    locked_by: str | None = None
    queued: int = 0
    error_count: int = 0
    last_error: FailureDetails | None = None

    @property
    def last_modified_at(self) -> datetime:
        """When the state last changed (UTC)."""
        return datetime.fromtimestamp(self.last_modified_at_ms / 1000, tz=UTC)


# -- one operation's view of the entity ------------------------------------------------------


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


class Entity(Generic[S]):
    """Base class of class-based entities; the generic parameter is the state type.

    Every public method defined on the subclass is an operation, named after the
    method. An operation takes at most one input (typed by its hint) and may
    return a result (encoded with its return hint). The state type may be a
    pydantic model, a dataclass or a primitive; its JSON goes through a pydantic
    ``TypeAdapter``. Instances live for one operation only: keep everything
    durable in :attr:`state`.

    Example:
        >>> @app.entity
        ... class Account(durafka.Entity[int]):
        ...     def deposit(self, amount: int) -> None:
        ...         self.state += amount
        ...     def balance(self) -> int:
        ...         return self.state
    """

    _durafka_scope: _Scope

    @property
    def entity_id(self) -> EntityId:
        """The id of this entity."""
        return self._durafka_scope.entity_id

    @property
    def operation(self) -> str:
        """The name of the running operation."""
        return self._durafka_scope.operation

    @property
    def state(self) -> S:
        """The entity's state (:meth:`initial_state` until it has one)."""
        scope = self._durafka_scope
        if not scope.loaded:
            stored = scope.current_bytes()
            if stored is None:
                scope.value = self.initial_state()
                # Encoded now: an initial state that cannot be stored fails this
                # operation here, and a read-only operation leaves no state behind.
                scope.initial_bytes = scope.encode_state(scope.value)
            else:
                scope.value = decode_payload(
                    stored, scope.state_adapter, what=f"state of entity {scope.entity_id}"
                )
            scope.loaded = True
        return scope.value  # type: ignore[no-any-return]

    @state.setter
    def state(self, value: S) -> None:
        scope = self._durafka_scope
        scope.value = value
        scope.loaded = True
        scope.assigned = True

    def initial_state(self) -> S:
        """The state of a new (or deleted) entity; override it for another default.

        The default is the state type called without arguments (``0`` for
        ``int``, ``[]`` for ``list``, a model's or dataclass's defaults), else
        ``None``.
        """
        return _zero_value(_state_type(type(self)))  # type: ignore[no-any-return]

    def delete(self) -> None:
        """Delete the entity's state when this operation completes successfully."""
        scope = self._durafka_scope
        scope.deleted = True
        scope.loaded = False
        scope.assigned = False
        scope.value = None
        scope.initial_bytes = None

    def signal_entity(self, entity_id: EntityId, operation: str, input: Any = None) -> None:
        """Send a one-way operation to another entity when this operation succeeds."""
        self._durafka_scope.signal(entity_id, operation, input)


class EntityContext:
    """What a function-based entity sees of the operation it runs.

    Example:
        >>> @app.entity(name="counter")
        ... def counter(ctx: durafka.EntityContext) -> int | None:
        ...     value = ctx.get_state(int, 0)
        ...     if ctx.operation == "add":
        ...         ctx.set_state(value + ctx.input(int))
        ...     elif ctx.operation == "get":
        ...         return value
        ...     return None
    """

    __slots__ = ("_scope",)

    def __init__(self, scope: _Scope) -> None:
        self._scope = scope

    @property
    def entity_id(self) -> EntityId:
        """The id of this entity."""
        return self._scope.entity_id

    @property
    def operation(self) -> str:
        """The name of the operation to run."""
        return self._scope.operation

    @property
    def has_state(self) -> bool:
        """Whether the entity has a state (set before, and not deleted)."""
        scope = self._scope
        return scope.loaded or scope.current_bytes() is not None

    def input(self, type: Any = None) -> Any:
        """The operation's input, decoded into ``type`` (default: plain JSON values)."""
        scope = self._scope
        adapter = adapter_for(type) if type is not None else None
        return decode_payload(scope.input, adapter, what=f"input of {scope.operation!r}")

    def get_state(self, type: Any = None, default: Any = None) -> Any:
        """The state decoded into ``type`` (default: plain JSON values), or ``default``."""
        scope = self._scope
        if scope.loaded:
            return scope.value
        stored = scope.current_bytes()
        if stored is None:
            return default
        adapter = adapter_for(type) if type is not None else None
        return decode_payload(stored, adapter, what=f"state of entity {scope.entity_id}")

    def set_state(self, value: Any) -> None:
        """Replace the state (stored when the operation completes successfully)."""
        scope = self._scope
        scope.value = value
        scope.loaded = True
        scope.assigned = True

    def delete_state(self) -> None:
        """Delete the state when the operation completes successfully."""
        scope = self._scope
        scope.deleted = True
        scope.loaded = False
        scope.assigned = False
        scope.value = None

    def signal_entity(self, entity_id: EntityId, operation: str, input: Any = None) -> None:
        """Send a one-way operation to another entity when this operation succeeds."""
        self._scope.signal(entity_id, operation, input)


# -- definitions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperationDef:
    """One operation (method) of a class-based entity.

    Attributes:
        name: the method's name.
        takes_input: whether the method takes an input argument.
        input_adapter: decodes the input (None: plain JSON).
        output_adapter: encodes the result (None: by runtime type).
    """

    name: str
    takes_input: bool
    input_adapter: TypeAdapter[Any] | None
    output_adapter: TypeAdapter[Any] | None


@dataclass(frozen=True, slots=True)
class EntityDefinition:
    """A registered entity.

    Attributes:
        name: the registered name (the ``name`` of its ids).
        target: the :class:`Entity` subclass or the function.
        is_class: whether ``target`` is a class.
        state_adapter: encodes and decodes a class entity's state (None: plain JSON).
        operations: a class entity's operations by name (empty for a function).
        output_adapter: encodes a function entity's results (None: by runtime type).
    """

    name: str
    target: Any
    is_class: bool
    state_adapter: TypeAdapter[Any] | None
    operations: Mapping[str, OperationDef] = field(default_factory=dict)
    output_adapter: TypeAdapter[Any] | None = None

    def operation(self, name: str) -> OperationDef | None:
        """The class entity's operation ``name``, if it has one."""
        return self.operations.get(name)


# Names on Entity itself are not operations, whatever a subclass does with them.
_BASE_NAMES = frozenset(n for n in dir(Entity) if not n.startswith("__"))


def define_entity(target: Any, name: str | None = None) -> EntityDefinition:
    """Validate an entity class or function and describe it.

    Raises:
        ConfigurationError: a class that is not an :class:`Entity`, an ``async``
            operation, an operation with more than one input, a function that
            does not take exactly ``(ctx)``, or a name containing ``@``.
    """
    if inspect.isclass(target):
        definition = _define_class(target, name or target.__name__)
    elif callable(target):
        definition = _define_function(target, name or target.__name__)
    else:
        raise ConfigurationError(f"{target!r} is neither an Entity subclass nor a function")
    if not definition.name or "@" in definition.name or "\x00" in definition.name:
        raise ConfigurationError(
            f"invalid entity name {definition.name!r}: a non-empty name without '@' or NUL"
        )
    return definition


def _define_class(cls: type[Any], name: str) -> EntityDefinition:
    if not issubclass(cls, Entity):
        raise ConfigurationError(
            f"entity class {cls.__qualname__} must derive from durafka.Entity[StateType]"
        )
    tp = _state_type(cls)
    operations: dict[str, OperationDef] = {}
    for klass in reversed(cls.__mro__):
        if klass is Entity or not issubclass(klass, Entity):
            continue
        for attr, fn in vars(klass).items():
            if attr.startswith("_") or attr in _BASE_NAMES or not inspect.isfunction(fn):
                continue
            operations[attr] = _define_operation(cls, attr, fn)
    if not operations:
        raise ConfigurationError(
            f"entity class {cls.__qualname__} has no operations: define public methods"
        )
    return EntityDefinition(name, cls, True, adapter_for(tp) if tp is not Any else None, operations)


def _define_operation(cls: type[Any], attr: str, fn: Callable[..., Any]) -> OperationDef:
    where = f"{cls.__qualname__}.{attr}"
    if inspect.iscoroutinefunction(fn):
        raise ConfigurationError(
            f"entity operation {where} must be a plain 'def': operations run inside the "
            "processor's transaction (do I/O in activities)"
        )
    sig = inspect.signature(fn)
    params = [
        p
        for p in list(sig.parameters.values())[1:]
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required_kw = [
        p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    if len(params) > 1 or required_kw:
        raise ConfigurationError(
            f"entity operation {where} must take (self) or (self, input): durafka passes "
            "at most one input value (use a pydantic model or dataclass for several)"
        )
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to untyped JSON
        hints = {}
    in_type = hints.get(params[0].name) if params else None
    out_type = hints.get("return")
    return OperationDef(
        attr,
        bool(params),
        adapter_for(in_type) if in_type is not None else None,
        adapter_for(out_type) if out_type is not None else None,
    )


def _define_function(fn: Callable[..., Any], name: str) -> EntityDefinition:
    if inspect.iscoroutinefunction(fn):
        raise ConfigurationError(
            f"entity function {fn.__qualname__} must be a plain 'def': operations run inside "
            "the processor's transaction (do I/O in activities)"
        )
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) != 1:
        raise ConfigurationError(
            f"entity function {fn.__qualname__} must take exactly (ctx: durafka.EntityContext)"
        )
    try:
        out_type = get_type_hints(fn).get("return")
    except Exception:
        out_type = None
    return EntityDefinition(
        name,
        fn,
        False,
        None,
        output_adapter=adapter_for(out_type) if out_type is not None else None,
    )


def _state_type(cls: type[Any]) -> Any:
    """The ``S`` of the ``Entity[S]`` a class derives from (``Any`` if not given)."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Entity):
                args = get_args(base)
                if args and not isinstance(args[0], TypeVar):
                    return args[0]
    return Any


def _zero_value(tp: Any) -> Any:
    """``tp()`` (``0``, ``""``, ``[]``, a model with its defaults), or None if that fails."""
    if tp is Any or tp is None:
        return None
    factory = get_origin(tp) or tp
    try:
        return factory()
    except Exception:  # e.g. a union, or a model with required fields
        return None


# -- running one operation -------------------------------------------------------------------


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
    entity = definition.target.__new__(definition.target)
    entity._durafka_scope = scope
    entity.__init__()
    method = getattr(entity, op.name)
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
