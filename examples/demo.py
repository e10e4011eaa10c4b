"""The main job, end to end: `make demo`.

Starts the embedded PostgreSQL (unless CBUS_DSN is set), regenerates the typed
package from schemas/, sends 10,000 CreateOrder commands through the generated
sender inside transactions that also write the business rows, drains them with a
worker whose handlers subclass the generated stubs, and prints a summary. Exits 1
if any command is lost.

Some orders fail on purpose, to show each ending: one in 1,000 names a discontinued
item (PermanentError: the troubleshooting queue), one in 1,000 an item out of stock
(a declared business error: FAILED), one in 250 a flaky customer (TransientError on
the first attempt: retried, then completed). `--keep` keeps the embedded server
running after the summary, with the commands to look at them, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "generated"), str(ROOT)]

import cbus  # noqa: E402
from cbus.devdb import DevServer  # noqa: E402

TERMINAL = ("COMPLETED", "FAILED", "IN_TROUBLESHOOTING_QUEUE", "CANCELED")


def regenerate() -> None:
    cbgen = Path(sys.executable).with_name("cbgen")
    subprocess.run([str(cbgen), "generate"], cwd=ROOT, check=True)


def prepare(dsn: str) -> None:
    from shop import orders

    with psycopg.connect(dsn, autocommit=True) as conn:
        cbus.install(conn)
        orders.install(conn)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS demo_orders (order_id uuid PRIMARY KEY,"
            " customer_id text NOT NULL, status text NOT NULL, accepted_at timestamptz)"
        )


def send_all(dsn: str, total: int, per_transaction: int) -> list[uuid.UUID]:
    """Each transaction writes business rows and sends their commands: no dual write."""
    from shop import orders

    ids: list[uuid.UUID] = []
    placed_at = dt.datetime.now(dt.UTC)
    with psycopg.connect(dsn) as conn:
        for start in range(0, total, per_transaction):
            with conn.transaction():
                for n in range(start, min(start + per_transaction, total)):
                    order_id = uuid.uuid4()
                    sku = f"SKU-{n % 1000:04d}"
                    if n % 1000 == 999:
                        sku = "DISCONTINUED"
                    elif n % 1000 == 500:
                        sku = "OUT-OF-STOCK"
                    customer = f"customer-{n % 97}" + ("-flaky" if n % 250 == 7 else "")
                    conn.execute(
                        "INSERT INTO demo_orders (order_id, customer_id, status)"
                        " VALUES (%s, %s, 'new')",
                        (order_id, customer),
                    )
                    sent = orders.send_create_order(
                        conn,
                        order_id=order_id,
                        customer_id=customer,
                        items=[
                            orders.LineItem(
                                sku=sku,
                                qty=1 + n % 3,
                                price=orders.Money(amount=decimal.Decimal("9.99"), currency="EUR"),
                            )
                        ],
                        total=orders.Money(amount=decimal.Decimal("9.99"), currency="EUR"),
                        priority=orders.Priority.HIGH if n % 10 == 0 else orders.Priority.NORMAL,
                        placed_at=placed_at,
                    )
                    ids.append(sent.command_id)
    return ids


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM cbus.command WHERE domain = 'orders' GROUP BY status"
        ).fetchall()
    return {status: int(n) for status, n in rows}


def progress(dsn: str, total: int, stop: threading.Event, started: float) -> None:
    width = 40
    while True:
        done = sum(n for status, n in counts(dsn).items() if status in TERMINAL)
        filled = int(width * done / total) if total else width
        rate = done / max(time.monotonic() - started, 1e-9)
        sys.stderr.write(
            f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {rate:,.0f} cmd/s "
        )
        sys.stderr.flush()
        if stop.wait(0.2):
            break
    sys.stderr.write("\n")


def run(dsn: str, total: int, concurrency: int) -> int:
    from examples.shop_handlers import make

    prepare(dsn)
    print(f"sending {total:,} CreateOrder commands (with their order rows)...")
    t0 = time.monotonic()
    ids = send_all(dsn, total, per_transaction=50)
    send_seconds = time.monotonic() - t0
    print(f"  sent {len(ids):,} in {send_seconds:.2f} s ({len(ids) / send_seconds:,.0f} cmd/s)")

    print(f"working them off with {concurrency} consumers...")
    worker = cbus.Worker(dsn, make(), concurrency=concurrency, poll_interval=0.2)
    stop = threading.Event()
    started = time.monotonic()
    bar = threading.Thread(target=progress, args=(dsn, total, stop, started), daemon=True)
    bar.start()
    worker.run(until_idle=True)
    seconds = time.monotonic() - started
    stop.set()
    bar.join()

    final = counts(dsn)
    with psycopg.connect(dsn) as conn:
        logged = conn.execute(
            "SELECT count(*) FROM cbus.command WHERE domain = 'orders' AND command_id = ANY(%s)",
            (ids,),
        ).fetchone()
        accepted = conn.execute(
            "SELECT count(*) FROM demo_orders WHERE status = 'accepted'"
        ).fetchone()
    terminal = sum(final.get(s, 0) for s in TERMINAL)
    lost = len(ids) - terminal
    assert logged is not None and accepted is not None
    print()
    print("summary")
    print(f"  sent                       {len(ids):>8,}")
    print(f"  completed                  {final.get('COMPLETED', 0):>8,}")
    print(f"  failed (business error)    {final.get('FAILED', 0):>8,}")
    print(f"  in troubleshooting queue   {final.get('IN_TROUBLESHOOTING_QUEUE', 0):>8,}")
    print(f"  lost                       {lost:>8,}")
    print(f"  business rows accepted     {accepted[0]:>8,}")
    print(f"  commands per second        {terminal / seconds:>8,.0f}  ({seconds:.2f} s)")
    print(
        "  (failed and troubleshooting commands are deliberate: one order in 1,000 is out of"
        "\n   stock, a business error, and one in 1,000 names a discontinued item, a"
        "\n   PermanentError; one in 250 fails once and is retried)"
    )
    if lost or logged[0] != len(ids) or accepted[0] != final.get("COMPLETED", 0):
        print("FAILED: commands were lost or effects do not match", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the embedded server running after the summary, until Ctrl-C",
    )
    args = parser.parse_args(argv)
    regenerate()
    dsn = os.environ.get("CBUS_DSN")
    if dsn:
        print("using CBUS_DSN")
        return run(dsn, args.commands, args.concurrency)
    t0 = time.monotonic()
    with DevServer() as server:
        print(f"embedded PostgreSQL ready in {time.monotonic() - t0:.1f} s ({server.dsn})")
        status = run(server.dsn, args.commands, args.concurrency)
        if args.keep:
            keep(server.dsn)
        return status


def keep(dsn: str) -> None:
    """Wait for Ctrl-C (or SIGTERM), showing how to look at the server meanwhile."""
    print()
    print("the embedded server keeps running; in another shell:")
    print(f"  export CBUS_DSN='{dsn}'")
    print(f"  export PYTHONPATH={ROOT / 'generated'}")
    print("  cbus tsq list                      # the commands set aside, with their errors")
    print("  cbus tsq show orders COMMAND_ID    # one of them: record, message, audit trail")
    print(f"  psql '{dsn}' -c 'SELECT status, count(*) FROM cbus.command GROUP BY 1'")
    print("press Ctrl-C to stop it", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nstopping the embedded server", flush=True)


if __name__ == "__main__":
    sys.exit(main())
