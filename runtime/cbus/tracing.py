"""OpenTelemetry traces across send and handle (contract section 10), when installed.

A send makes a producer span `send <kind>` and carries its W3C trace context in the
message's headers (`traceparent`, `tracestate`); the worker runs each handler in a
consumer span `process <kind>`, a child of that context (or of a foreign producer's
`traceparent`). A send from a handler (through `ctx`) runs inside the handler's span,
so the follow-up continues the trace.

A retry is a new consumer span in the same trace, linked to the previous attempt's:
when a worker schedules a retry (or sets the command aside, for an operator's
`tsq retry`), it writes that attempt's span context into the message's headers
(`previous_span`, a traceparent) in the statement it runs anyway, so the link holds
whichever worker process runs the next attempt, and a success writes nothing.

Without `opentelemetry` installed nothing is imported: `enabled()` looks for the
package once (`importlib.util.find_spec`), and every hook then returns at once.
With it installed but no tracer provider set, a send outside any trace writes no
context and makes no span; the worker's spans are OpenTelemetry's non-recording ones.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._worker_triage import Delivery
    from .registry import CommandSpec

__all__ = ["enabled", "processing", "recording", "send_context", "traceparent_of"]

_NO_CONTEXT: tuple[str | None, str | None] = (None, None)
_otel: Any = None  # (trace, propagate, tracer, W3C propagator) once found; False if absent


def _load() -> Any:
    global _otel
    if _otel is None:
        try:
            found = importlib.util.find_spec("opentelemetry") is not None
            if found:
                from opentelemetry import propagate, trace
                from opentelemetry.trace.propagation.tracecontext import (
                    TraceContextTextMapPropagator,
                )
        except (ImportError, ValueError):
            found = False
        _otel = (
            (trace, propagate, trace.get_tracer("cbus"), TraceContextTextMapPropagator())
            if found
            else False
        )
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
    trace, propagate, tracer, _ = otel
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


def traceparent_of(span_context: Any) -> str | None:
    """A span context as a W3C traceparent (None: no span, or an invalid one)."""
    if span_context is None or not span_context.is_valid:
        return None
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def _previous_attempt(trace: Any, w3c: Any, traceparent: str | None) -> list[Any] | None:
    """The link to the previous attempt's span, from the `previous_span` header."""
    if traceparent is None:
        return None
    found = trace.get_current_span(w3c.extract({"traceparent": traceparent})).get_span_context()
    return [trace.Link(found)] if found.is_valid else None


@contextlib.contextmanager
def processing(delivery: Delivery) -> Iterator[None]:
    """The consumer span of one handler invocation; a failure sets ERROR and is recorded.

    A retry links to its previous attempt's span, named by the message's
    `previous_span` header; this attempt's span context is kept on the delivery
    (`Delivery.span`) for the worker to write there when it schedules the next.
    """
    trace, propagate, tracer, w3c = _load()
    h = delivery.headers
    carrier: dict[str, str] = {}
    if h.traceparent is not None:
        carrier["traceparent"] = h.traceparent
        if h.tracestate is not None:
            carrier["tracestate"] = h.tracestate
    with tracer.start_as_current_span(
        f"process {delivery.spec.kind}",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.CONSUMER,
        links=_previous_attempt(trace, w3c, h.previous_span),
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
        delivery.span = span.get_span_context()
        try:
            yield
        except BaseException as exc:
            _record(trace, span, exc)
            raise


def _record(trace: Any, span: Any, exc: BaseException) -> None:
    """Status ERROR and the exception event, whatever the exception's str() does."""
    try:
        span.record_exception(exc)
    except Exception:
        span.add_event("exception", {"exception.type": type(exc).__qualname__})
    span.set_status(trace.Status(trace.StatusCode.ERROR))
