"""JSON in and out of the queue, with msgspec and one cached decoder per type.

The wire format (contract section 7): the PGMQ `message` is the command's fields as
a JSON object, the `headers` a JSON object with kind, version, command_id,
correlation_id and optional reply_to / batch_id.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from ._accepts import INT64_MAX, INT64_MIN, certain, rules
from .errors import ValidationError
from .wire import BatchCompleted, Headers, Reply, ReplyError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "KIND_MAX_CHARS",
    "MAX_DEPTH",
    "MAX_HEADERS_BYTES",
    "BatchCompleted",
    "Headers",
    "Reply",
    "ReplyError",
    "decode",
    "decode_batch_completed",
    "decode_headers",
    "decode_reply",
    "encode",
    "int64_problem",
    "shape_problem",
    "validate",
]

T = TypeVar("T")

# The limits on a message's shape (the README's "Wire format"). msgspec decodes by
# recursion, so a payload nested ~1,000 deep raised RecursionError; JSON integers
# have no size, while cbus's `int` is PostgreSQL's bigint and cbgen's default range.
MAX_DEPTH = 64  # levels of arrays and objects, in a command's fields or its headers
KIND_MAX_CHARS = 200
MAX_HEADERS_BYTES = 4096

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# Every digit read as "0": a run of 19 digits is then a plain substring search, where
# the regex `[0-9]{19}` tried a match at every offset (2.1 us against 0.4 us on 216 bytes).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else b for b in range(256))
_LONG_DIGITS = b"0" * 19
_INTEGER = re.compile(rb"(?<![0-9.eE+\\-])-?[0-9]{19,}(?![0-9.eE])")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [0] * 256
_DEPTH_STEP[ord("[")] = _DEPTH_STEP[ord("{")] = 1
_DEPTH_STEP[ord("]")] = _DEPTH_STEP[ord("}")] = -1


_INT64_RULE = "outside int64 (-2**63 to 2**63 - 1), cbus's `int`"


def int64_problem(value: int) -> str | None:
    """Why an integer breaks cbus's one rule for `int` (it is an int64), or None."""
    if INT64_MIN <= value <= INT64_MAX:
        return None
    return f"an integer of {value.bit_length()} bits is {_INT64_RULE}"


def shape_problem(data: bytes) -> str | None:
    """Why a JSON document breaks the wire format's limits on shape, or None.

    Checked before msgspec sees the bytes: nesting deeper than MAX_DEPTH and integers
    outside int64. Two scans in C decide for almost every message; only one with
    many brackets or a run of 19 digits has its strings stripped and is walked.
    """
    long_digits = _LONG_DIGITS in data.translate(_DIGITS_AS_ZERO)
    if not long_digits and data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return None
    bare = _STRING.sub(b'""', data)
    steps = map(_DEPTH_STEP.__getitem__, bare.translate(None, _NOT_BRACKET))
    depth = max(itertools.accumulate(steps, initial=0))
    if depth > MAX_DEPTH:
        return f"nested {depth} levels deep, more than the {MAX_DEPTH} accepted"
    for match in _INTEGER.finditer(bare) if long_digits else ():
        digits = len(match.group().lstrip(b"-"))
        if digits > 19 or int64_problem(int(match.group())) is not None:
            return f"an integer of {digits} digits is {_INT64_RULE}"
    return None


_encoder = msgspec.json.Encoder(decimal_format="string", uuid_format="canonical")


_reply_decoder = msgspec.json.Decoder(Reply)
_batch_decoder = msgspec.json.Decoder(BatchCompleted)


def decode_reply(data: bytes | str | Mapping[str, Any]) -> Reply:
    """Decode a reply message read from a reply queue (JSON text, or jsonb psycopg loaded)."""
    if isinstance(data, bytes | str):
        return _reply_decoder.decode(data)
    return msgspec.convert(data, Reply, strict=False)


def decode_batch_completed(data: bytes | str) -> BatchCompleted:
    return _batch_decoder.decode(data)


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


