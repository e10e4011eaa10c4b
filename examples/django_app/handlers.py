"""The worker's side of the Django example: `cbus worker examples.django_app.handlers:make`.

The handler writes through `ctx.conn` (plain SQL on the worker's transaction), not
through the ORM: what it writes commits if and only if the command completes.
"""

from __future__ import annotations

import cbus
from shop import orders


class Orders(orders.OrdersHandlers):
    def create_order(self, cmd: orders.CreateOrder, ctx: cbus.Context) -> orders.CreateOrderResult:
        ctx.conn.execute(
            "UPDATE django_orders SET status = 'accepted' WHERE order_id = %s", (cmd.order_id,)
        )
        return orders.CreateOrderResult(accepted=True, eta_days=1)


def make() -> list[object]:
    return [Orders()]
