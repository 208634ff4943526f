"""User payloads (inputs, outputs, event data, entity state) as JSON bytes.

Payloads are typed by the registered functions' hints and (de)serialised with
pydantic ``TypeAdapter``s, so models, dataclasses and primitives round-trip.
The size limit is checked where a payload enters the system, before anything
is written.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from durafka.errors import PayloadTooLargeError, SerializationError

#: Default maximum payload size (Kafka's default max message size is 1 MiB).
DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024
#: The largest custom status (``ctx.set_custom_status``), as JSON bytes. It travels in
#: every status record and instance header next to input and output, so it is kept
#: small: progress, not data (Durable Functions allows 16 KB).
MAX_CUSTOM_STATUS_BYTES = 64 * 1024


@lru_cache(maxsize=1024)
def adapter_for(tp: Any) -> TypeAdapter[Any]:
    """A cached ``TypeAdapter`` for the type ``tp`` (building one is costly)."""
    return TypeAdapter(tp)


def encode_payload(
    value: Any,
    adapter: TypeAdapter[Any] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    what: str = "payload",
    warnings: bool = True,
) -> bytes:
    """Encode ``value`` to JSON bytes, checking the size limit.

    Args:
        value: the Python value.
        adapter: the adapter of its declared type; None encodes by runtime type.
        max_bytes: the limit; a larger payload raises ``PayloadTooLargeError``.
        what: names the payload in error messages, e.g. ``"input of 'hello_world'"``.
        warnings: let pydantic warn about a value that is not of the adapter's type.
    """
    try:
        data = (
            adapter.dump_json(value, warnings=warnings)
            if adapter is not None
            else pydantic_core.to_json(value)
        )
    except (pydantic_core.PydanticSerializationError, ValidationError, TypeError) as exc:
        raise SerializationError(f"cannot encode the {what} as JSON: {exc}") from exc
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"the {what} is {len(data)} bytes, over the limit of {max_bytes} bytes "
            "(max_payload_bytes); pass a reference (e.g. a blob URL) instead of the data"
        )
    return data


def encode_checked(
    value: Any,
    adapter: TypeAdapter[Any] | None,
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    what: str = "payload",
) -> bytes:
    """Encode ``value`` like :func:`encode_payload`, then check that the receiver can decode it.

    The receiver (the processor, for a start) decodes the JSON with ``adapter``; a
    value of another shape (a dict missing a field, a string for a model, a
    dataclass holding a wrong type) would fail there, after it was written. Here
    it fails before: the JSON is validated with ``adapter`` as the receiver will.

    Raises:
        PayloadTooLargeError: the JSON is over ``max_bytes``.
        SerializationError: the value cannot be encoded, or its JSON does not
            validate against ``adapter``'s type.
    """
    # Serializer warnings are moot: whatever the value's type, the JSON is checked below.
    data = encode_payload(value, adapter, max_bytes=max_bytes, what=what, warnings=False)
    if adapter is not None:
        try:
            adapter.validate_json(data)
        except ValidationError as exc:
            raise SerializationError(
                f"the {what} does not match its declared type; nothing was written: {exc}"
            ) from None
    return data


def decode_payload(
    data: bytes | None, adapter: TypeAdapter[Any] | None = None, *, what: str = "payload"
) -> Any:
    """Decode JSON bytes into the adapter's type (or plain JSON values without one)."""
    if data is None:
        return None
    try:
        if adapter is None:
            return pydantic_core.from_json(data)
        return adapter.validate_json(data)
    except (ValidationError, ValueError) as exc:
        raise SerializationError(f"cannot decode the {what}: {exc}") from exc
