"""Triage: decode each leased row, and decide whether it runs or is set aside, and why.

I/O-free: the poison rules live here, in one place, for both workers.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from . import _versions as versions
from . import codec
from ._poison import Poison
from ._worker_domain import DomainRuntime
from .pgmq import RawJson
from .registry import CommandSpec

__all__ = ["Delivery", "Poison", "poison_id", "triage"]


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
    span: Any = None  # the running attempt's OpenTelemetry span context (cbus.tracing)


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
        _due_us,
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
