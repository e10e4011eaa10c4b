"""The I/O-free half of the worker: what to do with a message, decided from its row.

Shared by Worker and AsyncWorker, so the delivery rules live in one place.
"""

from __future__ import annotations

import contextlib
import difflib
import enum
import logging
import os
import re
import reprlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import _versions as versions
from . import codec
from ._queries import query
from .errors import BusinessError, PermanentError, ValidationError
from .outcomes import done_channel
from .pgmq import RawJson
from .registry import CommandSpec, DomainSpec, domain_of, implemented_methods, stub_of

__all__ = ["Delivery", "DomainRuntime", "Outcome", "Poison", "classify", "triage"]

log = logging.getLogger("cbus.worker")


class Outcome(enum.Enum):
    RETRY = "retry"
    TROUBLESHOOT = "troubleshoot"
    FAILED = "failed"


@dataclass(slots=True)
class DomainRuntime:
    """A domain as one worker serves it: its queue, and a bound method per kind."""

    spec: DomainSpec
    handlers: object
    methods: dict[str, Callable[..., Any]]
    specs: dict[str, CommandSpec]
    max_attempts_json: RawJson
    default_max_attempts: int
    queue: str
    visibility_timeout: int  # the longest of the domain's commands: one read leases all
    done_channel: str

    @classmethod
    def of(cls, handlers: object) -> DomainRuntime:
        spec = domain_of(handlers)
        implemented = implemented_methods(handlers)
        versions.check_hooks(handlers, spec, implemented)
        _warn_misspelt_handlers(handlers, spec, implemented)
        return cls(
            spec=spec,
            handlers=handlers,
            methods={
                c.kind: getattr(handlers, c.handler_method)
                for c in spec.commands
                if c.handler_method in implemented
            },
            specs=versions.kinds_of(spec),
            max_attempts_json=RawJson(
                codec.encode(
                    {k: c.options.max_attempts for k, c in versions.kinds_of(spec).items()}
                )
            ),
            default_max_attempts=spec.options.max_attempts,
            queue=spec.queue,
            visibility_timeout=max(c.options.visibility_timeout for c in spec.commands),
            done_channel=done_channel(spec.name),
        )

    def read_params(self, audit_full: bool) -> dict[str, Any]:
        return {
            "audit_full": audit_full,
            "domain": self.spec.name,
            "vt": self.visibility_timeout,
            "max_attempts": self.max_attempts_json,
            "default_max_attempts": self.default_max_attempts,
        }


def _warn_misspelt_handlers(
    handlers: object, spec: DomainSpec, implemented: frozenset[str]
) -> None:
    """Say so at start when commands of the domain have no handler method.

    Their messages would otherwise reach the troubleshooting queue (no handler)
    with nothing to tell why until the first one arrives. A public method that
    looks like a missing handler method with a typo is named with its likely
    target; a handler method the class does override is never a typo.
    """
    missing = {
        c.handler_method: c.kind for c in spec.commands if c.handler_method not in implemented
    }
    if not missing:
        return
    name_of = type(handlers).__name__
    methods = {c.handler_method for c in spec.commands}
    explained: set[str] = set()
    stub = stub_of(handlers)
    for cls in type(handlers).__mro__:
        if cls is stub:
            break
        for name in vars(cls):
            if name.startswith("_") or name in methods or not callable(getattr(cls, name, None)):
                continue
            close = difflib.get_close_matches(name, missing, n=1, cutoff=0.7)
            if close and close[0] not in explained:
                explained.add(close[0])
                log.warning(
                    "%s.%s handles no command; did you mean %s? Commands %s have no handler "
                    "and go to the troubleshooting queue",
                    name_of,
                    name,
                    close[0],
                    missing[close[0]],
                    extra={"action": "handler_misspelt", "kind": missing[close[0]]},
                )
    unhandled = [(m, kind) for m, kind in missing.items() if m not in explained]
    if unhandled:
        log.warning(
            "%s has no handler for %s: these commands go to the troubleshooting queue",
            name_of,
            ", ".join(f"{kind} ({m})" for m, kind in unhandled),
            extra={"action": "handler_missing", "kind": unhandled[0][1]},
        )


def stub_package(handlers: object) -> str:
    """The generated package a handler object's stub comes from (`shop` for shop.orders)."""
    stub = stub_of(handlers)
    if stub is None:
        return "PACKAGE"
    return stub.__module__.rpartition(".")[0] or stub.__module__


_UNUSABLE_DATABASE = ("does not exist", "authentication failed", "no pg_hba.conf entry")


