"""Who may use the console: the token, sessions, CSRF tokens, Origin and security headers.

A browser logs in with the token and an operator name; the console answers with a
session cookie (HttpOnly, SameSite=Strict) naming a session it keeps in memory, with
its own CSRF token that every form posts back. A script sends
`Authorization: Bearer TOKEN` instead (and `X-Cbus-Operator: NAME` to act): no
cookie, so no CSRF token either. Every comparison with a secret is constant-time.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

__all__ = ["COOKIE", "SECURITY_HEADERS", "Session", "Sessions", "same_origin"]

COOKIE = "cbus_console"
SESSION_SECONDS = 12 * 3600

# No inline script or style anywhere: the pages load /static/console.{js,css} only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it, browsers post `Origin: null`, which the check refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in operator. `csrf` is None for a Bearer request (no cookie to forge)."""

    operator: str
    csrf: str | None
    expires: float = field(default=0.0)


def equal(given: str, secret: str) -> bool:
    """Constant-time comparison of two secrets (different lengths never match)."""
    return hmac.compare_digest(given.encode(), secret.encode())


class Sessions:
    """The console's sessions, kept in memory: a restart logs everyone out."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._by_id: dict[str, Session] = {}

    def login(self, token: str, operator: str) -> str | None:
        """A new session id for a right token and a name; None otherwise."""
        if not equal(token, self.token) or not operator.strip():
            return None
        now = time.time()
        self._by_id = {k: s for k, s in self._by_id.items() if s.expires > now}
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = Session(
            operator.strip(), secrets.token_urlsafe(32), now + SESSION_SECONDS
        )
        return sid

    def logout(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def of(self, request: Request) -> Session | None:
        """The request's session: its Bearer token, else its cookie; None when neither."""
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() == "bearer" and given:
            if not equal(given.strip(), self.token):
                return None
            operator = request.headers.get("x-cbus-operator", "").strip()
            return Session(operator, None)
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        # Look up by a constant-time scan: no timing tells which ids exist.
        found = None
        for key, session in self._by_id.items():
            if equal(sid, key):
                found = session
        if found is None or found.expires < time.time():
            return None
        return found


def same_origin(request: Request) -> bool:
    """False when the request says it comes from another origin (Origin or Referer).

    Browsers send Origin with every POST; a client that sends neither is a script,
    which a cookie cannot authenticate without the page's CSRF token anyway.
    """
    host = request.headers.get("host", "")
    expected = {f"http://{host}", f"https://{host}"}
    origin = request.headers.get("origin")
    if origin is not None:
        return origin in expected
    referer = request.headers.get("referer")
    if referer is not None:
        return any(referer == o or referer.startswith(o + "/") for o in expected)
    return True


def csrf_ok(session: Session, form: dict[str, Any]) -> bool:
    """A cookie session's POST carries its CSRF token; a Bearer request needs none."""
    if session.csrf is None:
        return True
    given = form.get("csrf")
    return isinstance(given, str) and equal(given, session.csrf)
