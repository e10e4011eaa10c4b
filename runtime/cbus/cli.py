"""The `cbus` command: install the database, run workers, operate the troubleshooting queue."""

from __future__ import annotations

import datetime as dt
import getpass
import importlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
import psycopg

from ._cli_db import UserError, connect, db_errors, dsn_callback, wait_for_server
from ._cli_prune import db_prune

if TYPE_CHECKING:
    from .registry import DomainSpec

__all__ = ["main"]

DSN_HELP = "PostgreSQL connection string (default: $CBUS_DSN, which `ps` does not show)"


def _dsn_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dsn", envvar="CBUS_DSN", required=True, help=DSN_HELP, callback=dsn_callback
    )(f)


@click.group()
@click.version_option(package_name="cbus")
def main() -> None:
    """cbus: a typed command bus on PostgreSQL + PGMQ."""


@main.group()
def db() -> None:
    """Database set-up."""


@db.command("install")
@_dsn_option
@click.option(
    "--domains",
    "module",
    default=None,
    help="Also create the queues of a generated package (for example `shop`).",
)
def db_install(dsn: str, module: str | None) -> None:
    """Install PGMQ and cbus's schema (idempotent, safe to run concurrently)."""
    from .errors import InstallError
    from .install import install, install_domain

    domains = _import_generated(module) if module else []
    with _connect(dsn) as conn:
        try:
            install(conn)
        except InstallError as exc:
            raise click.ClickException(str(exc)) from exc
        for domain in domains:
            install_domain(conn, domain)
            click.echo(f"queue {domain.queue} ready")
    click.echo("cbus installed")


db.add_command(db_prune)


