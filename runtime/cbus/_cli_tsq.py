"""`cbus tsq ...`: list, show, retry, cancel and complete commands in the troubleshooting queue."""

from __future__ import annotations

import getpass
import os
import uuid
from collections.abc import Callable
from typing import Any

import click

from ._cli_common import (
    EXIT_HELP,
    clip,
    connect_operator,
    domains_option,
    dsn_option,
    echo_audit,
    error_of,
    import_domains,
    table,
    to_json,
    when,
)
from ._cli_db import UserError

__all__ = ["tsq"]


@click.group(epilog=EXIT_HELP)
def tsq() -> None:
    """The troubleshooting queue: commands set aside for an operator to decide."""


@tsq.command("list", epilog=EXIT_HELP)
@dsn_option
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

    with connect_operator(dsn) as conn:
        try:
            page = list_troubleshooting(conn, domain=domain, kind=kind, limit=limit, after=after)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--after'") from exc
    if as_json:
        click.echo(to_json({"items": page.items, "next_cursor": page.next_cursor}))
        return
    if not page.items:
        click.echo("The troubleshooting queue is empty" + (" from here" if after else ""))
        return
    table(
        ["UPDATED", "DOMAIN", "COMMAND_ID", "KIND", "ATTEMPTS", "LAST ERROR"],
        [
            [
                when(e.updated_at),
                e.domain,
                str(e.command_id),
                e.kind,
                f"{e.attempts}/{e.max_attempts}",
                clip(error_of(e.last_error_type, e.last_error_code, e.last_error_message)),
            ]
            for e in page.items
        ],
    )
    if page.next_cursor:
        click.echo(f"\nMore: cbus tsq list --after {page.next_cursor}")


@tsq.command("show", epilog=EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@dsn_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def tsq_show(domain: str, command_id: uuid.UUID, dsn: str, as_json: bool) -> None:
    """Show a command: its record, its PGMQ message and its audit trail."""
    from .troubleshooting import show_command

    with connect_operator(dsn) as conn:
        detail = show_command(conn, domain, command_id)
    if as_json:
        click.echo(to_json(detail))
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
            error_of(r.last_error_type, r.last_error_code, r.last_error_message) or "-",
        ),
        ("error details", "-" if r.last_error_details is None else to_json(r.last_error_details)),
        ("result", "-" if r.result is None else to_json(r.result)),
        ("created", when(r.created_at)),
        ("updated", when(r.updated_at)),
        ("finished", when(r.finished_at)),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key.ljust(width)}  {value}")
    click.echo("")
    if detail.message_source is None:
        click.echo("message: gone (deleted on completion, or purged from the archive)")
    else:
        click.echo(f"message (msg_id {detail.msg_id}, in the {detail.message_source}):")
        click.echo("  " + to_json(detail.message))
        click.echo("headers:")
        click.echo("  " + to_json(detail.headers))
    click.echo("")
    echo_audit(detail.audit)


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


@tsq.command("retry", epilog=EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@dsn_option
@click.option("--reason", default=None, help="Why, for the audit trail.")
@_operator_option
def tsq_retry(
    domain: str, command_id: uuid.UUID, dsn: str, reason: str | None, operator: str
) -> None:
    """Send the command again under the same COMMAND_ID, its attempts reset."""
    from .troubleshooting import retry

    name = _operator(operator)
    with connect_operator(dsn) as conn:
        retry(conn, domain, command_id, operator=name, reason=reason)
    click.echo(f"Command {command_id} in domain `{domain}` sent again by {name}")


@tsq.command("cancel", epilog=EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@dsn_option
@click.option("--reason", default=None, help="Why, for the audit trail.")
@_operator_option
def tsq_cancel(
    domain: str, command_id: uuid.UUID, dsn: str, reason: str | None, operator: str
) -> None:
    """End the command as CANCELED: it never runs again."""
    from .troubleshooting import cancel

    name = _operator(operator)
    with connect_operator(dsn) as conn:
        cancel(conn, domain, command_id, operator=name, reason=reason)
    click.echo(f"Command {command_id} in domain `{domain}` canceled by {name}")


def _parse_result(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    import json

    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from exc


@tsq.command("complete", epilog=EXIT_HELP)
@click.argument("domain")
@click.argument("command_id", type=click.UUID)
@dsn_option
@click.option(
    "--result",
    default="null",
    show_default=True,
    metavar="JSON",
    callback=_parse_result,
    help="The command's result, as its handler would return it.",
)
@click.option("--reason", default=None, help="Why, for the audit trail.")
@domains_option("--result is")
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
    import_domains(module)
    with connect_operator(dsn) as conn:
        try:
            complete(conn, domain, command_id, operator=name, result=result, reason=reason)
        except ValidationError as exc:
            raise UserError(f"Invalid value for --result: {exc}") from exc
    click.echo(f"Command {command_id} in domain `{domain}` completed by {name}")
