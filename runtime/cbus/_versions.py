"""Schema evolution in the worker: aliases, earlier versions, and work left for newer workers.

Contract section 8. A message names its kind and version in its headers. An alias
kind is its command's; a version the command keeps under `previous` decodes with
that version's class and is upgraded step by step, through the handler object's
`upgrade_<command>_v<N>` hooks, into the current class before the handler runs. A
version newer than the worker's, or an unknown kind of the worker's own domain,
means a deploy in progress: the message goes back to the queue for a newer worker
(`wait_for_newer`: not counted as an attempt) until the domain's
`unknown_version_grace`, counted from when it was sent, has passed.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from . import codec
from ._poison import Poison
from .errors import PermanentError
from .pgmq import RawJson
from .registry import AsyncHandlers, CommandSpec, DomainSpec, PreviousSpec, stub_of

__all__ = [
    "WAITING",
    "Plan",
    "check_hooks",
    "kinds_of",
    "left_for_newer",
    "pending_params",
    "plan",
    "unknown_kind",
    "upgrading",
    "wait_params",
]


class DomainLike(Protocol):
    """What this module reads of a worker's `DomainRuntime` (by shape: no import circle)."""

    @property
    def spec(self) -> DomainSpec: ...


log = logging.getLogger("cbus.worker")

WAITING = "WAITING_FOR_NEWER_WORKER"
"""The log row's last_error_code while its message waits for a newer worker."""


def kinds_of(domain: DomainSpec) -> dict[str, CommandSpec]:
    """Every kind a worker of the domain runs: each command's, and its aliases."""
    return dict(domain.by_kind())


def check_hooks(handlers: object, domain: DomainSpec, implemented: frozenset[str]) -> None:
    """Refuse a handler object that cannot upgrade a previous version of a command it runs."""
    stub = stub_of(handlers)
    if stub is None:
        return
    cls = type(handlers)
    for command in domain.commands:
        if command.handler_method not in implemented:
            continue
        for step in command.previous:
            if step.mechanical or getattr(cls, step.upgrade_method, None) is not getattr(
                stub, step.upgrade_method, None
            ):
                continue
            raise ValueError(
                f"{stub.__name__}.{step.upgrade_method} must be written: version "
                f"{step.version} of `{command.kind}` does not upgrade mechanically to the "
                f"next, so override it in {cls.__name__} (or drop version {step.version} "
                "from `previous` once none of its messages can be queued)"
            )


@dataclass(frozen=True, slots=True)
class Plan:
    """How a message of one version of a command runs: decoded as `type`, then upgraded."""

    type: type[Any]
    steps: tuple[tuple[PreviousSpec, builtins.type[Any]], ...] = ()
    """Each hook to call, oldest first, with the class it must return."""


_PLANS: dict[int, tuple[CommandSpec, Mapping[int, Plan]]] = {}
"""Plans by the id of their spec, held beside it: hashing a frozen spec (every field,
its options' too) cost more than the lookup, once per message."""


def _plans(spec: CommandSpec) -> Mapping[int, Plan]:
    found = _PLANS.get(id(spec))
    if found is not None and found[0] is spec:
        return found[1]
    if len(_PLANS) >= 1024:
        _PLANS.clear()
    plans = _PLANS[id(spec)] = (spec, _plans_of(spec))
    return plans[1]


def _plans_of(spec: CommandSpec) -> Mapping[int, Plan]:
    plans = {spec.version: Plan(spec.type)}
    previous = spec.previous
    for i, step in enumerate(previous):
        chain = [
            (p, previous[j + 1].type if j + 1 < len(previous) else spec.type)
            for j, p in enumerate(previous)
            if j >= i
        ]
        plans[step.version] = Plan(step.type, tuple(chain))
    return plans


def plan(
    runtime: DomainLike, spec: CommandSpec, msg_id: int, read_ct: int, headers: codec.Headers
) -> Plan | Poison:
    """The plan for a message's version, or why it does not run now (a `Poison`)."""

    found = _plans(spec).get(headers.version)
    if found is not None:
        return found
    version = headers.version if 0 <= headers.version < 2**31 else 0
    if headers.version > spec.version:
        return Poison(
            msg_id,
            read_ct,
            f"Version {headers.version} of `{headers.kind}` is newer than this worker's "
            f"{spec.version}: no worker that knows it took it within unknown_version_grace "
            f"({spec.options.unknown_version_grace:g} s)",
            "UNSUPPORTED_VERSION",
            headers.command_id,
            kind=headers.kind,
            version=version,
            grace=spec.options.unknown_version_grace,
            delay=min(spec.options.visibility_timeout, runtime.spec.options.visibility_timeout),
        )
    known = ", ".join(str(v) for v in sorted(_plans(spec)))
    return Poison(
        msg_id,
        read_ct,
        f"Unsupported version {headers.version} of `{spec.kind}`: this worker handles "
        f"versions {known} (keep version {headers.version} under `previous` to run it)",
        "UNSUPPORTED_VERSION",
        headers.command_id,
        kind=headers.kind,
        version=version,
    )


