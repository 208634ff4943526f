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

This module is the programming model (ids, base class, context);
:mod:`durafka.registry` validates and describes entity definitions,
:mod:`durafka.runtime.entity_executor` runs one operation, and
:mod:`durafka.processor.entities` is what the processor does with them
(store, queue, locks, responses).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar, get_args, get_origin

from pydantic import TypeAdapter

from durafka.codec.payload import adapter_for, decode_payload
from durafka.errors import FailureDetails
from durafka.ids import ENTITY_ID_PREFIX, check_entity_parts, split_entity_id

__all__ = [
    "DELETE_OPERATION",
    "Entity",
    "EntityContext",
    "EntityId",
    "EntityMetadata",
    "OperationScope",
    "is_entity_id",
    "new_entity",
    "state_type_of",
]

S = TypeVar("S")

#: The built-in operation that deletes an entity's state (``client.delete_entity``).
#: ``$`` cannot start a method name, so no user operation can shadow it.
DELETE_OPERATION = "$delete"


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
        InvalidInstanceIdError: (a ``ValueError``) the name is empty or contains ``@``,
            the key is empty, either contains a control character, or the id is
            longer than 256 characters (the rules of :mod:`durafka.ids`).
    """

    name: str
    key: str

    def __post_init__(self) -> None:
        check_entity_parts(self.name, self.key)

    def __str__(self) -> str:
        return f"@{self.name}@{self.key}"

    @classmethod
    def parse(cls, entity_id: str) -> EntityId:
        """The id of a string ``@<name>@<key>``.

        Raises:
            InvalidInstanceIdError: (a ``ValueError``) ``entity_id`` is not of that form
                or breaks a rule of :mod:`durafka.ids`.
        """
        return cls(*split_entity_id(entity_id))


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


# -- what an operation sees ------------------------------------------------------------------


class OperationScope(Protocol):
    """The state, input and outgoing signals of one running operation.

    What :class:`Entity` and :class:`EntityContext` work on; the entity executor
    (:mod:`durafka.runtime.entity_executor`) makes one per operation.

    Attributes:
        entity_id: the entity.
        operation: the operation's name.
        input: its input as JSON bytes.
        state_adapter: encodes and decodes a class entity's state (None: plain JSON).
        loaded: whether ``value`` holds the state (read or assigned).
        value: the state, once loaded.
        assigned: whether the operation assigned the state.
        deleted: whether the operation deleted the state.
        initial_bytes: the encoded initial state, when the operation read it.
    """

    entity_id: EntityId
    operation: str
    input: bytes | None
    state_adapter: TypeAdapter[Any] | None
    loaded: bool
    value: Any
    assigned: bool
    deleted: bool
    initial_bytes: bytes | None

    def current_bytes(self) -> bytes | None:
        """The state as stored before this operation, unless the operation deleted it."""
        ...

    def encode_state(self, value: Any) -> bytes:
        """``value`` as the entity's stored state (size-checked)."""
        ...

    def signal(self, entity_id: EntityId, operation: str, input: Any) -> None:
        """Queue a signal to send if the operation succeeds."""
        ...


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

    _durafka_scope: OperationScope

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
        return _zero_value(state_type_of(type(self)))  # type: ignore[no-any-return]

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

    def __init__(self, scope: OperationScope) -> None:
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


def new_entity(cls: type[Entity[Any]], scope: OperationScope) -> Entity[Any]:
    """An instance of the entity class ``cls`` bound to ``scope``, for one operation.

    The scope is bound before ``__init__`` runs, so a constructor may read the state.
    """
    entity = cls.__new__(cls)
    entity._durafka_scope = scope  # noqa: SLF001 - Entity's own module binds its scope
    entity.__init__()  # type: ignore[misc]
    return entity


def state_type_of(cls: type[Any]) -> Any:
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
