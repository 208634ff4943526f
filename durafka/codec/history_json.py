"""Histories as JSON: what ``durafka history ID --json`` writes and replay tests load.

One object per event with the fields of :class:`~durafka.runtime.history.HistoryEvent`
that are set; payloads (JSON bytes) are embedded as their JSON text, so a file
stays readable and diffable, and loads back byte for byte.

Example:
    >>> text = dumps_history(client.get_history("order-42"))
    >>> events = loads_history(text)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from durafka.errors import DecodeError, FailureDetails
from durafka.runtime.history import EventKind, HistoryEvent, IdReusePolicy

__all__ = ["dumps_history", "history_from_json", "history_to_json", "loads_history"]

_DEFAULTS = HistoryEvent(EventKind.ORCHESTRATOR_STARTED, 0)


def history_to_json(events: Iterable[HistoryEvent]) -> list[dict[str, Any]]:
    """JSON-ready dicts of ``events`` (fields left at their defaults are omitted)."""
    out: list[dict[str, Any]] = []
    for e in events:
        d: dict[str, Any] = {"kind": e.kind.value, "timestamp": e.timestamp}
        if e.seq != _DEFAULTS.seq:
            d["seq"] = e.seq
        for name in ("name", "instance_id", "fire_at", "execution_id", "parent_execution_id"):
            value = getattr(e, name)
            if value is not None:
                d[name] = value
        if e.version is not None:
            d["version"] = e.version
        if e.payload is not None:
            d["payload"] = e.payload.decode()
        if e.failure is not None:
            d["failure"] = {
                "error_type": e.failure.error_type,
                "message": e.failure.message,
                "stack_trace": e.failure.stack_trace,
            }
        if e.attempt:
            d["attempt"] = e.attempt
        if e.id_reuse_policy is not _DEFAULTS.id_reuse_policy:
            d["id_reuse_policy"] = e.id_reuse_policy.value
        out.append(d)
    return out


def history_from_json(items: Iterable[dict[str, Any]]) -> list[HistoryEvent]:
    """The events of :func:`history_to_json` dicts.

    Raises:
        DecodeError: an item is not an event (names the item's index and what is wrong).
    """
    events: list[HistoryEvent] = []
    for index, d in enumerate(items):
        try:
            failure = d.get("failure")
            payload = d.get("payload")
            events.append(
                HistoryEvent(
                    EventKind(d["kind"]),
                    int(d["timestamp"]),
                    seq=int(d.get("seq", -1)),
                    name=d.get("name"),
                    payload=None if payload is None else str(payload).encode(),
                    failure=None
                    if failure is None
                    else FailureDetails(
                        failure["error_type"], failure["message"], failure.get("stack_trace")
                    ),
                    instance_id=d.get("instance_id"),
                    fire_at=d.get("fire_at"),
                    attempt=int(d.get("attempt", 0)),
                    execution_id=d.get("execution_id"),
                    parent_execution_id=d.get("parent_execution_id"),
                    id_reuse_policy=IdReusePolicy(
                        d.get("id_reuse_policy", IdReusePolicy.REJECT_DUPLICATE.value)
                    ),
                    version=d.get("version"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"history item {index} is not a history event: {exc!r}") from exc
    return events


def dumps_history(events: Iterable[HistoryEvent]) -> str:
    """``events`` as a JSON document (indented, one event per object)."""
    return json.dumps(history_to_json(events), indent=1)


def loads_history(text: str) -> list[HistoryEvent]:
    """The events of a JSON document written by :func:`dumps_history`."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not a JSON history: {exc}") from exc
    if not isinstance(items, list):
        raise DecodeError("a JSON history is a list of events")
    return history_from_json(items)
