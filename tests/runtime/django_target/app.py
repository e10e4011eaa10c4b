"""Django's connection as a sender target: run in a process of its own (settings are global).

`python -m tests.runtime.django_target.app DSN send|wait [COMMAND_ID]` prints one JSON
object: the command_ids it sent and what it saw.
"""

from __future__ import annotations

import json
import sys
import uuid

import django
from django.conf import settings
from psycopg.conninfo import conninfo_to_dict


def setup(dsn: str) -> None:
    info = conninfo_to_dict(dsn)
    settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": info.get("dbname"),
                "USER": info.get("user", ""),
                "PASSWORD": info.get("password", ""),
                "HOST": info.get("host", ""),
                "PORT": info.get("port", ""),
            }
        },
        USE_TZ=True,
    )
    django.setup()


class Rollback(Exception):
    pass


def send(dsn: str) -> dict[str, object]:
    import cbus
    import psycopg
    from django.db import connection, transaction
    from tbpkg import testbus

    out: dict[str, object] = {}
    try:
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("INSERT INTO orders VALUES (%s, 'c1')", [uuid.uuid4()])
            out["rolled_back"] = str(testbus.send_echo(connection, n=1).command_id)
            raise Rollback
    except Rollback:
        pass
    with transaction.atomic():
        out["in_atomic"] = str(testbus.send_echo(connection, n=2).command_id)
        cbus.send_many(connection, [testbus.Echo(n=3)])
        try:
            with transaction.atomic():
                out["in_savepoint"] = str(testbus.send_echo(connection, n=4).command_id)
                raise Rollback
        except Rollback:
            pass
        with psycopg.connect(dsn) as other:
            out["seen_before_commit"] = other.execute(
                "SELECT count(*) FROM cbus.command"
            ).fetchone()
    # Outside atomic(): Django autocommits, and so does the send.
    autocommit = testbus.send_echo(connection, n=5)
    out["autocommit"] = str(autocommit.command_id)
    with psycopg.connect(dsn) as other:
        out["seen_at_once"] = cbus.get_command(other, "testbus", autocommit.command_id) is not None
    return out


def wait(command_id: str) -> dict[str, object]:
    from django.db import connection, transaction
    from tbpkg import testbus

    result = testbus.wait_echo(connection, uuid.UUID(command_id), timeout=20)
    with transaction.atomic():
        inside = testbus.wait_echo(connection, uuid.UUID(command_id), timeout=20)
    return {"result": [result.n, inside.n]}


def main(argv: list[str]) -> None:
    dsn, action = argv[0], argv[1]
    setup(dsn)
    print(json.dumps(send(dsn) if action == "send" else wait(argv[2])))


if __name__ == "__main__":
    main(sys.argv[1:])