def unknown_kind(runtime: DomainLike, msg_id: int, read_ct: int, headers: codec.Headers) -> Poison:
    """A kind the worker does not know: left for a newer worker when it is of this domain."""

    domain = runtime.spec
    ours = headers.kind.startswith(domain.name + ".")
    return Poison(
        msg_id,
        read_ct,
        f"Unknown kind `{headers.kind}` for domain `{domain.name}`"
        + (
            f": no worker that knows it took it within unknown_version_grace "
            f"({domain.options.unknown_version_grace:g} s)"
            if ours
            else ""
        ),
        "UNKNOWN_KIND",
        headers.command_id,
        kind=headers.kind,
        version=headers.version if 0 <= headers.version < 2**31 else 0,
        grace=domain.options.unknown_version_grace if ours else None,
        delay=min(c.options.visibility_timeout for c in domain.commands)
        if domain.commands
        else domain.options.visibility_timeout,
    )


def upgrading(
    handlers: object, spec: CommandSpec, plan: Plan, method: Callable[..., Any]
) -> Callable[..., Any]:
    """The handler method, preceded by the upgrade hooks of `plan` (none: the method itself).

    A hook that raises, or returns anything but the next version's class, ends the
    attempt with PermanentError UPGRADE_FAILED: the troubleshooting queue, with why.
    """
    if not plan.steps:
        return method
    hooks = [(getattr(handlers, step.upgrade_method), step, want) for step, want in plan.steps]
    name = type(handlers).__name__

    def failed(step: PreviousSpec, why: str) -> PermanentError:
        return PermanentError(
            "UPGRADE_FAILED",
            f"{name}.{step.upgrade_method} could not upgrade version {step.version} of "
            f"`{spec.kind}`: {why}",
        )

    def checked(step: PreviousSpec, want: type[Any], value: Any) -> Any:
        if not isinstance(value, want):
            raise failed(step, f"returned {type(value).__qualname__}, expected {want.__qualname__}")
        return value

    if isinstance(handlers, AsyncHandlers):

        async def run_async(command: Any, ctx: Any) -> Any:
            for hook, step, want in hooks:
                try:
                    value = await hook(command)
                except Exception as exc:
                    raise failed(step, f"{type(exc).__qualname__}: {exc}") from exc
                command = checked(step, want, value)
            return await method(command, ctx)

        return run_async

    def run(command: Any, ctx: Any) -> Any:
        for hook, step, want in hooks:
            try:
                value = hook(command)
            except Exception as exc:
                raise failed(step, f"{type(exc).__qualname__}: {exc}") from exc
            command = checked(step, want, value)
        return method(command, ctx)

    return run


def wait_params(runtime: DomainLike, p: Poison) -> dict[str, Any]:
    """Parameters of `wait_for_newer` for a message left for a newer worker."""
    return {
        "domain": runtime.spec.name,
        "command_id": p.command_id,
        "msg_id": p.msg_id,
        "read_ct": p.read_ct,
        "grace": p.grace,
        "delay": p.delay,
        "code": WAITING,
        "reason": f"Waiting for a newer worker: {p.reason.partition(':')[0]}",
    }


_logged: dict[tuple[str, str, int], float] = {}
_logged_lock = threading.Lock()


def left_for_newer(runtime: DomainLike, p: Poison, row: Any) -> bool:
    """After `wait_for_newer`: True when the message waits (or the lease was lost).

    False when its grace has passed: the caller sets it aside, with `p.reason`.
    Logged at WARNING once per kind and version per `delay`, not once per message.
    """
    age, moved = row if row is not None else (None, 0)
    if age is None:
        return True  # the lease was lost: whoever holds the message decides
    if not moved:
        return False
    key = (runtime.spec.name, p.kind or "unknown", p.version)
    now = time.monotonic()
    with _logged_lock:
        last = _logged.get(key)
        if last is not None and now - last < p.delay:
            return True
        _logged[key] = now
    log.warning(
        "%s: left for a newer worker, looked at again every %g s; set aside once "
        "unknown_version_grace (%g s) has passed since it was sent",
        p.reason.partition(":")[0],
        p.delay,
        p.grace,
        extra={"action": "waiting_for_newer_worker", "kind": p.kind, "version": p.version},
    )
    return True


@lru_cache(maxsize=256)
def pending_params(domain: DomainSpec) -> dict[str, Any]:
    """Parameters of `pending`: the current version of each kind the worker runs.

    A message that waits for a newer worker (a newer version or an unknown kind, not
    due) is no work for `run(until_idle=True)`.
    """
    known = {kind: c.version for kind, c in kinds_of(domain).items()}
    return {
        "horizon": 60.0,
        "domain": domain.name,
        "waiting": WAITING,
        "known": RawJson(codec.encode(known)),
    }
