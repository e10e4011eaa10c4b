"""What a sender or a waiter takes as `target`, and the psycopg connection it stands for.

Contract section 12: a psycopg connection or pool, a SQLAlchemy Session or
Connection on the psycopg driver (AsyncSession or AsyncConnection for the async
senders), or Django's connection on the psycopg 3 backend. cbus imports neither
SQLAlchemy nor Django: a target is recognised by the classes of modules the
application has already imported (`sys.modules`), and typed by shape (Protocols).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .pgmq import dump_raw_json

if TYPE_CHECKING:
    from .context import AsyncContext, Context

__all__ = [
    "AsyncTarget",
    "AsyncWaitTarget",
    "SyncTarget",
    "WaitTarget",
    "DjangoConnection",
    "SQLAlchemyAsyncConnection",
    "SQLAlchemyAsyncSession",
    "SQLAlchemyConnection",
    "SQLAlchemySession",
    "check",
    "check_async",
    "joined",
    "joined_async",
    "listener",
    "listener_async",
]


class SQLAlchemySession(Protocol):
    """A SQLAlchemy `Session` or `scoped_session` (on the psycopg driver)."""

    def connection(self) -> Any: ...
    def get_bind(self) -> Any: ...
    def commit(self) -> None: ...


class _PoolProxiedConnection(Protocol):
    @property
    def driver_connection(self) -> Any: ...


class SQLAlchemyConnection(Protocol):
    """A SQLAlchemy `Connection` (on the psycopg driver)."""

    @property
    def connection(self) -> _PoolProxiedConnection: ...
    def in_transaction(self) -> bool: ...
    def begin(self) -> Any: ...


class SQLAlchemyAsyncSession(Protocol):
    """A SQLAlchemy `AsyncSession` or `async_scoped_session` (on the psycopg driver)."""

    async def connection(self) -> Any: ...
    def in_transaction(self) -> bool: ...
    async def commit(self) -> None: ...


class SQLAlchemyAsyncConnection(Protocol):
    """A SQLAlchemy `AsyncConnection` (on the psycopg driver)."""

    async def get_raw_connection(self) -> Any: ...
    def in_transaction(self) -> bool: ...


class Bus(Protocol):
    """A `cbus.Bus` (typed by shape: `cbus.bus` imports this module, not the reverse)."""

    @property
    def pool(self) -> ConnectionPool[Any]: ...
    def open(self) -> Any: ...


class AsyncBus(Protocol):
    """A `cbus.AsyncBus` (typed by shape, as `Bus`)."""

    @property
    def pool(self) -> AsyncConnectionPool[Any]: ...
    async def open(self) -> Any: ...


class DjangoConnection(Protocol):
    """Django's `django.db.connection` (the PostgreSQL backend on psycopg 3)."""

    def ensure_connection(self) -> None: ...
    def get_connection_params(self) -> dict[str, Any]: ...


SyncTarget: TypeAlias = (
    "psycopg.Connection[Any] | ConnectionPool[Any] | Bus | Context | SQLAlchemySession"
    " | SQLAlchemyConnection | DjangoConnection"
)
"""What a sync sender takes as `target`."""
AsyncTarget: TypeAlias = (
    "psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any] | AsyncBus | AsyncContext"
    " | SQLAlchemyAsyncSession | SQLAlchemyAsyncConnection"
)
"""What an async sender takes as `target`."""
WaitTarget: TypeAlias = (
    "psycopg.Connection[Any] | ConnectionPool[Any] | Bus | SQLAlchemySession"
    " | SQLAlchemyConnection | DjangoConnection"
)
"""What `wait_for` and the generated `wait_x` take: a sender's targets but a handler's."""
AsyncWaitTarget: TypeAlias = (
    "psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any] | AsyncBus"
    " | SQLAlchemyAsyncSession | SQLAlchemyAsyncConnection"
)
"""What `wait_for_async` and the generated `wait_x_async` take."""

SYNC = (
    "a psycopg.Connection, a psycopg_pool.ConnectionPool, a cbus.Bus, a handler's "
    "cbus.Context, a SQLAlchemy Session or Connection on the psycopg driver, or Django's "
    "django.db.connection on the psycopg 3 backend"
)
ASYNC = (
    "a psycopg.AsyncConnection, a psycopg_pool.AsyncConnectionPool, a cbus.AsyncBus, a "
    "handler's cbus.AsyncContext, or a SQLAlchemy AsyncSession or AsyncConnection on the "
    "psycopg driver"
)

WAIT = SYNC.replace(" a handler's cbus.Context,", "")
WAIT_ASYNC = ASYNC.replace(" a handler's cbus.AsyncContext,", "")

