"""Run examples/django_app in this process (Django's settings are global to one):
`CBUS_DSN=... python -m tests.examples.django_run` prints one JSON object."""

from __future__ import annotations

import json
import os

import django


def main() -> dict[str, object]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    django.setup()
    import cbus
    from django.core.management import call_command
    from django.test import Client

    from examples.django_app import handlers

    call_command("migrate", run_syncdb=True, verbosity=0)
    client = Client()
    out: dict[str, object] = {}
    placed = client.post(
        "/orders", {"customer_id": "c-1", "sku": "s-1", "amount": "4.20"}, "application/json"
    )
    out["placed"] = [placed.status_code, placed.json()]
    refused = client.post(
        "/orders", {"customer_id": "", "sku": "s-1", "amount": "4.20"}, "application/json"
    )
    out["refused"] = refused.status_code
    order_id = placed.json()["order_id"]
    out["before"] = client.get(f"/orders/{order_id}/command").json()
    cbus.Worker(os.environ["CBUS_DSN"], handlers.make(), poll_interval=0.05).run(until_idle=True)
    out["after"] = client.get(f"/orders/{order_id}/command").json()
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
