"""`cbus audit`, `cbus stats` and `cbus console`: what an operator reads and watches."""

from __future__ import annotations

import os
import sys
import uuid

import click

from ._cli_common import (
    EXIT_HELP,
    connect_operator,
    domains_option,
    dsn_option,
    echo_audit,
    import_domains,
    table,
    to_json,
)

__all__ = ["audit_cmd", "console_cmd", "stats_cmd"]


@click.command("audit", epilog=EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="A JSON array of events.")
def audit_cmd(domain: str, command_id: uuid.UUID, dsn: str, as_json: bool) -> None:
    """Show a command's audit trail, oldest event first."""
    from .audit import get_audit

    with connect_operator(dsn) as conn:
        events = get_audit(conn, domain, command_id)
    if as_json:
        click.echo(to_json(events))
        return
    echo_audit(events)


@click.command("stats")
@dsn_option
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
    """Per domain: queue depth, due, delayed, in flight, troubleshooting, ended lately;
    then each schedule's next and last firing."""
    import itertools
    import time

    from .stats import SCHEDULE_HEADERS, TABLE_HEADERS, domain_stats, schedule_rows, table_rows

    in_place = watch is not None and not as_json and sys.stdout.isatty()
    try:
        with connect_operator(dsn) as conn:
            for refresh in itertools.count():
                try:
                    found = domain_stats(conn, domain)
                except ValueError as exc:
                    raise click.BadParameter(str(exc), param_hint="'--domain'") from exc
                if as_json:
                    click.echo(to_json(found))
                else:
                    if in_place:
                        click.echo("\x1b[H\x1b[2J", nl=False, color=True)  # home, clear
                    elif refresh:
                        click.echo("")
                    if found:
                        table(TABLE_HEADERS, table_rows(found))
                        if schedules := schedule_rows(found):
                            click.echo("")
                            table(SCHEDULE_HEADERS, schedules)
                    else:
                        click.echo(f"No domain `{domain}`" if domain else "No domain installed")
                if watch is None:
                    return
                time.sleep(watch)
    except KeyboardInterrupt:  # Ctrl-C ends --watch: the expected way out
        return


@click.command("console")
@dsn_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8089, show_default=True, type=click.IntRange(0, 65535))
@click.option("--read-only", is_flag=True, help="Offer and accept no actions.")
@domains_option("results given to `complete` are")
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
    import_domains(module)
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
