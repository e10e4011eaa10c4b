"""What a handler's outcome means: classify a failure, encode details, results and acks.

I/O-free, and shared by both workers.
"""

from __future__ import annotations

import enum
import logging
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import codec
from ._worker_domain import DomainRuntime
from ._worker_triage import Delivery
from .errors import BusinessError, PermanentError, ValidationError
from .pgmq import RawJson
from .registry import CommandSpec

__all__ = [
    "Failure",
    "Outcome",
    "ack_params",
    "classify",
    "encode_details",
    "encode_result",
    "safe_str",
]

log = logging.getLogger("cbus.worker")


class Outcome(enum.Enum):
    RETRY = "retry"
    TROUBLESHOOT = "troubleshoot"
    FAILED = "failed"


@dataclass(slots=True)
class Failure:
    outcome: Outcome
    error_type: str
    code: str
    message: str
    backoff: float = 0.0
    details: RawJson | None = None  # a business error's details, encoded


def encode_details(details: Any) -> RawJson | None:
    """A business error's details as JSON; a bounded repr when they are not JSON data.

    Failing here would lose the outcome itself: the command would be retried for an
    encoding problem of the error that ended it. Details that refer to themselves or
    nest too deep for msgspec (RecursionError) get the repr too, which `reprlib`
    bounds in depth and length.
    """
    if details is None:
        return None
    try:
        return RawJson(codec.encode(details))
    except Exception:  # any failure here is the details' own
        pass
    try:
        text = reprlib.repr(details)
    except Exception:  # a __repr__ that raises
        text = f"<details of type {type(details).__qualname__}: not JSON, repr failed>"
    return RawJson(codec.encode(text))


def safe_str(exc: BaseException) -> str:
    """`str(exc)`, or a note saying it failed: a handler's exception must not stop its outcome."""
    try:
        text = str(exc)
    except Exception:  # whatever a broken __str__ raises
        return f"<{type(exc).__qualname__}: str() failed>"
    return text if isinstance(text, str) else repr(text)


def classify(delivery: Delivery, exc: BaseException) -> Failure:
    """Decide what a handler's exception means for its command.

    Never raises: an exception whose attributes or `str()` fail is still a failure
    of its command (retried, then set aside), never of the consumer.
    """
    try:
        return _classify(delivery, exc)
    except Exception as broken:
        return _plain_failure(
            delivery,
            type(exc).__qualname__,
            type(exc).__qualname__,
            (f"{safe_str(exc)} (and classifying it failed: {type(broken).__qualname__})"),
        )


def _plain_failure(delivery: Delivery, name: str, code: str, message: str) -> Failure:
    if delivery.read_ct >= delivery.max_attempts:
        return Failure(Outcome.TROUBLESHOOT, name, code, f"Attempts exhausted: {message}")
    return Failure(
        Outcome.RETRY, name, code, message, delivery.spec.options.backoff_for(delivery.read_ct)
    )


def _classify(delivery: Delivery, exc: BaseException) -> Failure:
    name = type(exc).__qualname__
    if isinstance(exc, BusinessError):
        details = encode_details(exc.details)
        message = exc.message if isinstance(exc.message, str) else safe_str(exc)
        if exc.code in delivery.spec.errors:
            return Failure(Outcome.FAILED, name, exc.code, message, details=details)
        declared = ", ".join(sorted(delivery.spec.errors)) or "none"
        return Failure(
            Outcome.TROUBLESHOOT,
            name,
            "UNDECLARED_ERROR",
            f"Business error code `{exc.code}` is not declared for `{delivery.spec.kind}` "
            f"(declared: {declared}): {message}",
            details=details,
        )
    if isinstance(exc, PermanentError):
        return Failure(Outcome.TROUBLESHOOT, name, exc.code, exc.message)
    code = getattr(exc, "code", None)
    code = code if isinstance(code, str) else name
    return _plain_failure(delivery, name, code, safe_str(exc) or name)


def ack_params(
    runtime: DomainRuntime, completed: Sequence[Delivery], audit_full: bool
) -> dict[str, Any]:
    """Parameters of `ack_completed`: array literals and one JSON array, cheap to build.

    psycopg dumps a list element by element in Python; on a batch of 100 that was
    the largest cost of an acknowledgement on the worker's side.
    """
    results = [d.result for d in completed]
    return {
        "domain": runtime.spec.name,
        "msg_ids": "{" + ",".join([str(d.msg_id) for d in completed]) + "}",
        "read_cts": "{" + ",".join([str(d.read_ct) for d in completed]) + "}",
        "results": (
            RawJson(b"[" + b",".join([r or b"null" for r in results]) + b"]")
            if any(results)
            else None
        ),
        "audit_full": audit_full,
        "done_channel": runtime.done_channel,
    }


def encode_result(delivery: Delivery, value: Any) -> RawJson | None:
    """The handler's result as stored and replied, checked against the schema.

    A result of the wrong type, or breaking its constraints, sends the command to the
    troubleshooting queue (a bug in the handler: another attempt would only repeat
    its effects outside the database); stored, it would only fail later, in whoever
    reads it. What a handler returns for a command that declares no result
    is not kept.
    """
    spec = delivery.spec
    if spec.result_type is None:
        if value is not None:
            _warn_unexpected_result(spec, value)
        return None
    if not isinstance(value, spec.result_type):
        raise PermanentError(
            "BAD_RESULT",
            f"The handler of `{spec.kind}` returned {type(value).__qualname__}, "
            f"expected {spec.result_type.__qualname__}",
        )
    try:
        return RawJson(codec.validate(value))
    except ValidationError as exc:
        raise PermanentError("BAD_RESULT", str(exc)) from None


_warned_results: set[str] = set()


def _warn_unexpected_result(spec: CommandSpec, value: Any) -> None:
    if spec.kind not in _warned_results:
        _warned_results.add(spec.kind)
        log.warning(
            "the handler of %s returned %s, but the command declares no result: not kept",
            spec.kind,
            type(value).__qualname__,
            extra={"action": "result_ignored", "kind": spec.kind},
        )
