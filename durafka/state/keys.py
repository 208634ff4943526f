"""Store keys: the one place that builds and parses them (layout: :mod:`durafka.state.base`).

Instance ids may contain ``/``, so the id is always closed by a NUL byte. The id
rules (:mod:`durafka.ids`) forbid NUL inside ids, and the key functions refuse
one too, so even an id that got past the checks cannot make one id's keys a
prefix of another's (``h/<V>\\0<x>`` would otherwise be read as history of ``V``).
The layout of valid ids is unchanged: existing changelogs stay readable.
"""

from __future__ import annotations

from durafka.errors import InvalidInstanceIdError, MalformedKeyError

TIMER_PREFIX = b"t/"
#: ``o/``: the input offset the last transaction that wrote this store committed. It
#: travels with that transaction's changelog records, so a restore that reached it
#: has every record of the transaction that committed that offset.
INPUT_OFFSET_KEY = b"o/"
#: The first key after every timer key (``"0"`` follows ``"/"``).
TIMER_END = b"t0"
_DUE_DIGITS = 15


def _id_bytes(instance_id: str) -> bytes:
    encoded = instance_id.encode()
    if b"\x00" in encoded:
        raise InvalidInstanceIdError(
            f"instance id {instance_id!r} contains a NUL character, which closes ids in the "
            "store's keys; it cannot have store keys"
        )
    return encoded


def instance_key(instance_id: str) -> bytes:
    """``i/<id>``: the instance header."""
    return b"i/" + _id_bytes(instance_id) + b"\x00"


def history_prefix(instance_id: str) -> bytes:
    """The prefix of every history chunk of an instance."""
    return b"h/" + _id_bytes(instance_id) + b"\x00"


def history_key(instance_id: str, chunk: int) -> bytes:
    """``h/<id>\\0<chunk>``: one history chunk (zero-padded so keys sort by chunk)."""
    return b"h/" + _id_bytes(instance_id) + b"\x00%08d" % chunk


def entity_key(entity_id: str) -> bytes:
    """``e/<entity id>``: an entity's state, lock and queue."""
    return b"e/" + _id_bytes(entity_id) + b"\x00"


def timer_key(due_ms: int, instance_id: str, seq: int) -> bytes:
    """``t/<due>/<id>\\0<seq>``: a durable timer, sorted by due time."""
    return b"t/%015d/" % due_ms + _id_bytes(instance_id) + b"\x00%d" % seq


def timer_upper_bound(now_ms: int) -> bytes:
    """The first timer key that is not due at ``now_ms``."""
    return b"t/%015d/" % (now_ms + 1)


def encode_input_offset(offset: int) -> bytes:
    """The value of :data:`INPUT_OFFSET_KEY` for ``offset``."""
    return b"%d" % offset


def decode_input_offset(value: bytes | None) -> int | None:
    """The offset in a value of :data:`INPUT_OFFSET_KEY` (None: absent, an older store)."""
    return None if value is None else int(value)


def parse_timer_key(key: bytes) -> tuple[int, str, int]:
    """``(due_ms, instance_id, seq)`` of a timer key.

    Raises:
        MalformedKeyError: ``key`` is not ``t/<15-digit due ms>/<id>\\0<seq>`` with a
            UTF-8 id, which only a bug or another program writing into the
            changelog produces.
    """
    due = key[2:17]
    iid, nul, seq = key[18:].rpartition(b"\x00")
    digits = seq[1:] if seq.startswith(b"-") else seq
    if not (
        key.startswith(TIMER_PREFIX)
        and key[17:18] == b"/"
        and len(due) == _DUE_DIGITS
        and due.isdigit()
        and nul
        and iid
        and digits.isdigit()
    ):
        raise MalformedKeyError(
            f"malformed timer key {key!r}: not t/<15-digit due ms>/<instance id>\\0<sequence id>"
        )
    try:
        return int(due), iid.decode(), int(seq)
    except UnicodeDecodeError:
        raise MalformedKeyError(
            f"malformed timer key {key!r}: the instance id is not UTF-8"
        ) from None


def check_store_key(key: bytes) -> str | None:
    """Why ``key`` cannot be a store key, or None when it can.

    Only keys the processor parses are checked (timer keys); other keys are only
    ever read by exact key or prefix, and a newer version may add kinds of keys.
    """
    if key.startswith(TIMER_PREFIX):
        try:
            parse_timer_key(key)
        except MalformedKeyError as exc:
            return str(exc)
    return None


def store_key_owner(key: bytes) -> str | None:
    """The instance or entity id a store key belongs to, or None when it names none.

    ``i/<id>\\0``, ``h/<id>\\0<chunk>``, ``e/<id>\\0`` and ``t/<due>/<id>\\0<seq>``.
    """
    if key.startswith(TIMER_PREFIX):
        try:
            return parse_timer_key(key)[1]
        except MalformedKeyError:
            return None
    if key[:2] not in (b"i/", b"h/", b"e/"):
        return None
    iid, nul, _ = key[2:].partition(b"\x00")
    if not nul or not iid:
        return None
    try:
        return iid.decode()
    except UnicodeDecodeError:
        return None
