"""The console in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).

Skips with the reason when Chromium or its driver is not on the machine (.ci/run
installs both). Set CBUS_CONSOLE_SCREENSHOT=docs/console.png to refresh the
screenshot the docs show.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from cbus.stats import domain_stats

from tests.runtime.helpers import running, wait_for
from tests.runtime.mixed import Mixed, populate

from .conftest import Served

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
QUEUE_FIELDS = ["depth", "due", "delayed", "in_flight", "troubleshooting"]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    pytest.skip(
        "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture
def browser() -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="cbus-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=DRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def fixed(testbus: ModuleType) -> Any:
    class Fixed(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            return testbus.EchoResult(n=cmd.n, text="fixed")

    return Fixed()


def screenshot(b: Any) -> None:
    """The page as PNG: always taken, written where CBUS_CONSOLE_SCREENSHOT says."""
    b.set_window_size(1400, 1500)
    png = b.get_screenshot_as_png()
    b.set_window_size(1400, 1100)
    assert png.startswith(b"\x89PNG")
    if shot := os.environ.get("CBUS_CONSOLE_SCREENSHOT"):
        Path(shot).write_bytes(png)


def ended(dsn: str, command_id: uuid.UUID, status: str = "COMPLETED") -> bool:
    with psycopg.connect(dsn, autocommit=True) as ac:
        record = cbus.get_command(ac, "testbus", command_id)
    return record is not None and record.status == status


def test_an_operator_works_the_troubleshooting_queue(
    browser: Any,
    console: Served,
    dsn: str,
    conn: psycopg.Connection[Any],
    testbus: ModuleType,
) -> None:
    m: Mixed = populate(dsn, conn, testbus)
    b = browser
    wait: Callable[..., Any] = WebDriverWait(b, 20).until

    def text(css: str) -> str:
        return str(b.find_element(By.CSS_SELECTOR, css).text)

    def status() -> str:
        return text("#status")

    # Log in: every page sends a browser without a session to the login form.
    b.get(console.url + "/tsq")
    assert b.current_url == console.url + "/login"
    b.find_element(By.ID, "token").send_keys(console.token)
    b.find_element(By.ID, "operator").send_keys("alice")
    b.find_element(By.CSS_SELECTOR, "#login button").click()
    wait(lambda d: d.current_url == console.url + "/")

    # The overview's numbers are the database's, and the table refreshes itself.
    with psycopg.connect(dsn, autocommit=True) as ac:
        expected = {d.domain: d for d in domain_stats(ac)}
    # The table refreshes itself: a row read while it is replaced is read again.
    fresh = WebDriverWait(b, 20, ignored_exceptions=(StaleElementReferenceException,)).until

    def overview(_: Any) -> tuple[list[str], dict[str, str]]:
        rows = b.find_elements(By.CSS_SELECTOR, "#overview tbody tr[data-domain]")
        domains = sorted(str(r.get_attribute("data-domain")) for r in rows)
        fields = [*QUEUE_FIELDS, "completed_1m", "failed_1m", "completed_1h", "failed_1h"]
        return domains, {f: text(f'tr[data-domain="testbus"] td[data-field="{f}"]') for f in fields}

    domains, shown = fresh(overview)
    assert domains == sorted(expected)
    assert shown == {f: str(getattr(expected["testbus"], f)) for f in shown}
    assert shown["troubleshooting"] == str(len(m.tsq_rejected) + len(m.tsq_broken))
    fresh(lambda d: d.find_element(By.ID, "overview").get_attribute("data-refreshed"))

    # Filter the troubleshooting queue: domain and error code.
    b.find_element(By.LINK_TEXT, "Troubleshooting").click()
    wait(lambda d: d.find_elements(By.ID, "f-domain"))  # a click does not wait for the page
    Select(b.find_element(By.ID, "f-domain")).select_by_value("testbus")
    b.find_element(By.ID, "f-error_code").send_keys("BROKEN")
    b.find_element(By.CSS_SELECTOR, "#filters button").click()
    wait(lambda d: "error_code=BROKEN" in d.current_url)
    listed = [
        uuid.UUID(r.get_attribute("data-command-id"))
        for r in b.find_elements(By.CSS_SELECTOR, "#tsq tbody tr[data-command-id]")
    ]
    assert sorted(listed) == sorted(m.tsq_broken)

    # Open a command and retry it; a worker then completes it.
    first = m.tsq_broken[0]
    b.find_element(By.CSS_SELECTOR, f'tr[data-command-id="{first}"] a.cid').click()
    wait(lambda d: d.find_elements(By.ID, "status"))
    assert status() == "IN_TROUBLESHOOTING_QUEUE"
    assert "BROKEN" in text("#last-error")
    b.find_element(By.CSS_SELECTOR, "#retry input[name=reason]").send_keys("fixed the bug")
    b.find_element(By.CSS_SELECTOR, "#retry button").click()
    wait(lambda d: "done=retried" in d.current_url)
    assert status() == "PENDING"
    # (The populated queue keeps messages leased for an hour: a worker that runs
    # until idle would wait for them, so this one runs until the command is done.)
    with running(dsn, [fixed(testbus)]):
        wait_for(lambda: ended(dsn, first))
    b.refresh()
    assert status() == "COMPLETED"
    assert '"fixed"' in text("#result")
    assert "retried" in text("#audit") and "alice" in text("#audit")

    # Cancel another.
    b.get(f"{console.url}/commands/testbus/{m.tsq_rejected[0]}")
    b.find_element(By.CSS_SELECTOR, "#cancel input[name=reason]").send_keys("not wanted")
    b.find_element(By.CSS_SELECTOR, "#cancel button").click()
    wait(lambda d: "done=canceled" in d.current_url)
    assert status() == "CANCELED"

    # Complete a third: a result that does not fit EchoResult is refused.
    third = m.tsq_broken[1]
    b.get(f"{console.url}/commands/testbus/{third}")
    screenshot(b)
    box = b.find_element(By.CSS_SELECTOR, "#complete textarea[name=result]")
    box.send_keys('{"n": "one"}')
    b.find_element(By.CSS_SELECTOR, "#complete button").click()
    # The click returns before the answer's page loads: wait for it, not for the old one.
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#error"))
    assert "Invalid result for `testbus.Echo`" in text("#error")
    assert status() == "IN_TROUBLESHOOTING_QUEUE"
    box = b.find_element(By.CSS_SELECTOR, "#complete textarea[name=result]")
    box.clear()
    box.send_keys('{"n": 1, "text": "by hand"}')
    b.find_element(By.CSS_SELECTOR, "#complete button").click()
    wait(lambda d: "done=completed" in d.current_url)
    assert status() == "COMPLETED"
    with psycopg.connect(dsn, autocommit=True) as ac:
        record = cbus.get_command(ac, "testbus", third)
    assert record is not None and record.result == {"n": 1, "text": "by hand"}

    # A payload that is a script shows as text and never runs.
    evil = testbus.send_echo(conn, n=7, text="<script>window.pwned = 1</script>").command_id
    conn.commit()

    class Broken(testbus.TestbusHandlers):  # type: ignore[misc, name-defined]
        def echo(self, cmd: Any, ctx: cbus.Context) -> Any:
            raise cbus.PermanentError("BAD_INPUT", "<img src=x onerror='window.pwned=2'>")

    with running(dsn, [Broken()]):
        wait_for(lambda: ended(dsn, evil, "IN_TROUBLESHOOTING_QUEUE"))
    b.get(f"{console.url}/commands/testbus/{evil}")
    assert "<script>window.pwned = 1</script>" in text("#payload")
    assert "<img src=x" in text("#error-message")
    time.sleep(0.2)
    assert b.execute_script("return window.pwned === undefined") is True
