"""The rules every instance id and entity id obeys, checked on every way in.

An id is the record key on ``H.orchestrations`` and part of the processor's store
keys (``i/<id>\\0``, ``h/<id>\\0<chunk>``, ...), where a NUL byte closes it so that
no id's keys are a prefix of another's. The rules:

* a ``str`` of 1 to :data:`MAX_ID_LENGTH` (256) characters;
* no control characters (Unicode category ``Cc``: U+0000 to U+001F, U+007F to
  U+009F): NUL would let one id's store keys run into another's, the others
  break logs and command lines; no lone surrogates (the id must be UTF-8);
* an orchestration id does not start with ``@``, which marks entity ids;
* an entity id is ``@<name>@<key>``: a non-empty name without ``@`` and a
  non-empty key (which may contain ``@``).

The clients and the CLI raise :class:`~durafka.errors.InvalidInstanceIdError`
before writing anything; an orchestration that passes an invalid id to
``ctx.call_sub_orchestrator`` or ``ctx.send_event`` gets the same error; the
processor and the worker dead-letter records of other services that carry one.

New ids (instances started without one, every execution) come from :func:`new_id`.
"""

from __future__ import annotations

import os
import random
import re
from typing import Final

from durafka.errors import InvalidInstanceIdError

__all__ = [
    "ENTITY_ID_PREFIX",
    "MAX_ID_LENGTH",
    "check_entity_parts",
    "check_instance_id",
    "check_orchestration_id",
    "new_id",
    "split_entity_id",
]

#: The longest id, in characters (entity ids included).
MAX_ID_LENGTH: Final = 256
#: Entity ids share the instance id space of ``H.orchestrations``; this prefix marks them.
ENTITY_ID_PREFIX: Final = "@"

# Control characters (Cc) and lone surrogates, which cannot be encoded as UTF-8.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


# A generator of our own, seeded from the OS: user code that seeds the global
# ``random`` (tests, simulations) must not make ids repeat across processes or
# restarts (a repeated execution id would let an old execution's results in).
_ID_SOURCE = random.Random()
if hasattr(os, "register_at_fork"):
    # A forked child would otherwise draw the parent's ids.
    os.register_at_fork(after_in_child=_ID_SOURCE.seed)


def new_id() -> str:
    """A fresh random 128-bit id as 32 lowercase hex digits (the shape of ``uuid4().hex``).

    Not from ``os.urandom`` on every call: that system call releases the GIL, and
    in a busy process (a client beside a processor, ``memory://``) taking it back
    cost up to the interpreter's switch interval, per id. The generator is
    seeded from the OS once per process (and again in a forked child); ids need
    to be unique, not secret.

    Example:
        >>> len(new_id())
        32
    """
    return f"{_ID_SOURCE.getrandbits(128):032x}"


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidInstanceIdError(f"{what} must be a str, got {type(text).__name__}")
    if not text:
        raise InvalidInstanceIdError(f"{what} is empty")
    if len(text) > MAX_ID_LENGTH:
        raise InvalidInstanceIdError(
            f"{what} {text[:40]!r}... is longer than {MAX_ID_LENGTH} characters ({len(text)})"
        )
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        char = bad.group()
        if char == "\x00":
            raise InvalidInstanceIdError(
                f"{what} {text!r} contains a NUL character, which closes ids in the store's keys"
            )
        kind = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
        raise InvalidInstanceIdError(f"{what} {text!r} contains {kind} ({char!r})")
    return text


def check_orchestration_id(instance_id: str) -> str:
    """Return ``instance_id`` if it is a valid orchestration id.

    Raises:
        InvalidInstanceIdError: it breaks a rule (see the module docstring), e.g. it
            starts with ``@``.
    """
    _check_text(instance_id, "instance id")
    if instance_id.startswith(ENTITY_ID_PREFIX):
        raise InvalidInstanceIdError(
            f"instance id {instance_id!r} starts with '@', which marks entity ids "
            "('@<name>@<key>'); use an EntityId with the entity calls instead"
        )
    return instance_id


def check_entity_parts(name: str, key: str) -> None:
    """Check the name and key of an entity id ``@<name>@<key>``.

    Raises:
        InvalidInstanceIdError: the name is empty or contains ``@``, the key is
            empty, either contains a control character, or the id is too long.
    """
    if not isinstance(name, str) or not name or "@" in name:
        raise InvalidInstanceIdError(
            f"invalid entity name {name!r}: a non-empty string without '@'"
        )
    if not isinstance(key, str) or not key:
        raise InvalidInstanceIdError(f"invalid entity key {key!r}: a non-empty string")
    _check_text(f"{ENTITY_ID_PREFIX}{name}@{key}", "entity id")


def split_entity_id(entity_id: str) -> tuple[str, str]:
    """``(name, key)`` of a valid entity id ``@<name>@<key>``.

    Raises:
        InvalidInstanceIdError: ``entity_id`` is not of that form or breaks a rule.
    """
    if not isinstance(entity_id, str) or not entity_id.startswith(ENTITY_ID_PREFIX):
        raise InvalidInstanceIdError(f"{entity_id!r} is not an entity id ('@<name>@<key>')")
    name, sep, key = entity_id[1:].partition("@")
    if not sep:
        raise InvalidInstanceIdError(f"{entity_id!r} is not an entity id ('@<name>@<key>')")
    check_entity_parts(name, key)
    return name, key


def check_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if it can be a key on ``H.orchestrations``.

    That is an orchestration id, or an entity id when it starts with ``@``.

    Raises:
        InvalidInstanceIdError: it breaks a rule (see the module docstring).
    """
    if isinstance(instance_id, str) and instance_id.startswith(ENTITY_ID_PREFIX):
        split_entity_id(instance_id)
        return instance_id
    return check_orchestration_id(instance_id)