_SESSIONS = (("sqlalchemy.orm.session", "Session"), ("sqlalchemy.orm.scoping", "scoped_session"))
_CONNECTION = (("sqlalchemy.engine.base", "Connection"),)
_ASYNC_SESSIONS = (
    ("sqlalchemy.ext.asyncio.session", "AsyncSession"),
    ("sqlalchemy.ext.asyncio.scoping", "async_scoped_session"),
)
_ASYNC_CONNECTION = (("sqlalchemy.ext.asyncio.engine", "AsyncConnection"),)
_ENGINES = (("sqlalchemy.engine.base", "Engine"), ("sqlalchemy.ext.asyncio.engine", "AsyncEngine"))
_DJANGO = (
    ("django.utils.connection", "ConnectionProxy"),
    ("django.db.backends.base.base", "BaseDatabaseWrapper"),
)


def _is(target: object, classes: tuple[tuple[str, str], ...]) -> bool:
    """Whether `target` is an instance of one of these classes, if their module is loaded."""
    for module, name in classes:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(target, cls):
            return True
    return False


def _kind(target: object) -> str | None:
    if isinstance(target, psycopg.Connection):
        return "conn"
    if isinstance(target, psycopg.AsyncConnection):
        return "aconn"
    if isinstance(target, ConnectionPool):
        return "pool"
    if isinstance(target, AsyncConnectionPool):
        return "apool"
    if "sqlalchemy" in sys.modules:
        for kind, classes in (
            ("session", _SESSIONS),
            ("connection", _CONNECTION),
            ("asession", _ASYNC_SESSIONS),
            ("aconnection", _ASYNC_CONNECTION),
            ("engine", _ENGINES),
        ):
            if _is(target, classes):
                return kind
    if "django" in sys.modules and _is(target, _DJANGO):
        return "django"
    return None


_SYNC_KINDS = {"conn", "pool", "session", "connection", "django"}
_ASYNC_KINDS = {"aconn", "apool", "asession", "aconnection"}


def _unsupported(target: object, accepted: str, kind: str | None, *, is_async: bool) -> TypeError:
    got = type(target).__module__ + "." + type(target).__qualname__
    if target is None or isinstance(target, str | bytes | int | float):
        got = type(target).__name__
    hint = ""
    if isinstance(target, str):
        hint = (
            f": a DSN is not a target, send through cbus.{'AsyncBus' if is_async else 'Bus'}(dsn)"
        )
    elif isinstance(target, psycopg.Cursor | psycopg.AsyncCursor):
        hint = ": pass the cursor's connection (cur.connection)"
    elif kind == "engine":
        hint = (
            ": an Engine holds no transaction, pass a Session or the Connection of `engine.begin()`"
        )
    elif kind == "django" and is_async:
        hint = (
            ": Django's connection is synchronous, call the sync sender (for example "
            "through asgiref's sync_to_async)"
        )
    elif kind in (_SYNC_KINDS if is_async else _ASYNC_KINDS):
        hint = (
            ": it is synchronous, call the sync sender"
            if is_async
            else ": it is asynchronous, call the `_async` sender"
        )
    return TypeError(f"target must be {accepted}; got {got}{hint}")


def check(target: object, accepted: str = SYNC) -> str:
    """The kind of a sync sender's target; TypeError naming what is accepted otherwise."""
    kind = _kind(target)
    if kind not in _SYNC_KINDS:
        raise _unsupported(target, accepted, kind, is_async=False)
    return kind


def check_async(target: object, accepted: str = ASYNC) -> str:
    """The kind of an async sender's target; TypeError naming what is accepted otherwise."""
    kind = _kind(target)
    if kind not in _ASYNC_KINDS:
        raise _unsupported(target, accepted, kind, is_async=True)
    return kind


def _sqlalchemy_driver(conn: Any) -> None:
    dialect = conn.dialect
    if dialect.driver != "psycopg":
        raise TypeError(
            f"The SQLAlchemy engine uses the `{dialect.name}+{dialect.driver}` driver; cbus "
            "sends on psycopg 3: create the engine with a `postgresql+psycopg://` URL"
        )


def _driver_connection(raw: Any, type_: type[Any]) -> Any:
    if not isinstance(raw, type_):
        raise TypeError(
            f"target's driver connection is {type(raw).__module__}.{type(raw).__qualname__}; "
            f"cbus needs a {type_.__module__}.{type_.__qualname__}"
        )
    return dump_raw_json(raw)


