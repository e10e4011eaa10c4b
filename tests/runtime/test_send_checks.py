"""The send-time check gives the verdict the worker's decode gives on the same wire value.

Untyped callers pass strings for UUIDs and enums, floats for decimals, dicts for
nested types. For each case the table states the verdict, and the test checks it
twice: through a generated sender, and by writing the same JSON with `pgmq.send`
as a foreign producer and letting a real worker decode it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest

MONEY = {"amount": decimal.Decimal("9.90"), "currency": "EUR"}
ACCEPTED = "accepted"

# (case, fields that differ from a valid CreateOrder, the verdict: ACCEPTED or the reason)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("valid", {}, ACCEPTED),
    ("uuid as str", {"order_id": str(uuid.UUID(int=7))}, ACCEPTED),
    ("uuid as bad str", {"order_id": "order-7"}, "Invalid UUID - at `$.order_id`"),
    ("enum as its value", {"priority": "high"}, ACCEPTED),
    ("enum as an unknown str", {"priority": "card"}, "Invalid enum value 'card' - at `$.priority`"),
    ("float for decimal", {"total": {"amount": 9.9, "currency": "EUR"}}, ACCEPTED),
    (
        "nan float for decimal",
        {"total": {"amount": float("nan"), "currency": "EUR"}},
        "Expected `decimal`, got `null` - at `$.total.amount`",
    ),
    ("dict for nested", {"total": {"amount": "9.90", "currency": "EUR"}}, ACCEPTED),
    (
        "dict for nested, missing a field",
        {"total": {"amount": "9.90"}},
        "Object missing required field `currency` - at `$.total`",
    ),
    (
        "dict for nested, breaking a pattern",
        {"total": {"amount": "9.90", "currency": "euro"}},
        "Expected `str` matching regex '^[A-Z]{3}$' - at `$.total.currency`",
    ),
    (
        "str for int",
        {"items": [{"sku": "a", "qty": "2", "price": MONEY}]},
        "Expected `int`, got `str` - at `$.items[0].qty`",
    ),
    (
        "bool for int",
        {"items": [{"sku": "a", "qty": True, "price": MONEY}]},
        "Expected `int`, got `bool` - at `$.items[0].qty`",
    ),
    ("tuple for list", {"items": ({"sku": "a", "qty": 1, "price": MONEY},)}, ACCEPTED),
    ("empty list", {"items": []}, "Expected `array` of length >= 1 - at `$.items`"),
    ("str for datetime", {"placed_at": "2026-01-02T03:04:05Z"}, ACCEPTED),
    ("int for optional str", {"note": 5}, "Expected `str | null`, got `int` - at `$.note`"),
    ("NUL in a str", {"customer_id": "c\x001"}, "NUL"),
]


def _fields(shop_orders: ModuleType, changes: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "order_id": uuid.uuid4(),
        "customer_id": "c1",
        "items": [
            shop_orders.LineItem(sku="a", qty=1, price=shop_orders.Money(**MONEY)),
        ],
        "total": shop_orders.Money(**MONEY),
        "placed_at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    }
    fields.update(changes)
    return fields


def _send_verdict(conn: psycopg.Connection[Any], shop_orders: ModuleType, fields: Any) -> str:
    try:
        with conn.transaction(force_rollback=True):
            shop_orders.send_create_order(conn, **fields)
    except cbus.ValidationError as exc:
        prefix = "Invalid CreateOrder: "
        assert str(exc).startswith(prefix), exc
        return str(exc).removeprefix(prefix)
    return ACCEPTED


def _produce(conn: psycopg.Connection[Any], shop_orders: ModuleType, fields: Any) -> Any:
    """Write the JSON a sender would write, as another PGMQ client: None if PostgreSQL refuses."""
    wire = cbus.codec.encode(shop_orders.CreateOrder(**fields))
    command_id = uuid.uuid4()
    headers = {
        "kind": "orders.CreateOrder",
        "version": 1,
        "command_id": str(command_id),
        "correlation_id": str(command_id),
    }
    try:
        with conn.transaction():
            conn.execute(
                "SELECT pgmq.send('orders__commands', %s::jsonb, %s::jsonb)",
                (wire.decode(), cbus.codec.encode(headers).decode()),
            )
    except psycopg.DataError as exc:
        return exc
    return command_id


def test_send_time_verdicts_match_the_workers_decode(
    dsn: str, conn: psycopg.Connection[Any], shop_orders: ModuleType
) -> None:
    class Handlers(shop_orders.OrdersHandlers):  # type: ignore[misc, name-defined]
        def create_order(self, cmd: Any, ctx: cbus.Context) -> Any:
            return shop_orders.CreateOrderResult(accepted=True)

    sent = [_send_verdict(conn, shop_orders, _fields(shop_orders, c)) for _, c, _ in CASES]
    produced = [_produce(conn, shop_orders, _fields(shop_orders, c)) for _, c, _ in CASES]
    conn.commit()
    cbus.Worker(dsn, [Handlers()], poll_interval=0.05).run(until_idle=True)

    decoded: list[str] = []
    for outcome in produced:
        if isinstance(outcome, psycopg.DataError):
            # PostgreSQL refused the JSON itself: no worker ever sees it.
            assert "\\u0000 cannot be converted to text" in str(outcome)
            decoded.append("NUL")
            continue
        record = cbus.get_command(conn, "orders", outcome)
        assert record is not None
        if record.status == "COMPLETED":
            decoded.append(ACCEPTED)
        else:
            assert record.status == "IN_TROUBLESHOOTING_QUEUE", record
            prefix = "Cannot decode `orders.CreateOrder`: "
            assert record.last_error_message is not None
            decoded.append(record.last_error_message.removeprefix(prefix))
    table = [(name, verdict) for name, _, verdict in CASES]
    # The NUL case: refused before any SQL (the caller's transaction stays usable).
    sent = ["NUL" if "NUL character" in v else v for v in sent]
    assert list(zip((n for n, _ in table), sent, strict=True)) == table
    assert list(zip((n for n, _ in table), decoded, strict=True)) == table


def test_a_refused_send_leaves_the_callers_transaction_usable(
    conn: psycopg.Connection[Any], shop_orders: ModuleType
) -> None:
    conn.execute("INSERT INTO orders VALUES (%s, 'c1')", (uuid.uuid4(),))
    with pytest.raises(cbus.ValidationError, match=r"NUL character \(\\u0000\)"):
        shop_orders.send_create_order(conn, **_fields(shop_orders, {"customer_id": "c\x00"}))
    with pytest.raises(cbus.ValidationError, match="Encoding objects of type object"):
        shop_orders.send_create_order(conn, **_fields(shop_orders, {"note": object()}))
    conn.commit()
    assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)


@pytest.mark.parametrize("n", [2**63, -(2**63) - 1, 10**29])
def test_integers_beyond_int64_are_refused_at_send(
    conn: psycopg.Connection[Any], testbus: ModuleType, n: int
) -> None:
    """cbus's `int` is PostgreSQL's bigint (one rule for the senders and the worker)."""
    with pytest.raises(cbus.ValidationError) as info:
        testbus.send_echo(conn, n=n)
    assert str(info.value) == (
        "Invalid Echo: Expected `int` within int64 (-2**63 to 2**63 - 1), cbus's `int` - at `$.n`"
    )
    with pytest.raises(cbus.ValidationError, match=r"within int64 .* - at `\$\.n`"):
        cbus.send_many(conn, [testbus.Echo(n=1), testbus.Echo(n=n)])
    for edge in (2**63 - 1, -(2**63)):
        testbus.send_echo(conn, n=edge)
    conn.commit()
    assert conn.execute("SELECT count(*) FROM cbus.command").fetchone() == (2,)
