"""Handlers for the example `shop` package: user code, never regenerated.

Run them with `cbus worker examples.shop_handlers:make --dsn ...`.
"""

from __future__ import annotations

import cbus
from shop import orders


class Orders(orders.OrdersHandlers):
    """Accepts orders, writing the decision next to the order row in the same transaction."""

    def create_order(self, cmd: orders.CreateOrder, ctx: cbus.Context) -> orders.CreateOrderResult:
        if any(item.sku == "DISCONTINUED" for item in cmd.items):
            # Nobody can fix this by retrying: straight to the troubleshooting queue.
            raise cbus.PermanentError("DISCONTINUED", "an item is no longer sold")
        if any(item.sku == "OUT-OF-STOCK" for item in cmd.items):
            # A business outcome the schema declares: FAILED at once, no retry.
            raise orders.CreateOrderError.out_of_stock("sku OUT-OF-STOCK")
        if cmd.customer_id.endswith("-flaky") and ctx.attempt == 1:
            # The first delivery fails as a payment gateway might; the retry succeeds.
            raise cbus.TransientError("gateway timeout")
        ctx.conn.execute(
            "UPDATE demo_orders SET status = 'accepted', accepted_at = now() WHERE order_id = %s",
            (cmd.order_id,),
        )
        eta = 1 if cmd.priority is orders.Priority.HIGH else 3
        return orders.CreateOrderResult(accepted=True, eta_days=eta)

    def cancel_order(self, cmd: orders.CancelOrder, ctx: cbus.Context) -> None:
        ctx.conn.execute(
            "UPDATE demo_orders SET status = 'canceled' WHERE order_id = %s", (cmd.order_id,)
        )


def make() -> list[object]:
    """The factory `cbus worker` calls."""
    return [Orders()]
