"""Registration of orchestrations, activities and entities, validated at decoration time."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import TypeAdapter

from durafka.codec.payload import adapter_for
from durafka.entities import EntityDefinition, define_entity
from durafka.errors import ConfigurationError, UnknownFunctionError


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
    """

    name: str
    fn: Callable[..., Any]
    is_async: bool
    takes_input: bool
    input_adapter: TypeAdapter[Any] | None
    output_adapter: TypeAdapter[Any] | None


def _adapters(
    fn: Callable[..., Any], skip: int
) -> tuple[bool, TypeAdapter[Any] | None, TypeAdapter[Any] | None]:
    sig = inspect.signature(fn)
    params = [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) < skip or len(params) > skip + 1:
        shapes = "(ctx, input) or (ctx)" if skip else "(input) or ()"
        raise ConfigurationError(
            f"{fn.__qualname__} must take {shapes}: durafka passes exactly one input value "
            "(use a pydantic model or dataclass for several)"
        )
    # durafka never passes keywords, so a required one would fail at every call.
    required_kw = [
        p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    if required_kw:
        raise ConfigurationError(
            f"{fn.__qualname__} has required keyword-only parameters {required_kw}: durafka passes "
            "exactly one positional input; give them defaults or fold them into the input"
        )
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to untyped JSON
        hints = {}
    takes_input = len(params) == skip + 1
    in_type = hints.get(params[skip].name) if takes_input else None
    out_type = hints.get("return")
    return (
        takes_input,
        adapter_for(in_type) if in_type is not None else None,
        adapter_for(out_type) if out_type is not None else None,
    )


class Registry:
    """Orchestrations, activities and entities known to an app, by name."""

    def __init__(self) -> None:
        self.orchestrations: dict[str, FunctionDef] = {}
        self.activities: dict[str, FunctionDef] = {}
        self.entities: dict[str, EntityDefinition] = {}

    def add_orchestration(self, fn: Callable[..., Any], name: str | None = None) -> FunctionDef:
        """Register an ``async def orchestrator(ctx[, input])``."""
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(
                f"orchestration {fn.__qualname__} must be an 'async def' function "
                "(it is driven by durafka's replay engine, not by asyncio)"
            )
        takes_input, in_ad, out_ad = _adapters(fn, skip=1)
        d = FunctionDef(name or fn.__name__, fn, True, takes_input, in_ad, out_ad)
        self._put(self.orchestrations, "orchestration", d)
        return d

    def add_activity(self, fn: Callable[..., Any], name: str | None = None) -> FunctionDef:
        """Register an activity: ``def`` or ``async def`` taking at most one input."""
        takes_input, in_ad, out_ad = _adapters(fn, skip=0)
        d = FunctionDef(
            name or fn.__name__, fn, inspect.iscoroutinefunction(fn), takes_input, in_ad, out_ad
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