@db.command("roles")
@_dsn_option
@click.option(
    "--domains",
    "module",
    required=True,
    help="Generated packages or domain modules (`shop`, `shop.orders`), comma-separated.",
)
@click.option("--producer", multiple=True, help="A role that sends to these domains.")
@click.option("--worker", "workers", multiple=True, help="A role that consumes them.")
@click.option("--operator", multiple=True, help="A role for `cbus tsq` and `cbus audit`.")
@click.option("--reply-queue", multiple=True, help="A reply queue these roles use (PGMQ name).")
@click.option("--login", is_flag=True, help="Create missing roles with LOGIN (no password).")
@click.option("--dry-run", is_flag=True, help="Print the statements; change nothing.")
def db_roles(
    dsn: str,
    module: str,
    producer: tuple[str, ...],
    workers: tuple[str, ...],
    operator: tuple[str, ...],
    reply_queue: tuple[str, ...],
    login: bool,
    dry_run: bool,
) -> None:
    """Create or grant least-privilege roles, each held to the domains of --domains."""
    from . import roles

    wanted = [("producer", producer), ("worker", workers), ("operator", operator)]
    if not any(names for _, names in wanted):
        raise click.UsageError("name at least one role: --producer, --worker or --operator")
    _add_cwd_to_path()
    try:
        domains = roles.domains_of(module)
    except (ImportError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--domains'") from exc
    with _connect(dsn) as conn:
        try:
            for kind, names in wanted:
                for name in names:
                    for line in roles.grant(
                        conn,
                        kind,  # type: ignore[arg-type]
                        name,
                        domains,
                        login=login,
                        reply_queues=reply_queue,
                        dry_run=dry_run,
                    ):
                        click.echo(line)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise click.ClickException(
                f"{str(exc).strip().splitlines()[0]}: run `cbus db roles` as the role that "
                "installed cbus (it owns the tables), with CREATEROLE"
            ) from exc
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
            raise click.ClickException(
                f"{str(exc).strip().splitlines()[0]}: run `cbus db install --domains {module}` "
                "first (and create the --reply-queue queues)"
            ) from exc
    if login and not dry_run:
        click.echo("-- set a password with \\password NAME in psql (never on a command line)")


def _import_generated(name: str) -> list[DomainSpec]:
    """The domains of a generated package, or the one of a domain module (`shop.orders`)."""
    from .registry import DomainSpec

    _add_cwd_to_path()
    try:
        package = importlib.import_module(name)
        own = getattr(package, "DOMAIN", None)
        if isinstance(own, DomainSpec):
            return [own]
        names = getattr(package, "__all__", []) if hasattr(package, "__path__") else []
        found = [f"{name}.{sub}" for sub in names]
        subs = [importlib.import_module(n) for n in found if importlib.util.find_spec(n)]
    except ImportError as exc:
        raise UserError(f"Cannot import `{name}`: {exc}") from exc
    domains = [d for d in (getattr(m, "DOMAIN", None) for m in subs) if isinstance(d, DomainSpec)]
    if not domains:
        raise UserError(
            f"`{name}` is neither a package cbgen generated nor one of its domain modules: "
            "pass the generated package (the `package` of [tool.cbgen], for example `shop`)"
        )
    return domains


def _domains_option(checked: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--domains",
        "module",
        default=None,
        help=f"The generated package (for example `shop`): {checked} then checked against "
        "the command's result class.",
    )


def _import_domains(module: str | None) -> None:
    """Import the generated package a `--domains` option names, if any."""
    if module:
        try:
            _import_generated(module)
        except ImportError as exc:
            raise click.BadParameter(f"cannot import `{module}`: {exc}") from exc


def _add_cwd_to_path() -> None:
    """Import user modules from where the command runs, as `python -m` would."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_factory(spec: str) -> Iterable[object]:
    """Call `MODULE:FACTORY` and return the handler objects it makes."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(
            f"Invalid factory `{spec}`: expected MODULE:FACTORY, for example `myapp.handlers:make`"
        )
    _add_cwd_to_path()
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"Cannot import `{module_name}`: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(
            f"`{module_name}` has no callable `{attr}`: name the function that makes the handlers"
        )
    try:
        handlers = factory()
    except Exception as exc:
        raise UserError(f"{spec}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(handlers, Iterable):
        handlers = [handlers]
    return list(handlers)


@main.command()
@click.argument("factory")
@_dsn_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Consumers (threads or tasks).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Most messages leased at a time.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds an idle consumer waits for a notification before it polls.",
)
@click.option("--until-idle", is_flag=True, help="Return once no command is due within a minute.")
@click.option(
    "--audit",
    type=click.Choice(["errors", "full"]),
    default="errors",
    show_default=True,
    help="`full` also writes received/completed audit rows on the happy path.",
)
@click.option(
    "--savepoints/--no-savepoints",
    default=True,
    show_default=True,
    help="--no-savepoints: faster writing handlers; a failure replays its batch.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    callback=lambda ctx, param, value: _log_level(value),
    help="DEBUG, INFO, WARNING, ERROR or CRITICAL.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="`json`: one object per line, with the worker's action, command_id, kind...",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve /metrics (Prometheus) and /healthz on this port (pip install 'cbus[metrics]').",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address of --metrics-port."
)
def worker(
    factory: str,
    dsn: str,
    concurrency: int,
    batch_size: int,
    poll_interval: float,
    until_idle: bool,
    audit: str,
    savepoints: bool,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run the handlers FACTORY() returns until SIGINT or SIGTERM, then exit 0.

    A second SIGINT or SIGTERM stops it 10 s later even with handlers in flight (exit 1).
    """
    from .errors import InstallError, WorkerFailed
    from .logs import configure as configure_logs
    from .worker import Worker

    configure_logs(log_level, log_format)
    handlers: list[Any] = list(load_factory(factory))
    wait_for_server(dsn)  # one line, within START_GRACE s, where nothing listens
    try:
        w = Worker(
            dsn,
            handlers,
            concurrency=concurrency,
            batch_size=batch_size,
            poll_interval=poll_interval,
            audit="full" if audit == "full" else "errors",
            savepoints=savepoints,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"{factory}: {exc}") from exc
    try:
        with db_errors():
            w.run(until_idle=until_idle)
    except (InstallError, WorkerFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    except ImportError as exc:  # --metrics-port without prometheus_client
        raise UserError(str(exc)) from exc
    except OSError as exc:  # the metrics port is taken
        raise UserError(f"--metrics-port {metrics_port}: {exc}") from exc


# -- the troubleshooting queue and the audit trail -------------------------------

EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4


class _NotFound(click.ClickException):
    exit_code = EXIT_NOT_FOUND


class _Conflict(click.ClickException):
    exit_code = EXIT_CONFLICT


@contextmanager
def _operator_errors() -> Iterator[None]:
    """cbus's errors as one line on stderr and an exit status, never a traceback."""
    from .errors import CannotRetry, ConcurrentOperationError, NotFoundError

    try:
        yield
    except NotFoundError as exc:
        raise _NotFound(str(exc)) from exc
    except (ConcurrentOperationError, CannotRetry) as exc:
        raise _Conflict(str(exc)) from exc


@contextmanager
def _connect(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with _operator_errors(), connect(dsn) as conn:
        yield conn


def _when(at: dt.datetime | None) -> str:
    if at is None:
        return "-"
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _json(value: Any) -> str:
    from . import codec

    return codec.encode(value).decode()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns, two spaces apart; the last column is never padded."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=False)]
        click.echo("  ".join([*cells, line[-1]]).rstrip())


def _clip(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _error_of(type_: str | None, code: str | None, message: str | None) -> str:
    head = " ".join(p for p in (type_, f"[{code}]" if code and code != type_ else None) if p)
    return (f"{head}: {message}" if message else head) or "-"


_EXIT_HELP = (
    "Exit status: 0 done, 1 other error, 2 bad usage, 3 command not found, "
    "4 command not in the troubleshooting queue (for example another operator acted first)."
)


@main.group(epilog=_EXIT_HELP)
def tsq() -> None:
    """The troubleshooting queue: commands set aside for an operator to decide."""


@tsq.command("list", epilog=_EXIT_HELP)
@_dsn_option
@click.option("--domain", default=None, help="Only this domain.")
@click.option(
    "--kind", default=None, help="Only this kind (`orders.CreateOrder` or `CreateOrder`)."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--after", default=None, metavar="CURSOR", help="Continue after a previous page.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: items and next_cursor.")
def tsq_list(
    dsn: str, domain: str | None, kind: str | None, limit: int, after: str | None, as_json: bool
) -> None:
    """List commands in the troubleshooting queue, most recently set aside first."""
    from .troubleshooting import list_troubleshooting

    with _connect(dsn) as conn:
        try:
            page = list_troubleshooting(conn, domain=domain, kind=kind, limit=limit, after=after)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--after'") from exc
    if as_json:
        click.echo(_json({"items": page.items, "next_cursor": page.next_cursor}))
        return
    if not page.items:
        click.echo("The troubleshooting queue is empty" + (" from here" if after else ""))
        return
    _table(
        ["UPDATED", "DOMAIN", "COMMAND_ID", "KIND", "ATTEMPTS", "LAST ERROR"],
        [
            [
                _when(e.updated_at),
                e.domain,
                str(e.command_id),
                e.kind,
                f"{e.attempts}/{e.max_attempts}",
                _clip(_error_of(e.last_error_type, e.last_error_code, e.last_error_message)),
            ]
            for e in page.items
        ],
    )
    if page.next_cursor:
        click.echo(f"\nMore: cbus tsq list --after {page.next_cursor}")


@tsq.command("show", epilog=_EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@_dsn_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def tsq_show(domain: str, command_id: uuid.UUID, dsn: str, as_json: bool) -> None:
    """Show a command: its record, its PGMQ message and its audit trail."""
    from .troubleshooting import show_command

    with _connect(dsn) as conn:
        detail = show_command(conn, domain, command_id)
    if as_json:
        click.echo(_json(detail))
        return
    r = detail.record
    fields = [
        ("domain", r.domain),
        ("command_id", str(r.command_id)),
        ("kind", f"{r.kind} (version {r.version})"),
        ("status", r.status),
        ("attempts", f"{r.attempts}/{r.max_attempts}"),
        ("correlation_id", str(r.correlation_id)),
        ("reply_to", r.reply_to or "-"),
        ("batch_id", str(r.batch_id) if r.batch_id else "-"),
        (
            "last error",
            _error_of(r.last_error_type, r.last_error_code, r.last_error_message) or "-",
        ),
        ("error details", "-" if r.last_error_details is None else _json(r.last_error_details)),
        ("result", "-" if r.result is None else _json(r.result)),
        ("created", _when(r.created_at)),
        ("updated", _when(r.updated_at)),
        ("finished", _when(r.finished_at)),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key.ljust(width)}  {value}")
    click.echo("")
    if detail.message_source is None:
        click.echo("message: gone (deleted on completion, or purged from the archive)")
    else:
        click.echo(f"message (msg_id {detail.msg_id}, in the {detail.message_source}):")
        click.echo("  " + _json(detail.message))
        click.echo("headers:")
        click.echo("  " + _json(detail.headers))
    click.echo("")
    _echo_audit(detail.audit)


def _echo_audit(events: Sequence[Any]) -> None:
    _table(
        ["AT", "EVENT", "ATTEMPT", "OPERATOR", "DETAIL"],
        [
            [
                _when(e.at),
                e.event + ("*" if e.synthetic else ""),
                "-" if e.attempt is None else str(e.attempt),
                e.operator or "-",
                "" if e.detail is None else _clip(_json(e.detail), 100),
            ]
            for e in events
        ],
    )
    if any(e.synthetic for e in events):
        click.echo("* from the command log (the worker's audit level writes no row for it)")


def _account() -> str:
    """Who runs the command: $USER (getpass looks there), else the uid's account."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no account for the uid (a container's bare uid)
        return f"uid {os.getuid()}"


def _operator_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--operator",
        default=_account,
        show_default="the account running the command",
        help="Who acts, for the audit trail.",
    )(f)


def _operator(name: str) -> str:
    if not name.strip():
        raise click.BadParameter(
            "no operator name: pass --operator NAME", param_hint="'--operator'"
        )
    return name


@tsq.command("retry", epilog=_EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@_dsn_option
@click.option("--reason", default=None, help="Why, for the audit trail.")
@_operator_option
def tsq_retry(
    domain: str, command_id: uuid.UUID, dsn: str, reason: str | None, operator: str
) -> None:
    """Send the command again under the same COMMAND_ID, its attempts reset."""
    from .troubleshooting import retry

    name = _operator(operator)
    with _connect(dsn) as conn:
        retry(conn, domain, command_id, operator=name, reason=reason)
    click.echo(f"Command {command_id} in domain `{domain}` sent again by {name}")


@tsq.command("cancel", epilog=_EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@_dsn_option
@click.option("--reason", default=None, help="Why, for the audit trail.")
@_operator_option
def tsq_cancel(
    domain: str, command_id: uuid.UUID, dsn: str, reason: str | None, operator: str
) -> None:
    """End the command as CANCELED: it never runs again."""
    from .troubleshooting import cancel

    name = _operator(operator)
    with _connect(dsn) as conn:
        cancel(conn, domain, command_id, operator=name, reason=reason)
    click.echo(f"Command {command_id} in domain `{domain}` canceled by {name}")


def _parse_result(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    import json

    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from exc


@tsq.command("complete", epilog=_EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@_dsn_option
@click.option(
    "--result",
    default="null",
    show_default=True,
    metavar="JSON",
    callback=_parse_result,
    help="The command's result, as its handler would return it.",
)
@click.option("--reason", default=None, help="Why, for the audit trail.")
@_domains_option("--result is")
@_operator_option
def tsq_complete(
    domain: str,
    command_id: uuid.UUID,
    dsn: str,
    result: Any,
    reason: str | None,
    module: str | None,
    operator: str,
) -> None:
    """End the command as COMPLETED with the result an operator supplies."""
    from .errors import ValidationError
    from .troubleshooting import complete

    name = _operator(operator)
    _import_domains(module)
    with _connect(dsn) as conn:
        try:
            complete(conn, domain, command_id, operator=name, result=result, reason=reason)
        except ValidationError as exc:
            raise UserError(f"Invalid value for --result: {exc}") from exc
    click.echo(f"Command {command_id} in domain `{domain}` completed by {name}")


@main.command("audit", epilog=_EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@_dsn_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array of events.")
def audit_cmd(domain: str, command_id: uuid.UUID, dsn: str, as_json: bool) -> None:
    """Show a command's audit trail, oldest event first."""
    from .audit import get_audit

    with _connect(dsn) as conn:
        events = get_audit(conn, domain, command_id)
    if as_json:
        click.echo(_json(events))
        return
    _echo_audit(events)


# -- stats -------------------------------------------------------------------------


@main.command("stats")
@_dsn_option
@click.option("--domain", default=None, help="Only this domain.")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Refresh every SECONDS until Ctrl-C (the table in place; JSON one line each).",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array, one object per domain.")
def stats_cmd(dsn: str, domain: str | None, watch: float | None, as_json: bool) -> None:
    """Per domain: queue depth, due, delayed, in flight, troubleshooting, ended lately."""
    import itertools
    import time

    from .stats import TABLE_HEADERS, domain_stats, table_rows

    in_place = watch is not None and not as_json and sys.stdout.isatty()
    try:
        with _connect(dsn) as conn:
            for refresh in itertools.count():
                try:
                    found = domain_stats(conn, domain)
                except ValueError as exc:
                    raise click.BadParameter(str(exc), param_hint="'--domain'") from exc
                if as_json:
                    click.echo(_json(found))
                else:
                    if in_place:
                        click.echo("\x1b[H\x1b[2J", nl=False, color=True)  # home, clear
                    elif refresh:
                        click.echo("")
                    if found:
                        _table(TABLE_HEADERS, table_rows(found))
                    else:
                        click.echo(f"No domain `{domain}`" if domain else "No domain installed")
                if watch is None:
                    return
                time.sleep(watch)
    except KeyboardInterrupt:  # Ctrl-C ends --watch: the expected way out
        return


# -- console -----------------------------------------------------------------------


@main.command("console")
@_dsn_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8089, show_default=True, type=click.IntRange(0, 65535))
@click.option("--read-only", is_flag=True, help="Offer and accept no actions.")
@_domains_option("results given to `complete` are")
def console_cmd(dsn: str, host: str, port: int, read_only: bool, module: str | None) -> None:
    """Serve the operator console (token: $CBUS_CONSOLE_TOKEN, or one printed now)."""
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn", "jinja2") if importlib.util.find_spec(m) is None]
    if missing:
        raise click.ClickException(
            f'The console needs {", ".join(missing)}: pip install "cbus[console]"'
        )
    from .console import new_token, serve
    from .logs import configure as configure_logs

    configure_logs("INFO", "text")  # each action: who, what, which command
    _import_domains(module)
    token = os.environ.get("CBUS_CONSOLE_TOKEN") or ""
    shown = "from $CBUS_CONSOLE_TOKEN" if token else (token := new_token())
    mode = " (read-only)" if read_only else ""
    click.echo(f"cbus console{mode} on http://{host}:{port}/  token: {shown}", err=True)
    try:
        serve(dsn, token, host=host, port=port, read_only=read_only)
    except KeyboardInterrupt:  # uvicorn stops cleanly, then raises Ctrl-C again
        pass
    except OSError as exc:
        raise click.ClickException(f"Cannot listen on {host}:{port}: {exc.strerror}") from exc


def _log_level(value: str) -> str:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise UserError(
            f"Unknown log level `{value}`: pass --log-level DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return value.upper()


if __name__ == "__main__":  # pragma: no cover
    main()
