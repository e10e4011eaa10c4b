"""JSON in and out of the queue, with msgspec and one cached decoder per type.

The wire format (contract section 7): the PGMQ `message` is the command's fields as
a JSON object, the `headers` a JSON object with kind, version, command_id,
correlation_id and optional reply_to / batch_id.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import msgspec

from .errors import ValidationError

__all__ = ["Headers", "decode", "decode_headers", "encode", "validate"]

T = TypeVar("T")

_encoder = msgspec.json.Encoder(decimal_format="string", uuid_format="canonical")


class Headers(msgspec.Struct, frozen=True, omit_defaults=True):
    """The PGMQ headers of a command message."""

    kind: str
    version: int
    command_id: uuid.UUID
    correlation_id: uuid.UUID
    reply_to: str | None = None
    batch_id: uuid.UUID | None = None


_headers_decoder = msgspec.json.Decoder(Headers)


def encode(value: Any) -> bytes:
    """Encode a command, result or headers to JSON bytes."""
    return _encoder.encode(value)


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decoder(type_: type[T]) -> msgspec.json.Decoder[T]:
    """The reusable decoder for a type; msgspec documents it as the faster form."""
    found = _decoders.get(type_)
    if found is None:
        found = _decoders[type_] = msgspec.json.Decoder(type_)
    return found


def decode(data: bytes | str, type_: type[T]) -> T:
    """Decode JSON into `type_`, checking every constraint; raises msgspec.ValidationError."""
    return decoder(type_).decode(data)


def decode_headers(data: bytes | str) -> Headers:
    return _headers_decoder.decode(data)


def validate(value: T) -> bytes:
    """Encode a command and check it against its schema's constraints.

    A dataclass does not check `Meta` constraints when it is built, so the sender
    round-trips it through its decoder before anything is written. Returns the bytes
    to send.
    """
    data = _encoder.encode(value)
    try:
        decoder(type(value)).decode(data)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"Invalid {type(value).__qualname__}: {exc}") from None
    return data
