"""Registration of orchestrations, activities and entities, validated at decoration time.

Each registered function or entity is described once, here: its name, and the
pydantic adapters of its input, output (and an entity's state), taken from its
signature and type hints.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pydantic import TypeAdapter

from durafka.activities.context import ActivityContext
from durafka.codec.payload import adapter_for
from durafka.entities import Entity, state_type_of
from durafka.errors import ConfigurationError, UnknownFunctionError

__all__ = [
    "EntityDefinition",
    "FunctionDef",
    "OperationDef",
    "Registry",
    "define_entity",
]


@dataclass(frozen=True, slots=True)
class FunctionDef:
    """A registered function: its name, callable and payload adapters.

    Attributes:
        name: the registered name (defaults to the function's ``__name__``).
        fn: the user's function.
        is_async: whether ``fn`` is a coroutine function.
        takes_input: whether ``fn`` accepts an input argument.
        input_adapter: decodes the input (``None``: untyped JSON).
        output_adapter: encodes/decodes the result.
        version: an orchestration's code version (``@app.orchestration(version="2")``),
            None when unversioned.
        takes_context: an activity whose first parameter is an
            :class:`~durafka.activities.context.ActivityContext` (passed before the input).
    """

    name: str
    fn: Callable[..., Any]
    is_async: bool
    takes_input: bool
    input_adapter: TypeAdapter[Any] | None
    output_adapter: TypeAdapter[Any] | None
    version: str | None = None
    takes_context: bool = False


def _adapters(
    fn: Callable[..., Any], skip: int, *, what: str | None = None, shapes: str | None = None
) -> tuple[bool, TypeAdapter[Any] | None, TypeAdapter[Any] | None]:
    """Whether ``fn`` takes an input after ``skip`` leading parameters, and its adapters.

    Args:
        fn: the function (or method: ``self`` is one of the ``skip``).
        skip: parameters before the input (``ctx``, ``self``).
        what: names ``fn`` in errors (default: its qualified name).
        shapes: the accepted signatures, for errors.

    Raises:
        ConfigurationError: more than one input, or a required keyword-only parameter.
    """
    what = what or fn.__qualname__
    shapes = shapes or ("(ctx, input) or (ctx)" if skip else "(input) or ()")
    sig = inspect.signature(fn)
    params = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) < skip or len(params) > skip + 1:
        raise ConfigurationError(
            f"{what} must take {shapes}: durafka passes at most one input value "
            "(use a pydantic model or dataclass for several)"
        )
    # durafka never passes keywords, so a required one would fail at every call.
    required_kw = [
        p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    if required_kw:
        raise ConfigurationError(
            f"{what} has required keyword-only parameters {required_kw}: durafka passes "
            "exactly one positional input; give them defaults or fold them into the input"
        )
    hints = _hints(fn)
    takes_input = len(params) == skip + 1
    in_type = hints.get(params[skip].name) if takes_input else None
    out_type = hints.get("return")
    return (
        takes_input,
        adapter_for(in_type) if in_type is not None else None,
        adapter_for(out_type) if out_type is not None else None,
    )


def _takes_activity_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s first positional parameter is annotated ``ActivityContext``."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params:
        return False
    first = params[0]
    hint = _hints(fn).get(first.name, first.annotation)
    if isinstance(hint, str):  # an annotation that did not resolve: go by its name
        return hint.rsplit(".", 1)[-1] == "ActivityContext"
    return isinstance(hint, type) and issubclass(hint, ActivityContext)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to untyped JSON
        return {}


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
    tp = state_type_of(cls)
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
    where = f"entity operation {cls.__qualname__}.{attr}"
    if inspect.iscoroutinefunction(fn):
        raise ConfigurationError(
            f"{where} must be a plain 'def': operations run inside the "
            "processor's transaction (do I/O in activities)"
        )
    takes_input, in_ad, out_ad = _adapters(fn, skip=1, what=where, shapes="(self, input) or (self)")
    return OperationDef(attr, takes_input, in_ad, out_ad)


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
    out_type = _hints(fn).get("return")
    return EntityDefinition(
        name,
        fn,
        False,
        None,
        output_adapter=adapter_for(out_type) if out_type is not None else None,
    )


class Registry:
    """Orchestrations, activities and entities known to an app, by name."""

    def __init__(self) -> None:
        #: The latest version of each orchestration (what new executions run).
        self.orchestrations: dict[str, FunctionDef] = {}
        #: Every registered version of each orchestration (None: unversioned).
        self.orchestration_versions: dict[str, dict[str | None, FunctionDef]] = {}
        self.activities: dict[str, FunctionDef] = {}
        self.entities: dict[str, EntityDefinition] = {}

    def add_orchestration(
        self, fn: Callable[..., Any], name: str | None = None, version: str | None = None
    ) -> FunctionDef:
        """Register an ``async def orchestrator(ctx[, input])``, optionally as a version.

        Several versions of one name may be registered (``version="1"``, ``"2"``, or
        dotted numbers ``"2.1"``): new executions run the latest, running ones keep
        the version they started with (it is recorded in their history), so the old
        versions' code must stay registered while instances of them run.
        """
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"orchestration {fn.__qualname__} must be an 'async def' function "
                "(it is driven by durafka's replay engine, not by asyncio)"
            )
        if version is not None:
            _version_key(version)  # refuse what cannot be ordered
        takes_input, in_ad, out_ad = _adapters(fn, skip=1)
        d = FunctionDef(name or fn.__name__, fn, True, takes_input, in_ad, out_ad, version)
        versions = self.orchestration_versions.setdefault(d.name, {})
        existing = versions.get(version)
        if existing is not None and existing.fn is not fn:
            which = f"version {version!r} of " if version is not None else ""
            raise ConfigurationError(
                f"{which}orchestration name {d.name!r} is already registered for "
                f"{existing.fn.__qualname__}; pass name=... or another version=... to register "
                f"{fn.__qualname__}"
            )
        versions[version] = d
        self.orchestrations[d.name] = versions[max(versions, key=_version_key)]
        return d

    def orchestration_version(self, name: str, version: str | None) -> FunctionDef:
        """The code an execution of ``name`` that recorded ``version`` runs.

        ``version`` None (histories recorded before versions were used): the
        unversioned registration, else the lowest version.

        Raises:
            UnknownFunctionError: no such orchestration, or that version is not registered
                (its instances need its code: keep it registered until they finished).
        """
        versions = self.orchestration_versions.get(name)
        if not versions:
            self.orchestration(name)  # raises the usual error
            raise AssertionError("unreachable")
        if version is None:
            return versions[min(versions, key=_version_key)]
        found = versions.get(version)
        if found is None:
            known = sorted((v for v in versions if v is not None), key=_version_key)
            raise UnknownFunctionError(
                f"version {version!r} of orchestration {name!r} is not registered (registered: "
                f"{known or 'none'}); its running instances need that code: keep it registered "
                "(@app.orchestration(version=...)) until they have finished"
            )
        return found

    def add_activity(self, fn: Callable[..., Any], name: str | None = None) -> FunctionDef:
        """Register an activity: ``def`` or ``async def`` taking at most one input.

        A first parameter annotated ``ActivityContext`` gets the activity's
        context (``(ctx, input)`` or ``(ctx)``).
        """
        takes_context = _takes_activity_context(fn)
        shapes = "(ctx, input) or (ctx)" if takes_context else "(input) or ()"
        takes_input, in_ad, out_ad = _adapters(fn, skip=int(takes_context), shapes=shapes)
        d = FunctionDef(
            name or fn.__name__,
            fn,
            inspect.iscoroutinefunction(fn),
            takes_input,
            in_ad,
            out_ad,
            takes_context=takes_context,
        )
        self._put(self.activities, "activity", d)
        return d

    def add_entity(self, target: Any, name: str | None = None) -> EntityDefinition:
        """Register an entity: an ``Entity[State]`` subclass or a ``def entity(ctx)``."""
        d = define_entity(target, name)
        existing = self.entities.get(d.name)
        if existing is not None and existing.target is not d.target:
            raise ConfigurationError(
                f"entity name {d.name!r} is already registered for "
                f"{existing.target.__qualname__}; pass name=... to register "
                f"{d.target.__qualname__} under another name"
            )
        self.entities[d.name] = d
        return d

    @staticmethod
    def _put(table: dict[str, FunctionDef], kind: str, d: FunctionDef) -> None:
        existing = table.get(d.name)
        if existing is not None and existing.fn is not d.fn:
            raise ConfigurationError(
                f"{kind} name {d.name!r} is already registered for {existing.fn.__qualname__}; "
                f"pass name=... to register {d.fn.__qualname__} under another name"
            )
        table[d.name] = d

    def orchestration(self, name: str) -> FunctionDef:
        """The orchestration registered as ``name``; ``UnknownFunctionError`` if none."""
        try:
            return self.orchestrations[name]
        except KeyError:
            raise UnknownFunctionError(
                f"no orchestration named {name!r} is registered "
                f"(known: {sorted(self.orchestrations) or 'none'})"
            ) from None

    def activity(self, name: str) -> FunctionDef:
        """The activity registered as ``name``; ``UnknownFunctionError`` if none."""
        try:
            return self.activities[name]
        except KeyError:
            raise UnknownFunctionError(
                f"no activity named {name!r} is registered "
                f"(known: {sorted(self.activities) or 'none'})"
            ) from None

    def entity(self, name: str) -> EntityDefinition:
        """The entity registered as ``name``; ``UnknownFunctionError`` if none."""
        try:
            return self.entities[name]
        except KeyError:
            raise UnknownFunctionError(
                f"no entity named {name!r} is registered (known: {sorted(self.entities) or 'none'})"
            ) from None

    def name_of(self, fn_or_name: Callable[..., Any] | str, table: dict[str, FunctionDef]) -> str:
        """The registered name of a function (or the name itself)."""
        if isinstance(fn_or_name, str):
            return fn_or_name
        for d in table.values():
            if d.fn is fn_or_name:
                return d.name
        return getattr(fn_or_name, "__durafka_name__", None) or fn_or_name.__name__


def _version_key(version: str | None) -> tuple[int, ...]:
    """Orders versions: unversioned first, then dotted numbers numerically (2 < 10)."""
    if version is None:
        return (-1,)
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        raise ConfigurationError(
            f"orchestration version {version!r} is not a number or dotted numbers "
            "(e.g. '2' or '2.1'): durafka orders versions to start new executions on the latest"
        ) from None
    if any(p < 0 for p in parts):
        raise ConfigurationError(f"orchestration version {version!r} has a negative part")
    return parts
