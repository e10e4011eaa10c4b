"""OpenTelemetry across send and handle, with the SDK and an in-memory exporter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

from .helpers import drain
from .mixed import handlers

QUEUE = "testbus__commands"


class _Switched(InMemorySpanExporter):
    """Keeps spans only during a test that asks for them: the global provider stays."""

    on = False

    def export(self, spans: Any) -> Any:
        return super().export(spans) if self.on else SpanExportResult.SUCCESS


_EXPORTER = _Switched()


_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


def _global_provider(provider: TracerProvider | None) -> None:
    """Set (or clear) OpenTelemetry's global provider, as opentelemetry-test-utils does.

    The API sets it once per process; cleared after each test, the sends of later test
    modules write no `traceparent`, as in a process that never set one.
    """
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    if provider is not None:
        trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _global_provider(_PROVIDER)
    _EXPORTER.clear()
    _EXPORTER.on = True
    yield _EXPORTER
    _EXPORTER.on = False
    _EXPORTER.clear()
    _global_provider(None)


def _named(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_send_in_a_span_is_handled_in_the_same_trace(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, spans: InMemorySpanExporter
) -> None:
    with trace.get_tracer("app").start_as_current_span("checkout") as app:
        sent = testbus.send_echo(conn, n=1, text="ok")
    conn.commit()
    drain(dsn, [handlers(testbus)])

    [send] = _named(spans, "send testbus.Echo")
    [process] = _named(spans, "process testbus.Echo")
    trace_id = app.get_span_context().trace_id
    assert send.kind is SpanKind.PRODUCER and send.parent.span_id == app.get_span_context().span_id
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id == trace_id
    assert process.parent.span_id == send.context.span_id
    msg_id = conn.execute(
        "SELECT msg_id FROM cbus.command WHERE command_id = %s", (sent.command_id,)
    ).fetchone()
    assert msg_id is not None
    assert dict(process.attributes) == {
        "messaging.system": "pgmq",
        "messaging.destination.name": QUEUE,
        "messaging.message.id": str(msg_id[0]),
        "messaging.operation.type": "process",
        "cbus.command_id": str(sent.command_id),
        "cbus.attempt": 1,
    }
    assert process.status.status_code is StatusCode.UNSET


def test_failed_attempts_are_errors_and_a_retry_stays_in_the_trace(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, spans: InMemorySpanExporter
) -> None:
    testbus.send_flaky(conn, succeed_on=2)
    conn.commit()
    drain(dsn, [handlers(testbus)])

    first, second = sorted(
        _named(spans, "process testbus.Flaky"), key=lambda s: s.attributes["cbus.attempt"]
    )
    assert first.context.trace_id == second.context.trace_id
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    assert first.status.status_code is StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]
    assert second.status.status_code is StatusCode.UNSET


def test_a_foreign_traceparent_is_honoured(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, spans: InMemorySpanExporter
) -> None:
    trace_id = uuid.uuid4().hex
    headers = {
        "kind": "testbus.Echo",
        "version": 1,
        "command_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
        "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
    }
    conn.execute(
        "SELECT pgmq.send(%s, %s::jsonb, %s::jsonb)",
        (QUEUE, '{"n": 1, "text": "ok"}', json.dumps(headers)),
    )
    conn.commit()
    drain(dsn, [handlers(testbus)])
    [process] = _named(spans, "process testbus.Echo")
    assert f"{process.context.trace_id:032x}" == trace_id
    assert process.parent.span_id == 0x00F067AA0BA902B7


def test_sends_through_ctx_and_send_many_continue_the_handlers_trace(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, spans: InMemorySpanExporter
) -> None:
    class Chained(handlers(testbus).__class__):  # type: ignore[misc]
        def chain(self, cmd: Any, ctx: cbus.Context) -> None:
            cbus.send_many(ctx, [testbus.Echo(n=1, text="ok"), testbus.Echo(n=2, text="ok")])

    testbus.send_chain(conn, n=1)
    conn.commit()
    drain(dsn, [Chained()])
    [chain] = _named(spans, "process testbus.Chain")
    sends = _named(spans, "send testbus.Echo")
    echoes = _named(spans, "process testbus.Echo")
    assert len(sends) == len(echoes) == 2
    assert {s.parent.span_id for s in sends} == {chain.context.span_id}
    assert {e.parent.span_id for e in echoes} == {s.context.span_id for s in sends}
    assert {s.context.trace_id for s in [*sends, *echoes]} == {chain.context.trace_id}


FIRST_ATTEMPT = textwrap.dedent(
    """
    import json, sys
    import cbus
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    sys.path.insert(0, PATH)
    testbus = __import__(MODULE, fromlist=["testbus"])

    class FailOnce(testbus.TestbusHandlers):
        def flaky(self, cmd, ctx):
            worker.stop()  # this process runs the first attempt only
            raise cbus.TransientError("not in this process")

    worker = cbus.Worker(DSN, [FailOnce()], concurrency=1, poll_interval=0.05)
    worker.run()
    print(json.dumps([
        [s.name, f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}",
         s.attributes.get("cbus.attempt")]
        for s in exporter.get_finished_spans()
    ]))
    """
)


def test_a_retry_in_another_worker_process_links_to_the_previous_attempt(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, spans: InMemorySpanExporter
) -> None:
    """Attempt 1 fails in a worker process of its own; attempt 2 runs here, linked to it."""
    with trace.get_tracer("app").start_as_current_span("checkout") as app:
        sent = testbus.send_flaky(conn, succeed_on=2)
    conn.commit()
    code = (
        f"PATH = {str(testbus.__file__).rsplit('/', 2)[0]!r}\n"
        f"MODULE = {testbus.__name__!r}\nDSN = {dsn!r}\n" + FIRST_ATTEMPT
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    [(name, trace_id, span_id, attempt)] = json.loads(out.stdout.strip().splitlines()[-1])
    assert (name, attempt) == ("process testbus.Flaky", 1)
    assert trace_id == f"{app.get_span_context().trace_id:032x}"
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and (record.status, record.attempts) == ("PENDING", 1)
    conn.execute(f"UPDATE pgmq.q_{QUEUE} SET vt = now()")  # its backoff over at once
    conn.commit()

    drain(dsn, [handlers(testbus)])  # another worker, another process's retry
    [second] = _named(spans, "process testbus.Flaky")
    assert second.attributes["cbus.attempt"] == 2
    assert f"{second.context.trace_id:032x}" == trace_id
    assert second.context.span_id != int(span_id, 16)
    links = [(f"{k.context.trace_id:032x}", f"{k.context.span_id:016x}") for k in second.links]
    assert links == [(trace_id, span_id)]
    assert second.status.status_code is StatusCode.UNSET
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and (record.status, record.attempts) == ("COMPLETED", 2)


def test_an_operators_retry_links_to_the_attempt_that_set_the_command_aside(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, spans: InMemorySpanExporter
) -> None:
    sent = testbus.send_reject(conn, mode="permanent")
    conn.commit()
    drain(dsn, [handlers(testbus)])
    [first] = _named(spans, "process testbus.Reject")
    cbus.troubleshooting.retry(conn, "testbus", sent.command_id, operator="ops")
    conn.commit()
    spans.clear()
    drain(dsn, [handlers(testbus)])
    [second] = _named(spans, "process testbus.Reject")
    assert second.context.trace_id == first.context.trace_id
    assert [link.context.span_id for link in second.links] == [first.context.span_id]


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


def test_an_exception_whose_str_fails_is_still_the_handlers_failure(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, spans: InMemorySpanExporter
) -> None:
    """Recording it on the span must not replace it with the error str() raised."""

    class Bad(handlers(testbus).__class__):  # type: ignore[misc]
        def reject(self, cmd: Any, ctx: cbus.Context) -> None:
            raise _BadStr()

    sent = testbus.send_reject(conn, mode="x")
    conn.commit()
    drain(dsn, [Bad()])
    record = cbus.get_command(conn, "testbus", sent.command_id)
    assert record is not None and record.last_error_type == "_BadStr", record
    spans_ = _named(spans, "process testbus.Reject")
    assert [s.status.status_code for s in spans_] == [StatusCode.ERROR] * 2


BLOCK = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "opentelemetry":
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, Block())
    """
)


def test_without_opentelemetry_nothing_is_imported(dsn: str, testbus: ModuleType) -> None:
    """A send and a worker run with the package hidden: no opentelemetry module loads."""
    code = BLOCK + textwrap.dedent(
        f"""
        import psycopg, cbus
        sys.path.insert(0, {str(testbus.__file__).rsplit("/", 2)[0]!r})
        from {testbus.__name__.rpartition(".")[0]} import testbus
        with psycopg.connect({dsn!r}) as conn:
            testbus.send_echo(conn, n=1)
            conn.commit()
            h = conn.execute("SELECT headers FROM pgmq.q_testbus__commands").fetchone()[0]

        class H(testbus.TestbusHandlers):
            def echo(self, cmd, ctx):
                return testbus.EchoResult(n=cmd.n, text="")

        w = cbus.Worker({dsn!r}, [H()], poll_interval=0.05)
        w.run(until_idle=True)
        otel = sorted(m for m in sys.modules if "opentelemetry" in m)
        print(w.completed, "traceparent" in h, otel)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.strip() == "1 False []", out.stderr
