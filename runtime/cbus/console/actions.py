"""The console's actions: retry, cancel, complete one command, or a filtered selection.

Each calls the function `cbus tsq` calls (`cbus.retry`, `cbus.cancel`,
`cbus.complete`, async twins), on an autocommit connection as the CLI does: the
same race-safe conditional update, the same audit row under the operator's name.
The checks before (session, origin, CSRF, read-only) are in `app.action`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..errors import CannotRetry, ConcurrentOperationError, NotFoundError, ValidationError
from ..troubleshooting import (
    cancel_async,
    complete_async,
    list_troubleshooting_async,
    retry_async,
)
from . import views
from .results import parse_result
from .state import Console, parse_uuid

__all__ = ["act", "bulk_confirm", "bulk_run"]

log = logging.getLogger("cbus.console")
BULK_MAX = 1000
VERBS = {"retry": "retried", "cancel": "canceled", "complete": "completed"}
REFUSED = (ConcurrentOperationError, CannotRetry, NotFoundError, ValidationError, ValueError)


def _operator(request: Request) -> str:
    return str(request.scope["cbus.session"].operator)


async def _one(
    console: Console, verb: str, domain: str, command_id: uuid.UUID, operator: str, **kw: Any
) -> None:
    async with console.pool.connection() as conn:
        if verb == "retry":
            await retry_async(conn, domain, command_id, operator=operator, reason=kw["reason"])
        elif verb == "cancel":
            await cancel_async(conn, domain, command_id, operator=operator, reason=kw["reason"])
        else:
            await complete_async(conn, domain, command_id, operator=operator, **kw)
    log.info("operator %s %s command %s in domain %s", operator, VERBS[verb], command_id, domain)


async def act(request: Request, form: dict[str, str]) -> Response:
    """POST /commands/{domain}/{command_id}/{retry|cancel|complete}."""
    console: Console = request.app.state.console
    domain, verb = request.path_params["domain"], request.path_params["verb"]
    command_id = parse_uuid(request.path_params["command_id"])
    if verb not in VERBS or command_id is None:
        return console.refuse(request, 404, "No such action.")
    reason = form.get("reason", "").strip() or None
    result_text = form.get("result", "")
    kw: dict[str, Any] = {"reason": reason}
    try:
        if verb == "cancel" and reason is None:
            raise ValidationError("Give a reason to cancel: it goes into the audit trail.")
        if verb == "complete":
            kw["result"] = parse_result(result_text)
        await _one(console, verb, domain, command_id, _operator(request), **kw)
    except REFUSED as exc:
        status = 409 if isinstance(exc, ConcurrentOperationError | CannotRetry) else 400
        if isinstance(exc, NotFoundError):
            status = 404
        return await views.command(
            request,
            status_code=status,
            error=str(exc),
            result_text=result_text,
            reason=reason or "",
        )
    target = f"/commands/{domain}/{command_id}?done={VERBS[verb]}"
    return RedirectResponse(target, status_code=303)


async def _selection(console: Console, filters: dict[str, str | None]) -> list[tuple[str, str]]:
    """The (domain, command_id) of every command the filters match, at most BULK_MAX."""
    found: list[tuple[str, str]] = []
    after = None
    async with console.pool.connection() as conn:
        while len(found) < BULK_MAX:
            page = await list_troubleshooting_async(
                conn, limit=min(500, BULK_MAX - len(found)), after=after, **filters
            )
            found += [(e.domain, str(e.command_id)) for e in page.items]
            if page.next_cursor is None:
                break
            after = page.next_cursor
    return found


async def bulk_confirm(request: Request, form: dict[str, str]) -> Response:
    """Step one of a bulk action: how many commands it affects, and which, to confirm."""
    console: Console = request.app.state.console
    verb = form.get("verb", "")
    filters = views.filters_of(form)
    if verb not in ("retry", "cancel"):
        return console.refuse(request, 400, "Bulk actions are retry and cancel.")
    try:
        selection = await _selection(console, filters)
    except ValueError as exc:
        return console.refuse(request, 400, str(exc))
    return console.render(
        request,
        "bulk.html",
        verb=verb,
        filters=filters,
        selection=selection,
        ids=",".join(f"{d}:{c}" for d, c in selection),
        capped=len(selection) >= BULK_MAX,
        outcome=None,
    )


async def bulk_run(request: Request, form: dict[str, str]) -> Response:
    """Step two: act on exactly the commands the operator confirmed, one by one."""
    console: Console = request.app.state.console
    verb = form.get("verb", "")
    reason = form.get("reason", "").strip() or None
    if verb not in ("retry", "cancel"):
        return console.refuse(request, 400, "Bulk actions are retry and cancel.")
    if verb == "cancel" and reason is None:
        return console.refuse(
            request, 400, "Give a reason to cancel: it goes into the audit trail."
        )
    targets: list[tuple[str, uuid.UUID]] = []
    for item in filter(None, form.get("ids", "").split(",")):
        domain, _, text = item.partition(":")
        command_id = parse_uuid(text)
        if command_id is None or not domain:
            return console.refuse(request, 400, f"Not a command: {item}")
        targets.append((domain, command_id))
    if len(targets) > BULK_MAX:
        return console.refuse(request, 400, f"At most {BULK_MAX} commands at once.")
    done, refused = [], []
    for domain, command_id in targets:
        try:
            await _one(console, verb, domain, command_id, _operator(request), reason=reason)
        except REFUSED as exc:
            refused.append((domain, str(command_id), str(exc)))
        else:
            done.append((domain, str(command_id)))
    return console.render(
        request,
        "bulk.html",
        verb=verb,
        filters=views.filters_of(form),
        selection=[],
        ids="",
        capped=False,
        outcome={"done": done, "refused": refused},
    )