def unusable_database(exc: psycopg.OperationalError) -> str | None:
    """The server's refusal, when it answered that this DSN can never work as it is.

    A server that cannot be reached, is starting or is full is worth waiting for; a
    database or role that does not exist, or credentials it refuses, are not.
    """
    text = str(exc)
    if "FATAL:" in text and any(reason in text for reason in _UNUSABLE_DATABASE):
        return text.strip().splitlines()[0]
    return None


def with_application_name(dsn: str, connect_kwargs: dict[str, Any]) -> str:
    """Name the worker's sessions in pg_stat_activity, unless the user named them.

    A service (`service=` or PGSERVICE) may name them in its file, which only libpq reads.
    """
    params = conninfo_to_dict(dsn)
    if (
        "application_name" in connect_kwargs
        or "application_name" in params
        or "service" in params
        or os.environ.get("PGAPPNAME")
        or os.environ.get("PGSERVICE")
    ):
        return dsn
    return make_conninfo(dsn, application_name="cbus worker")


class LeaseSize:
    """How many messages a consumer leases next: about what its handlers run in `TARGET` s.

    Batching spreads one lease and one acknowledgement over many quick handlers; for
    slow ones it only queues behind one consumer what idle consumers could run
    (concurrency=4 with eight one-second commands took 8.5 s, one after the other).
    A worker's consumers of a domain share one: it starts at one message, doubles
    with each batch while handlers are quick, up to the worker's batch size, and
    drops at once when they are slow; an empty lease starts it over, since the
    commands that end a lull may be slow ones. Sizes are powers of two (and the
    batch size): each is a statement of its own, prepared once.
    """

    TARGET = 0.25

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 1

    def forget(self) -> None:
        """The queue ran dry: what comes next may be slow, so start small again."""
        self.size = 1

    def record(self, count: int, seconds: float) -> None:
        """Learn from a batch of `count` messages that took `seconds` to run."""
        if count <= 0:
            return
        fits = int(self.TARGET * count / seconds) if seconds > 0 else self.limit
        want = max(1, min(self.limit, fits, self.size * 2))
        self.size = want if want == self.limit else 1 << (want.bit_length() - 1)


def read_query(queue: str, batch_size: int, last_read_at: bool) -> bytes:
    """The lease statement for a queue whose table has (or lacks) PGMQ 1.10's last_read_at."""
    return query("read" if last_read_at else "read_before_pgmq_1_10", queue, batch_size)


@dataclass(slots=True)
class Delivery:
    """A message that will run its handler."""

    msg_id: int
    read_ct: int
    spec: CommandSpec
    headers: codec.Headers
    command: Any
    method: Callable[..., Any]
    max_attempts: int
    result: RawJson | None = None
    ctx: Any = None  # the handler's context while it runs
    deadline: float | None = None  # when the running attempt times out (`timeout`)
    timed_out: bool = False  # the heartbeat recorded the attempt as timed out


@dataclass(slots=True)
class Poison:
    """A message that must not run: why, and what to do with it."""

    msg_id: int
    read_ct: int
    reason: str
    code: str
    command_id: uuid.UUID | None
    drop: bool = False  # a duplicate of a command that already ended: delete, do not archive
    kind: str | None = None
    version: int = 0
    grace: float | None = None  # set: leave for a newer worker this long after sending
    delay: float = 0.0  # then look again this often


# Names the command-log row of a message whose headers carry no usable command_id,
# so an operator still finds it in the troubleshooting queue.
_POISON_NAMESPACE = uuid.UUID("5f0c1b1e-6c62-4f75-8a8e-2f3d4c5b6a70")


_COMMAND_ID = re.compile(rb'"command_id"\s*:\s*"([^"\\]{1,64})"')


def _bad_headers(
    runtime: DomainRuntime,
    msg_id: int,
    read_ct: int,
    raw: bytes | None,
    why: str,
    conflict: bool = False,
) -> Poison:
    """BAD_HEADERS, on the command_id the headers carry when the log row is this message's.

    A message that names another message's command (`conflict`) gets a row of its
    own: setting that command aside would let any producer cancel it.
    """
    loose: Any = None
    if raw is not None and len(raw) <= codec.MAX_HEADERS_BYTES and not codec.shape_problem(raw):
        with contextlib.suppress(Exception):
            loose = msgspec.json.decode(raw)
    loose = loose if isinstance(loose, dict) else {}
    found = _COMMAND_ID.search(raw or b"") if not loose else None
    command_id: uuid.UUID | None = None
    with contextlib.suppress(ValueError):
        command_id = uuid.UUID(found.group(1).decode() if found else str(loose.get("command_id")))
    if command_id is None or conflict:
        command_id = poison_id(runtime, msg_id)
    kind = loose.get("kind")
    version = loose.get("version")
    return Poison(
        msg_id,
        read_ct,
        f"Invalid headers ({why}): a command needs kind, version, command_id and "
        "correlation_id (the wire format in cbus's README)",
        "BAD_HEADERS",
        command_id,
        kind=kind[: codec.KIND_MAX_CHARS] if isinstance(kind, str) else "unknown",
        version=version
        if isinstance(version, int) and not isinstance(version, bool) and 0 <= version < 2**31
        else 0,
    )


