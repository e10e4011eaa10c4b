"""The console over HTTP (a real uvicorn, httpx): auth, CSRF, Origin, read-only, escaping."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import cbus
import httpx
import psycopg
import pytest
from cbus.stats import domain_stats

from tests.runtime.helpers import drain
from tests.runtime.mixed import Mixed

from .conftest import Served

DSN_SECRET = "dsn-secret-Zq81"


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "no CSRF token on the page"
    return found.group(1)


def status_of(dsn: str, command_id: uuid.UUID) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        record = cbus.get_command(c, "testbus", command_id)
    assert record is not None
    return record.status


def operator_rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute(
            "SELECT command_id, event, operator, detail ->> 'reason' FROM cbus.audit"
            " WHERE operator IS NOT NULL AND operator <> 'setup' ORDER BY id"
        ).fetchall()


def test_every_page_needs_the_token(console: Served, mixed: Mixed) -> None:
    c = console.client()
    cid = mixed.tsq_rejected[0]
    for path in ["/", "/tsq", f"/commands/testbus/{cid}", "/search?q=x", "/api/stats"]:
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login", path
        assert c.get(path, headers={"Accept": "application/json"}).status_code == 401
        assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    wrong = c.post(
        "/login", data={"token": "nope", "operator": "eve"}, headers={"Origin": console.url}
    )
    assert wrong.status_code == 401 and "Wrong token." in wrong.text
    assert "set-cookie" not in wrong.headers
    noname = c.post("/login", data={"token": console.token, "operator": " "})
    assert noname.status_code == 401 and "Give your name" in noname.text


def test_login_sets_a_strict_http_only_cookie(console: Served, mixed: Mixed) -> None:
    c = console.client()
    form = {"token": console.token, "operator": "alice"}
    r = c.post("/login", data=form, headers={"Origin": console.url})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    page = c.get("/")
    assert page.status_code == 200 and "alice" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text  # no inline script: only <script src=...>
    assert page.headers["x-frame-options"] == "DENY"
    # Logging out ends the session on the server, not only in this browser.
    sid = c.cookies["cbus_console"]
    assert c.post("/logout", data={"csrf": csrf_of(page)}).status_code == 303
    again = console.client(cookies={"cbus_console": sid}).get("/")
    assert again.status_code == 303


def test_bearer_token_for_scripts(console: Served, mixed: Mixed, dsn: str) -> None:
    c = console.client(headers={"Authorization": f"Bearer {console.token}"})
    got = c.get("/api/stats").json()
    with psycopg.connect(dsn, autocommit=True) as ac:
        expected = json.loads(cbus.codec.encode(domain_stats(ac)))
    for d, e in zip(got, expected, strict=True):
        d.pop("oldest_due_age"), e.pop("oldest_due_age")
    assert got == expected
    # Acting needs a name: the token alone says nothing about who acts.
    cid = mixed.tsq_rejected[0]
    assert c.post(f"/commands/testbus/{cid}/retry").status_code == 403
    r = c.post(f"/commands/testbus/{cid}/retry", headers={"X-Cbus-Operator": "robot"})
    assert r.status_code == 303
    assert status_of(dsn, cid) == "PENDING"
    assert operator_rows(dsn) == [(cid, "retried", "robot", None)]


def test_an_action_without_csrf_or_from_another_origin_changes_nothing(
    console: Served, mixed: Mixed, dsn: str
) -> None:
    c = console.login("alice")
    cid = mixed.tsq_rejected[0]
    page = c.get(f"/commands/testbus/{cid}")
    token = csrf_of(page)
    url = f"/commands/testbus/{cid}/cancel"
    assert c.post(url, data={"reason": "x"}).status_code == 403
    assert c.post(url, data={"reason": "x", "csrf": "forged"}).status_code == 403
    evil = {"Origin": "http://evil.example"}
    assert c.post(url, data={"reason": "x", "csrf": token}, headers=evil).status_code == 403
    assert status_of(dsn, cid) == "IN_TROUBLESHOOTING_QUEUE"
    assert operator_rows(dsn) == []
    ok = c.post(url, data={"reason": "duplicate", "csrf": token}, headers={"Origin": console.url})
    assert ok.status_code == 303
    assert status_of(dsn, cid) == "CANCELED"
    assert operator_rows(dsn) == [(cid, "canceled", "alice", "duplicate")]
    # The same action again loses the race, as in the CLI: 409, nothing changes.
    again = c.post(url, data={"reason": "twice", "csrf": token})
    assert again.status_code == 409 and "canceled by alice" in again.text
    assert len(operator_rows(dsn)) == 1


def test_read_only_offers_and_accepts_no_action(
    console_factory: Callable[..., Served], mixed: Mixed, dsn: str
) -> None:
    ro = console_factory(read_only=True)
    c = ro.login("bob")
    cid = mixed.tsq_rejected[0]
    page = c.get(f"/commands/testbus/{cid}")
    assert page.status_code == 200 and "read-only" in page.text
    assert "/retry" not in page.text and "/cancel" not in page.text
    assert "/tsq/bulk" not in c.get("/tsq").text
    token = csrf_of(page)  # the logout form's
    posts = {
        f"/commands/testbus/{cid}/retry": {},
        f"/commands/testbus/{cid}/cancel": {"reason": "x"},
        f"/commands/testbus/{cid}/complete": {"result": "null"},
        "/tsq/bulk": {"verb": "cancel"},
        "/tsq/bulk/run": {"verb": "cancel", "reason": "x", "ids": f"testbus:{cid}"},
    }
    for url, data in posts.items():
        r = c.post(url, data={**data, "csrf": token}, headers={"Origin": ro.url})
        assert r.status_code == 403, url
        assert "read-only" in r.text
    assert status_of(dsn, cid) == "IN_TROUBLESHOOTING_QUEUE"
    assert operator_rows(dsn) == []


def test_payloads_headers_and_errors_show_as_text(
    console: Served, dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    evil = "<script>alert('x')</script>"

    class Handlers(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            raise cbus.PermanentError("XSS<b>", f"message {evil}")

    sent = testbus.send_echo(conn, n=1, text=f"payload {evil}")
    conn.commit()
    drain(dsn, [Handlers()])
    conn.execute(
        "UPDATE pgmq.a_testbus__commands SET headers = headers || %s::jsonb",
        (json.dumps({"x-note": f"header {evil}"}),),
    )
    conn.commit()
    c = console.login(f"op {evil}")
    for path in [f"/commands/testbus/{sent.command_id}", "/tsq", "/tsq?kind=" + evil, "/"]:
        page = c.get(path)
        assert page.status_code in (200, 400), path
        assert "<script>alert" not in page.text and "<b>" not in page.text, path
    page = c.get(f"/commands/testbus/{sent.command_id}").text
    for shown in ("payload", "header", "message"):
        assert html.escape(f"{shown} {evil}").replace("&#x27;", "&#39;") in page, shown
    assert "XSS&lt;b&gt;" in page


def test_complete_checks_the_result_and_bulk_confirms_the_count(
    console: Served, mixed: Mixed, dsn: str
) -> None:
    c = console.login("carol")
    broken = mixed.tsq_broken[0]
    token = csrf_of(c.get(f"/commands/testbus/{broken}"))
    url = f"/commands/testbus/{broken}/complete"
    wrong = c.post(url, data={"csrf": token, "result": '{"n": "one"}', "reason": "by hand"})
    assert wrong.status_code == 400 and "Invalid result for `testbus.Echo`" in wrong.text
    assert "&#34;one&#34;" in wrong.text or "&quot;one&quot;" in wrong.text  # kept in the form
    assert c.post(url, data={"csrf": token, "result": "{nope"}).status_code == 400
    assert status_of(dsn, broken) == "IN_TROUBLESHOOTING_QUEUE"
    ok = c.post(url, data={"csrf": token, "result": '{"n": 1, "text": "fixed"}'})
    assert ok.status_code == 303
    with psycopg.connect(dsn, autocommit=True) as ac:
        record = cbus.get_command(ac, "testbus", broken)
    assert record is not None and record.status == "COMPLETED"
    assert record.result == {"n": 1, "text": "fixed"}

    # Bulk: the confirmation counts what the filters select; only those change.
    confirm = c.post("/tsq/bulk", data={"csrf": token, "verb": "cancel", "kind": "Reject"})
    assert confirm.status_code == 200
    assert f'data-count="{len(mixed.tsq_rejected)}"' in confirm.text
    ids = re.search(r'name="ids" value="([^"]+)"', confirm.text)
    assert ids is not None
    assert {uuid.UUID(i.split(":")[1]) for i in ids.group(1).split(",")} == set(mixed.tsq_rejected)
    assert all(status_of(dsn, r) == "IN_TROUBLESHOOTING_QUEUE" for r in mixed.tsq_rejected)
    run = c.post(
        "/tsq/bulk/run",
        data={"csrf": token, "verb": "cancel", "reason": "bulk", "ids": ids.group(1)},
    )
    assert run.status_code == 200 and 'data-done="2" data-refused="0"' in run.text
    assert all(status_of(dsn, r) == "CANCELED" for r in mixed.tsq_rejected)
    assert status_of(dsn, mixed.tsq_broken[1]) == "IN_TROUBLESHOOTING_QUEUE"


def test_search_and_the_dsn_never_shown(
    console_factory: Callable[..., Served],
    mixed: Mixed,
    dsn: str,
    conn: psycopg.Connection[Any],
    testbus: ModuleType,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Trust auth ignores the password: the console connects, and must never show it.
    served = console_factory(dsn=f"{dsn} password={DSN_SECRET}")
    c = served.login("dave")
    cid = mixed.completed[0]
    found = c.get(f"/search?q={cid}")
    assert found.status_code == 303
    assert found.headers["location"] == f"/commands/testbus/{cid}"
    workflow = uuid.uuid4()
    two = [testbus.send_echo(conn, n=i, correlation_id=workflow).command_id for i in (1, 2)]
    conn.commit()
    by_corr = c.get(f"/search?q={workflow}")
    assert by_corr.status_code == 200
    assert all(f"/commands/testbus/{t}" in by_corr.text for t in two)
    other = c.get(f"/commands/testbus/{two[0]}").text
    assert f'href="/commands/testbus/{two[1]}"' in other  # its correlation, linked
    assert "a UUID" in c.get("/search?q=nonsense").text
    pages = [c.get(p) for p in ["/", "/tsq", f"/commands/testbus/{cid}", "/api/stats"]]
    pages.append(c.get("/commands/testbus/not-a-uuid"))
    for page in pages:
        assert DSN_SECRET not in page.text
        assert DSN_SECRET not in str(page.headers)
    out, err = capfd.readouterr()
    assert DSN_SECRET not in out + err


def test_troubleshooting_pages_by_cursor_with_filters(console: Served, mixed: Mixed) -> None:
    c = console.login("erin")
    seen: list[str] = []
    url = "/tsq?domain=testbus&limit=1"
    while url:
        page = c.get(url)
        assert page.status_code == 200
        seen += re.findall(r'<tr data-command-id="([0-9a-f-]+)"', page.text)
        found = re.search(r'id="next" href="([^"]+)"', page.text)
        url = html.unescape(found.group(1)) if found else ""
        assert not url or ("domain=testbus" in url and "limit=1" in url)
    expected = mixed.tsq_rejected + mixed.tsq_broken
    assert sorted(seen) == sorted(str(i) for i in expected)
    kinds = c.get("/tsq?kind=Reject&error_code=CANNOT").text
    assert sorted(re.findall(r'<tr data-command-id="([0-9a-f-]+)"', kinds)) == sorted(
        str(i) for i in mixed.tsq_rejected
    )
    assert 'id="empty"' in c.get("/tsq?error_code=NO_SUCH_CODE").text
    bad = c.get("/tsq?after=garbage")
    assert bad.status_code == 400 and "Invalid cursor" in bad.text


def test_complete_refuses_a_wrong_result_without_the_generated_package(
    console: Served, mixed: Mixed, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `cbus console` without --domains: no generated class for testbus.Echo in this
    # process, so the result is checked against the JSON schema install recorded, by
    # the same function `cbus tsq complete` uses.
    from cbus import registry

    monkeypatch.delitem(registry._by_kind, "testbus.Echo")
    c = console.login("dave")
    broken = mixed.tsq_broken[0]
    token = csrf_of(c.get(f"/commands/testbus/{broken}"))
    url = f"/commands/testbus/{broken}/complete"
    wrong = c.post(url, data={"csrf": token, "result": '{"n": "one"}', "reason": "by hand"})
    assert wrong.status_code == 400
    assert "Invalid result for `testbus.Echo` (version 1, as installed)" in wrong.text
    assert status_of(dsn, broken) == "IN_TROUBLESHOOTING_QUEUE"
    ok = c.post(url, data={"csrf": token, "result": '{"n": 1, "text": "fixed"}'})
    assert ok.status_code == 303
    assert status_of(dsn, broken) == "COMPLETED"