# A `\u0000` escape (not an escaped backslash before `u0000`): jsonb cannot store NUL,
# so PostgreSQL would refuse the send and abort the caller's transaction.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _int_beyond_int64(value: Any, path: str = "$") -> str | None:
    """The path of the first integer outside int64 in decoded JSON data, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return path if int64_problem(value) is not None else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _int_beyond_int64(
            item, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]"
        )
        if found is not None:
            return found
    return None


_SCALARS = (
    mi.NoneType, mi.BoolType, mi.IntType, mi.FloatType, mi.StrType, mi.BytesType,
    mi.ByteArrayType, mi.DateTimeType, mi.TimeType, mi.DateType, mi.TimeDeltaType,
    mi.UUIDType, mi.DecimalType, mi.EnumType, mi.LiteralType,
)  # fmt: skip


def _scalar(info: mi.Type) -> bool:
    if isinstance(info, mi.Metadata):
        return _scalar(info.type)
    if isinstance(info, mi.UnionType):
        return all(_scalar(t) for t in info.types)
    return isinstance(info, _SCALARS)


_flat: dict[Any, tuple[tuple[str, str], ...] | None] = {}


def _flat_fields(type_: type[Any]) -> tuple[tuple[str, str], ...] | None:
    """(attribute, JSON key) of each field of a type whose every field is a scalar, else None."""
    try:
        return _flat[type_]
    except KeyError:
        pass
    try:
        info = mi.type_info(type_)
    except (TypeError, ValueError):
        info = None
    found = None
    if isinstance(info, mi.DataclassType | mi.StructType) and all(
        _scalar(f.type) for f in info.fields
    ):
        found = tuple((f.name, f.encode_name) for f in info.fields)
    _flat[type_] = found
    return found


def validate(value: T) -> bytes:
    """Encode a command and check it as the worker's decode will, before anything is sent.

    A dataclass does not check `Meta` constraints when it is built, so the sender
    round-trips the bytes through the decoder the worker uses: a value is accepted at
    send time if and only if decoding its wire form accepts it, with decode's reason
    when it does not. Beyond decode, what PostgreSQL or cbus's wire format refuses is
    refused here too: a NUL character (jsonb cannot store it) and integers outside
    int64. Returns the bytes to send.
    """
    try:
        data = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ValidationError(f"Invalid {type(value).__qualname__}: {exc}") from None
    found = rules(type(value))
    if found is None or not certain(value, found):
        # Values cbus._accepts cannot vouch for: decode tells, with its reason.
        _check_by_decode(value, data)
    if b"\\u0000" in data and _NUL_ESCAPE.search(data):
        raise ValidationError(
            f"Invalid {type(value).__qualname__}: a string holds a NUL character "
            "(\\u0000), which PostgreSQL's jsonb cannot store"
        )
    return data


def _check_by_decode(value: Any, data: bytes) -> None:
    """Refuse `value` (encoded as `data`) as the worker's decode would refuse it."""
    name = type(value).__qualname__
    flat = _flat_fields(type(value))
    if flat is not None:
        # A command of scalar fields only: its JSON is one object, and its integers are
        # its fields' values (a field given a nested value is refused by decode, at
        # the field). Checked on the values: 0.3 us against 2.8 us for the scan.
        for field, key in flat:
            item = getattr(value, field)
            if isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
                raise ValidationError(
                    f"Invalid {name}: Expected `int` within int64 (-2**63 to 2**63 - 1), "
                    f"cbus's `int` - at `$.{key}`"
                )
        problem = None
    else:
        problem = shape_problem(data)  # before decoding: the decoder recurses
    if problem is not None:
        path = (
            None if problem.startswith("nested") else _int_beyond_int64(msgspec.json.decode(data))
        )
        if path is not None:
            raise ValidationError(
                f"Invalid {name}: Expected `int` within int64 (-2**63 to 2**63 - 1), cbus's "
                f"`int` - at `{path}`"
            )
        raise ValidationError(f"Invalid {name}: the message is {problem}")
    try:
        decoder(type(value)).decode(data)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"Invalid {name}: {exc}") from None
