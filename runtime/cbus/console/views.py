"""The console's pages: overview, troubleshooting queue, one command, search (reads only)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from .. import codec
from ..errors import NotFoundError
from ..names import IN_TROUBLESHOOTING
from ..stats import domain_names_async, domain_stats_async
from ..store import get_command_async
from ..troubleshooting import list_troubleshooting_async, show_command_async
from ..waiting_async import trace_async
from .results import result_checked_against
from .state import Console, parse_uuid

__all__ = ["command", "overview", "search", "stats_json", "troubleshooting"]

PAGE_SIZE = 50
FILTERS = ("domain", "kind", "error_code")


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def overview(request: Request) -> Response:
    console = _console(request)
    async with console.pool.connection() as conn:
        found = await domain_stats_async(conn)
    return console.render(request, "overview.html", stats=found)


async def stats_json(request: Request) -> Response:
    console = _console(request)
    async with console.pool.connection() as conn:
        found = await domain_stats_async(conn)
    return Response(codec.encode(found), media_type="application/json")


def filters_of(source: Any) -> dict[str, str | None]:
    """The troubleshooting filters of a query string or form; empty means any."""
    return {name: (source.get(name) or "").strip() or None for name in FILTERS}


async def troubleshooting(request: Request) -> Response:
    console = _console(request)
    filters = filters_of(request.query_params)
    after = request.query_params.get("after") or None
    limit = request.query_params.get("limit", "")
    page_size = min(int(limit), 500) if limit.isdigit() and int(limit) > 0 else PAGE_SIZE
    error = None
    async with console.pool.connection() as conn:
        domains = await domain_names_async(conn)
        try:
            found = await list_troubleshooting_async(conn, limit=PAGE_SIZE, after=after, **filters)
        except ValueError as exc:
            error, found = str(exc), None
    if found is None:
        return console.render(
            request,
            "tsq.html",
            400,
            filters=filters,
            domains=domains,
            items=[],
            next_cursor=None,
            after=None,
            limit="",
            error=error,
        )
    return console.render(
        request,
        "tsq.html",
        filters=filters,
        domains=domains,
        items=found.items,
        next_cursor=found.next_cursor,
        after=after,
        limit=limit if page_size != PAGE_SIZE else "",
        error=None,
    )


async def command(request: Request, *, status_code: int = 200, **extra: Any) -> Response:
    """One command; the action handlers render it again with their outcome (`extra`)."""
    console = _console(request)
    domain = request.path_params["domain"]
    command_id = parse_uuid(request.path_params["command_id"])
    if command_id is None:
        return console.refuse(request, 404, "Not a command_id.")
    async with console.pool.connection() as conn:
        try:
            detail = await show_command_async(conn, domain, command_id)
        except NotFoundError as exc:
            return console.refuse(request, 404, str(exc))
        correlated = [
            r
            for r in await trace_async(conn, detail.record.correlation_id)
            if (r.domain, r.command_id) != (domain, command_id)
        ]
    context: dict[str, Any] = {
        "notice": request.query_params.get("done"),
        "error": None,
        "result_text": "",
        "reason": "",
        **extra,
    }
    return console.render(
        request,
        "command.html",
        status_code,
        d=detail,
        r=detail.record,
        correlated=correlated,
        actionable=detail.record.status == IN_TROUBLESHOOTING and not console.read_only,
        checked_against=result_checked_against(detail.record.kind),
        **context,
    )


async def search(request: Request) -> Response:
    """By command_id (in every domain) or correlation_id; one command found opens it."""
    console = _console(request)
    text = (request.query_params.get("q") or "").strip()
    wanted = parse_uuid(text) if text else None
    if wanted is None:
        why = "Give a command_id or a correlation_id (a UUID)." if text else None
        return console.render(request, "search.html", q=text, by_id=[], by_corr=[], error=why)
    async with console.pool.connection() as conn:
        by_id = [
            r
            for name in await domain_names_async(conn)
            if (r := await get_command_async(conn, name, wanted)) is not None
        ]
        by_corr = await trace_async(conn, wanted)
    if len(by_id) == 1 and all(c.command_id == wanted for c in by_corr):
        r = by_id[0]
        return RedirectResponse(f"/commands/{r.domain}/{r.command_id}", status_code=303)
    return console.render(request, "search.html", q=text, by_id=by_id, by_corr=by_corr, error=None)


def json_error(status_code: int, why: str) -> Response:
    return JSONResponse({"error": why}, status_code=status_code)
