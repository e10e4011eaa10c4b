"""The example's one table."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    order_id = models.UUIDField(primary_key=True)
    customer_id = models.TextField()
    status = models.TextField(default="placed")
    command_id = models.UUIDField()

    class Meta:
        app_label = "django_app"
        db_table = "django_orders"
