"""The worker's side of the FastAPI example: `cbus worker examples.fastapi_app.handlers:make`."""

from __future__ import annotations

import cbus
from shop import orders


class Orders(orders.OrdersHandlers):
    def create_order(self, cmd: orders.CreateOrder, ctx: cbus.Context) -> orders.CreateOrderResult:
        # Written through ctx.conn: commits if and only if the command completes.
        ctx.conn.execute(
            "UPDATE app_orders SET status = 'accepted' WHERE order_id = %s", (cmd.order_id,)
        )
        return orders.CreateOrderResult(accepted=True, eta_days=2)


def make() -> list[object]:
    return [Orders()]
