"""A FastAPI service whose endpoints send and read commands through a SQLAlchemy session.

`POST /orders` writes the order row and sends `CreateOrder` in the session's
transaction: both commit together, or neither does. With `"wait": true` it then
waits for the worker's result (`orders.wait_create_order`). `GET /orders/{id}/command`
reads the command's record (`cbus.get_command`) through the same kind of session.

Run it (a PostgreSQL from `cbus dev`, or any with cbus installed):

    export DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:54329/postgres
    PYTHONPATH=generated uvicorn examples.fastapi_app.app:app
    PYTHONPATH=generated cbus worker examples.fastapi_app.handlers:make --dsn postgresql://postgres@127.0.0.1:54329/postgres
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import cbus
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from shop import orders
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

SCHEMA = """
CREATE TABLE IF NOT EXISTS app_orders (
    order_id uuid PRIMARY KEY,
    customer_id text NOT NULL,
    status text NOT NULL DEFAULT 'placed',
    command_id uuid NOT NULL
)
"""


class OrderIn(BaseModel):
    customer_id: str
    sku: str
    qty: int = 1
    amount: decimal.Decimal
    currency: str = "EUR"
    wait: bool = False


def session(request: Request) -> Iterator[Session]:
    """One SQLAlchemy session per request, on the app's engine."""
    with Session(request.app.state.engine) as s:
        yield s


SessionDep = Annotated[Session, Depends(session)]


def create_app(database_url: str) -> FastAPI:
    """The app, on a SQLAlchemy engine for `database_url` (a `postgresql+psycopg://` URL)."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(SCHEMA))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()  # the pooled connections close with the app

    app = FastAPI(title="orders", lifespan=lifespan)
    app.state.engine = engine

    @app.post("/orders", status_code=202)
    def place_order(body: OrderIn, db: SessionDep) -> dict[str, Any]:
        order_id = uuid.uuid4()
        price = orders.Money(amount=body.amount, currency=body.currency)
        try:
            sent = orders.send_create_order(
                db,  # the session: the command joins its transaction
                order_id=order_id,
                customer_id=body.customer_id,
                items=[orders.LineItem(sku=body.sku, qty=body.qty, price=price)],
                total=orders.Money(amount=body.amount * body.qty, currency=body.currency),
                placed_at=dt.datetime.now(dt.UTC),
            )
        except cbus.ValidationError as exc:
            raise HTTPException(422, str(exc)) from exc
        db.execute(
            text("INSERT INTO app_orders (order_id, customer_id, command_id) VALUES (:o, :c, :k)"),
            {"o": order_id, "c": body.customer_id, "k": sent.command_id},
        )
        db.commit()  # the row and the command, together
        out: dict[str, Any] = {"order_id": str(order_id), "command_id": str(sent.command_id)}
        if body.wait:
            try:
                result = orders.wait_create_order(db, sent.command_id, timeout=10)
            except cbus.ReplyTimeout:
                return out  # still 202: the client reads GET .../command later
            except cbus.CommandNotCompleted as exc:
                raise HTTPException(409, str(exc)) from exc
            out["accepted"] = result.accepted
        return out

    @app.get("/orders/{order_id}/command")
    def order_command(order_id: uuid.UUID, db: SessionDep) -> dict[str, Any]:
        row = db.execute(
            text("SELECT command_id, status FROM app_orders WHERE order_id = :o"), {"o": order_id}
        ).one_or_none()
        if row is None:
            raise HTTPException(404, "no such order")
        record = cbus.get_command(db, "orders", row.command_id)
        assert record is not None  # sent with the row, in its transaction
        return {
            "order_status": row.status,
            "command_status": record.status,
            "attempts": record.attempts,
            "result": record.result,
        }

    return app


def __getattr__(name: str) -> Any:
    """`uvicorn examples.fastapi_app.app:app`: the app on $DATABASE_URL, made on first use."""
    if name == "app":
        return create_app(os.environ["DATABASE_URL"])
    raise AttributeError(name)