def _django(target: Any) -> psycopg.Connection[Any]:
    if target.vendor != "postgresql":
        raise TypeError(f"Django's connection is to {target.vendor}; cbus needs PostgreSQL")
    target.ensure_connection()
    raw = target.connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(
            "Django's PostgreSQL backend runs on psycopg2 here; cbus needs psycopg 3: "
            "`pip install psycopg` (Django 4.2 and later use it when it is installed)"
        )
    # Inside an atomic block that already failed, Django refuses every statement.
    target.validate_no_broken_transaction()
    return dump_raw_json(raw)


def joined(target: Any) -> AbstractContextManager[psycopg.Connection[Any]]:
    """The psycopg connection whose transaction a send on `target` joins.

    A pool's connection is the pool's own: it commits when the block ends (rolls
    back on an error). A SQLAlchemy Connection with no transaction begins one, as
    its next statement would (autobegin), so the caller's `commit()` commits the send.
    """
    if isinstance(target, psycopg.Connection):
        return nullcontext(target)  # the common case, without a generator per send
    return _joined(target)


@contextmanager
def _joined(target: Any) -> Iterator[psycopg.Connection[Any]]:
    kind = check(target)
    if kind == "pool":
        with target.connection() as conn:
            yield conn
    elif kind == "django":
        yield _django(target)
    else:
        conn = target.connection() if kind == "session" else target
        _sqlalchemy_driver(conn)
        if not conn.in_transaction():
            conn.begin()
        yield _driver_connection(conn.connection.driver_connection, psycopg.Connection)


def joined_async(target: Any) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
    """The async twin of `joined`, for AsyncConnection, AsyncConnectionPool, AsyncSession."""
    if isinstance(target, psycopg.AsyncConnection):
        return nullcontext(target)
    return _joined_async(target)


@asynccontextmanager
async def _joined_async(target: Any) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    kind = check_async(target)
    if kind == "apool":
        async with target.connection() as conn:
            yield conn
    else:
        conn = await target.connection() if kind == "asession" else target
        _sqlalchemy_driver(conn)
        if not conn.in_transaction():
            await conn.begin()
        raw = await conn.get_raw_connection()
        yield _driver_connection(raw.driver_connection, psycopg.AsyncConnection)


def _engine(target: Any, kind: str) -> Any:
    bind = target.get_bind() if kind == "session" else target
    return getattr(bind, "engine", bind)


@contextmanager
def listener(target: Any) -> Iterator[psycopg.Connection[Any]]:
    """A connection to wait on for `target`: in autocommit mode, except a bare connection.

    A bare psycopg connection is used as it is (the waiter checks its mode). A pool,
    or a SQLAlchemy session's engine, lends one for the wait, in autocommit while it
    waits: notifications arrive only between transactions, and the session's own may
    be open. Django's connection may be inside `atomic()`: the wait opens one of its own.
    """
    kind = check(target, WAIT)
    if kind == "conn":
        yield target
        return
    if kind == "django":
        params = target.get_connection_params()
        for key in ("context", "cursor_factory", "prepare_threshold"):
            params.pop(key, None)
        with psycopg.connect(**params, autocommit=True) as conn:
            yield conn
        return
    if kind == "pool":
        lent = target.connection()
    else:
        engine = _engine(target, kind)
        _sqlalchemy_driver(engine)
        lent = _sqlalchemy_raw(engine)
    with lent as conn:
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            yield conn
        finally:
            conn.autocommit = autocommit


@contextmanager
def _sqlalchemy_raw(engine: Any) -> Iterator[psycopg.Connection[Any]]:
    with engine.connect() as sa_conn:
        yield _driver_connection(sa_conn.connection.driver_connection, psycopg.Connection)


@asynccontextmanager
async def listener_async(target: Any) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The async twin of `listener`."""
    kind = check_async(target, WAIT_ASYNC)
    if kind == "aconn":
        yield target
        return
    if kind == "apool":
        lent = target.connection()
    else:
        engine: Any = getattr(target, "bind", None) if kind == "asession" else target
        if _is(engine, _ASYNC_CONNECTION):
            engine = engine.engine  # the AsyncEngine (an AsyncEngine's `engine` is sync)
        if engine is None:
            raise TypeError("The AsyncSession has no bind: create it with an AsyncEngine")
        _sqlalchemy_driver(engine)
        lent = _sqlalchemy_raw_async(engine)
    async with lent as conn:
        autocommit = conn.autocommit
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            await conn.set_autocommit(autocommit)


@asynccontextmanager
async def _sqlalchemy_raw_async(engine: Any) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        yield _driver_connection(raw.driver_connection, psycopg.AsyncConnection)
