"""The console's ASGI app: routes, the checks every request passes, rendering.

Pages are GETs that need a session; actions are POSTs that also need the same
origin, the page's CSRF token and a console not started `--read-only`. A request
that fails a check changes nothing. The DSN stays in the connection pool: no page,
header or log line carries it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .security import COOKIE, SECURITY_HEADERS, csrf_ok, same_origin
from .state import Console, wants_json

__all__ = ["Console", "create_app"]

log = logging.getLogger("cbus.console")
MAX_BODY = 1 << 20
Handler = Callable[[Request], Awaitable[Response]]


async def form_of(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each), at most 1 MiB."""
    body = await request.body()
    if len(body) > MAX_BODY:
        return {}
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(key, value)
    return fields


def page(handler: Handler) -> Handler:
    """A GET that needs a session: a browser without one goes to the login page."""

    async def wrapped(request: Request) -> Response:
        console: Console = request.app.state.console
        session = console.sessions.of(request)
        if session is None:
            if wants_json(request):
                return JSONResponse({"error": "a valid token is required"}, status_code=401)
            return RedirectResponse("/login", status_code=303)
        request.scope["cbus.session"] = session
        return await handler(request)

    return wrapped


def action(handler: Callable[[Request, dict[str, str]], Awaitable[Response]]) -> Handler:
    """A POST that changes something: session, same origin, CSRF, not read-only."""

    async def wrapped(request: Request) -> Response:
        console: Console = request.app.state.console
        session = console.sessions.of(request)
        if session is None:
            return JSONResponse({"error": "a valid token is required"}, status_code=401)
        request.scope["cbus.session"] = session
        if not same_origin(request):
            return console.refuse(request, 403, "Refused: the request came from another origin.")
        form = await form_of(request)
        if not csrf_ok(session, form):
            return console.refuse(request, 403, "Refused: the form's CSRF token is missing.")
        if console.read_only:
            return console.refuse(request, 403, "Refused: this console is read-only.")
        if not session.operator:
            return console.refuse(request, 403, "Refused: no operator name (X-Cbus-Operator).")
        return await handler(request, form)

    return wrapped


async def login_page(request: Request) -> Response:
    console: Console = request.app.state.console
    return console.render(request, "login.html", error=None, operator="")


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    if not same_origin(request):
        return console.refuse(request, 403, "Refused: the request came from another origin.")
    form = await form_of(request)
    operator = form.get("operator", "").strip()
    sid = console.sessions.login(form.get("token", ""), operator)
    if sid is None:
        why = "Wrong token." if operator else "Give your name: actions are recorded under it."
        return console.render(request, "login.html", 401, error=why, operator=operator)
    log.info("operator %s logged in", operator)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/")
    return response


async def logout(request: Request) -> Response:
    console: Console = request.app.state.console
    session = console.sessions.of(request)
    form = await form_of(request)
    if session is not None and same_origin(request) and csrf_ok(session, form):
        console.sessions.logout(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


class SecurityHeaders:
    """Adds the security headers (CSP first) to every response, static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    dsn: str,
    token: str,
    *,
    read_only: bool = False,
    allowed_hosts: list[str] | None = None,
    console: Console | None = None,
) -> Starlette:
    """The console as an ASGI app; its pool opens and closes with the app's lifespan.

    `allowed_hosts`: the Host names it answers (others get 400), against DNS
    rebinding: a page of another site whose name now points at 127.0.0.1.
    """
    from . import actions, views

    state = console or Console(dsn, token, read_only=read_only)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.pool.open()
        try:
            yield
        finally:
            await state.pool.close()

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", page(views.overview), methods=["GET"]),
        Route("/api/stats", page(views.stats_json), methods=["GET"]),
        Route("/tsq", page(views.troubleshooting), methods=["GET"]),
        Route("/tsq/bulk", action(actions.bulk_confirm), methods=["POST"]),
        Route("/tsq/bulk/run", action(actions.bulk_run), methods=["POST"]),
        Route("/search", page(views.search), methods=["GET"]),
        Route("/commands/{domain}/{command_id}", page(views.command), methods=["GET"]),
        Route("/commands/{domain}/{command_id}/{verb}", action(actions.act), methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("cbus.console", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = state
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(SecurityHeaders)
    return app
