"""What the console's routes share: the `Console` (pool, sessions, templates, mode).

Apart from `app`, which builds the routes from `views` and `actions`: those import
this module, never `app`, so the console's modules import one way.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import jinja2
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from .security import Session, Sessions

__all__ = ["Console", "parse_uuid", "pretty", "when", "wants_json"]


class Console:
    """What the routes share: the pool, the sessions, the templates, the mode."""

    def __init__(self, dsn: str, token: str, *, read_only: bool = False) -> None:
        self.pool = AsyncConnectionPool(
            dsn, kwargs={"autocommit": True}, min_size=1, max_size=4, open=False
        )
        self.sessions = Sessions(token)
        self.read_only = read_only
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("cbus.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters["pretty"] = pretty
        self.env.filters["when"] = when
        self.env.filters["age"] = _age

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        session: Session | None = request.scope.get("cbus.session")
        html = self.env.get_template(name).render(
            session=session,
            csrf=session.csrf if session is not None else None,
            read_only=self.read_only,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def refuse(self, request: Request, status_code: int, why: str) -> Response:
        if wants_json(request):
            return JSONResponse({"error": why}, status_code=status_code)
        return self.render(request, "error.html", status_code, why=why)


def pretty(value: Any) -> str:
    """JSON data indented for a <pre> (escaped by the template like everything else)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def when(at: Any) -> str:
    if at is None:
        return "-"
    return str(at.isoformat(timespec="milliseconds"))


def _age(seconds: float) -> str:
    from ..stats import age

    return age(seconds)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.headers.get(
        "authorization", ""
    ).lower().startswith("bearer ")


def parse_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        return None