def poison_id(runtime: DomainRuntime, msg_id: int) -> uuid.UUID:
    """The command_id of the log row that stands for a message that has none of its own."""
    return uuid.uuid5(_POISON_NAMESPACE, f"{runtime.spec.name}:{msg_id}")


def _headers_problem(raw: bytes | None) -> str | None:
    if raw is not None and len(raw) > codec.MAX_HEADERS_BYTES:
        return f"{len(raw)} bytes, more than the {codec.MAX_HEADERS_BYTES} accepted"
    return codec.shape_problem(raw) if raw is not None else None


def triage(
    runtime: DomainRuntime, rows: Sequence[tuple[Any, ...]]
) -> tuple[list[Delivery], list[Poison]]:
    """Decode each leased row; split into deliveries to run and poison to set aside."""
    ready: list[Delivery] = []
    poison: list[Poison] = []
    for (
        msg_id,
        read_ct,
        message,
        raw_headers,
        runnable,
        well_formed,
        max_attempts,
        conflict,
    ) in rows:
        why = _headers_problem(raw_headers)
        if why is None:
            try:
                headers = codec.decode_headers(raw_headers or b"null")
            except Exception as exc:  # whatever msgspec raises: RecursionError too
                why = str(exc) or type(exc).__name__
            else:
                if len(headers.kind) > codec.KIND_MAX_CHARS:
                    why = (
                        f"a kind of {len(headers.kind)} characters, more than the "
                        f"{codec.KIND_MAX_CHARS} accepted"
                    )
        if why is not None:
            poison.append(_bad_headers(runtime, msg_id, read_ct, raw_headers, why, conflict))
            continue
        if not well_formed:
            poison.append(_bad_headers(runtime, msg_id, read_ct, raw_headers, "not well formed"))
            continue
        if not runnable:
            poison.append(
                Poison(
                    msg_id,
                    read_ct,
                    "Duplicate: this command_id already ran or is running from another message",
                    "DUPLICATE",
                    headers.command_id,
                    drop=True,
                    kind=headers.kind,
                )
            )
            continue
        if conflict:
            poison.append(
                Poison(
                    msg_id,
                    read_ct,
                    f"Conflicting duplicate: command_id {headers.command_id} is a pending "
                    "command sent as another message, or of another kind; not run, the "
                    "command's own message runs as sent",
                    "CONFLICTING_DUPLICATE",
                    poison_id(runtime, msg_id),
                    kind=headers.kind,
                    version=headers.version if 0 <= headers.version < 2**31 else 0,
                )
            )
            continue
        spec = runtime.specs.get(headers.kind)
        if spec is None:
            poison.append(versions.unknown_kind(runtime, msg_id, read_ct, headers))
            continue
        plan = versions.plan(runtime, spec, msg_id, read_ct, headers)
        if isinstance(plan, Poison):
            poison.append(plan)
            continue
        method = runtime.methods.get(spec.kind)
        if method is None:
            poison.append(
                Poison(
                    msg_id,
                    read_ct,
                    f"No handler: {type(runtime.handlers).__name__} does not implement "
                    f"`{spec.handler_method}`",
                    "NO_HANDLER",
                    headers.command_id,
                    kind=headers.kind,
                )
            )
            continue
        if read_ct > max_attempts:
            poison.append(
                Poison(
                    msg_id,
                    read_ct,
                    f"Delivered {read_ct} times without an outcome (max_attempts "
                    f"{max_attempts}): the worker died while handling it",
                    "CRASH_LOOP",
                    headers.command_id,
                    kind=headers.kind,
                )
            )
            continue
        try:
            problem = codec.shape_problem(message)
            if problem is not None:
                raise ValueError(problem)
            command = codec.decode(message, plan.type)
        except Exception as exc:  # whatever msgspec raises: RecursionError too
            poison.append(
                Poison(
                    msg_id,
                    read_ct,
                    f"Cannot decode `{spec.kind}`: {str(exc) or type(exc).__name__}",
                    "UNDECODABLE",
                    headers.command_id,
                    kind=headers.kind,
                )
            )
            continue
        method = versions.upgrading(runtime.handlers, spec, plan, method)
        ready.append(Delivery(msg_id, read_ct, spec, headers, command, method, max_attempts))
    return ready, poison


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
