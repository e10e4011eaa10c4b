"""The views and URLs: `POST /orders` sends CreateOrder inside `transaction.atomic()`.

The order row and the command commit together: a send that fails (the sender
refuses an empty customer_id) rolls the row back with it, and a worker never sees
a command whose row is missing. `GET /orders/<id>/command` reads the command's
record through Django's connection.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import cbus
from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from shop import orders

from .models import Order


@csrf_exempt  # an API for scripts: no browser session, so no CSRF cookie
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    order_id = uuid.uuid4()
    price = orders.Money(amount=decimal.Decimal(body["amount"]), currency="EUR")
    try:
        with transaction.atomic():
            command_id = uuid.uuid4()
            Order.objects.create(
                order_id=order_id, customer_id=body["customer_id"], command_id=command_id
            )
            orders.send_create_order(
                connection,  # joins the atomic block: committed with the row, or not at all
                order_id=order_id,
                customer_id=body["customer_id"],
                items=[orders.LineItem(sku=body["sku"], qty=1, price=price)],
                total=price,
                placed_at=dt.datetime.now(dt.UTC),
                command_id=command_id,
            )
    except cbus.ValidationError as exc:
        return JsonResponse({"error": str(exc)}, status=422)
    return JsonResponse({"order_id": str(order_id), "command_id": str(command_id)}, status=202)


@require_GET
def order_command(request: HttpRequest, order_id: uuid.UUID) -> JsonResponse:
    order = Order.objects.filter(order_id=order_id).first()
    if order is None:
        return JsonResponse({"error": "no such order"}, status=404)
    record = cbus.get_command(connection, "orders", order.command_id)
    assert record is not None  # sent in the row's transaction
    return JsonResponse(
        {"order_status": order.status, "command_status": record.status, "result": record.result}
    )


urlpatterns = [
    path("orders", place_order),
    path("orders/<uuid:order_id>/command", order_command),
]
