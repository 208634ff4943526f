"""Store keys: the one place that builds and parses them (layout: :mod:`durafka.state.base`).

Instance ids may contain ``/``, so the id is always closed by a NUL byte,
which :func:`validate_instance_id` forbids inside ids: no id's keys can be a
prefix of another id's keys.
"""

from __future__ import annotations

from durafka.errors import ConfigurationError

MAX_INSTANCE_ID_LENGTH = 256
TIMER_PREFIX = b"t/"
#: The first key after every timer key (``"0"`` follows ``"/"``).
TIMER_END = b"t0"


def validate_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if it is usable, else raise ``ConfigurationError``."""
    if not instance_id or len(instance_id) > MAX_INSTANCE_ID_LENGTH or "\x00" in instance_id:
        raise ConfigurationError(
            f"invalid instance id {instance_id!r}: it must be 1 to {MAX_INSTANCE_ID_LENGTH} "
            "characters without NUL bytes"
        )
    return instance_id


def instance_key(instance_id: str) -> bytes:
    """``i/<id>``: the instance header."""
    return b"i/" + instance_id.encode() + b"\x00"


def history_prefix(instance_id: str) -> bytes:
    """The prefix of every history chunk of an instance."""
    return b"h/" + instance_id.encode() + b"\x00"


def history_key(instance_id: str, chunk: int) -> bytes:
    """``h/<id>\\0<chunk>``: one history chunk (zero-padded so keys sort by chunk)."""
    return b"h/" + instance_id.encode() + b"\x00%08d" % chunk


def entity_key(entity_id: str) -> bytes:
    """``e/<entity id>``: an entity's state, lock and queue."""
    return b"e/" + entity_id.encode() + b"\x00"


def timer_key(due_ms: int, instance_id: str, seq: int) -> bytes:
    """``t/<due>/<id>\\0<seq>``: a durable timer, sorted by due time."""
    return b"t/%015d/" % due_ms + instance_id.encode() + b"\x00%d" % seq


def timer_upper_bound(now_ms: int) -> bytes:
    """The first timer key that is not due at ``now_ms``."""
    return b"t/%015d/" % (now_ms + 1)


def parse_timer_key(key: bytes) -> tuple[int, str, int]:
    """``(due_ms, instance_id, seq)`` of a timer key."""
    due = int(key[2:17])
    rest = key[18:]
    iid, seq = rest.rsplit(b"\x00", 1)
    return due, iid.decode(), int(seq)
