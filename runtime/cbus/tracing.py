"""OpenTelemetry traces across send and handle (contract section 10), when installed.

A send makes a producer span `send <kind>` and carries its W3C trace context in the
message's headers (`traceparent`, `tracestate`); the worker runs each handler in a
consumer span `process <kind>`, a child of that context (or of a foreign producer's
`traceparent`). A send from a handler (through `ctx`) runs inside the handler's span,
so the follow-up continues the trace.

Without `opentelemetry` installed nothing is imported: `enabled()` looks for the
package once (`importlib.util.find_spec`), and every hook then returns at once.
With it installed but no tracer provider set, a send outside any trace writes no
context and makes no span; the worker's spans are OpenTelemetry's non-recording ones.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._worker_triage import Delivery
    from .registry import CommandSpec

__all__ = ["enabled", "processing", "recording", "send_context"]

_NO_CONTEXT: tuple[str | None, str | None] = (None, None)
# (queue, msg_id) -> the span context of its last failed attempt in this process, so
# the next attempt's span links to it. Bounded: the oldest go first.
_FAILED_MAX = 10_000
_failed: OrderedDict[tuple[str, int], Any] = OrderedDict()
_failed_lock = threading.Lock()
_otel: Any = None  # (trace, propagate) once found; False when not installed


def _load() -> Any:
    global _otel
    if _otel is None:
        try:
            found = importlib.util.find_spec("opentelemetry") is not None
            if found:
                from opentelemetry import propagate, trace
        except (ImportError, ValueError):
            found = False
        _otel = (trace, propagate, trace.get_tracer("cbus")) if found else False
    return _otel


def enabled() -> bool:
    """OpenTelemetry's API is installed (looked for once, imported only if found)."""
    return bool(_load())


def recording() -> bool:
    """A tracer provider is set (spans record); False until the application sets one."""
    otel = _otel if _otel is not None else _load()
    return bool(otel) and not isinstance(otel[0].get_tracer_provider(), otel[0].ProxyTracerProvider)


def send_context(spec: CommandSpec) -> tuple[str | None, str | None]:
    """A producer span for one message; its (traceparent, tracestate) for the headers."""
    otel = _otel if _otel is not None else _load()
    if not otel:
        return _NO_CONTEXT
    trace, propagate, tracer = otel
    # No provider set and no current span: a span would not record; write nothing.
    if (
        isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        and not trace.get_current_span().get_span_context().is_valid
    ):
        return _NO_CONTEXT
    with tracer.start_as_current_span(
        f"send {spec.kind}",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "pgmq",
            "messaging.destination.name": spec.queue,
            "messaging.operation.type": "send",
        },
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


@contextlib.contextmanager
def processing(delivery: Delivery) -> Iterator[None]:
    """The consumer span of one handler invocation; a failure sets ERROR and is recorded.

    A retry run by this process links to its previous attempt's span (another
    worker process's retry is in the same trace, unlinked).
    """
    trace, propagate, tracer = _load()
    h = delivery.headers
    carrier: dict[str, str] = {}
    if h.traceparent is not None:
        carrier["traceparent"] = h.traceparent
        if h.tracestate is not None:
            carrier["tracestate"] = h.tracestate
    key = (delivery.spec.queue, delivery.msg_id)
    with _failed_lock:
        previous = _failed.pop(key, None)
    with tracer.start_as_current_span(
        f"process {delivery.spec.kind}",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(previous)] if previous is not None else None,
        # Recorded below: the SDK's own recording calls str() on the exception, which
        # may raise and would replace the handler's exception with its own.
        record_exception=False,
        set_status_on_exception=False,
        attributes={
            "messaging.system": "pgmq",
            "messaging.destination.name": delivery.spec.queue,
            "messaging.message.id": str(delivery.msg_id),
            "messaging.operation.type": "process",
            "cbus.command_id": str(h.command_id),
            "cbus.attempt": delivery.read_ct,
        },
    ) as span:
        try:
            yield
        except BaseException as exc:
            _record(trace, span, exc)
            with _failed_lock:
                _failed[key] = span.get_span_context()
                if len(_failed) > _FAILED_MAX:
                    _failed.popitem(last=False)
            raise


def _record(trace: Any, span: Any, exc: BaseException) -> None:
    """Status ERROR and the exception event, whatever the exception's str() does."""
    try:
        span.record_exception(exc)
    except Exception:
        span.add_event("exception", {"exception.type": type(exc).__qualname__})
    span.set_status(trace.Status(trace.StatusCode.ERROR))
