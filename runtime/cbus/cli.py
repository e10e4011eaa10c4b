"""The `cbus` command: install the database, run workers, operate the troubleshooting queue.

Each group of subcommands lives in a module of its own (`_cli_worker`, `_cli_tsq`,
`_cli_ops`), registered here with one line; what they share is in `_cli_common`.
"""

from __future__ import annotations

import click
import psycopg

from ._cli_common import add_cwd_to_path, connect_operator, dsn_option, import_generated
from ._cli_dev import dev
from ._cli_ops import audit_cmd, console_cmd, stats_cmd
from ._cli_prune import db_prune
from ._cli_tsq import _account as _account
from ._cli_tsq import tsq
from ._cli_worker import load_factory as load_factory
from ._cli_worker import worker

__all__ = ["main"]


@click.group()
@click.version_option(package_name="cbus")
def main() -> None:
    """cbus: a typed command bus on PostgreSQL + PGMQ."""


@main.group()
def db() -> None:
    """Database set-up."""


@db.command("install")
@dsn_option
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

    domains = import_generated(module) if module else []
    with connect_operator(dsn) as conn:
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
@dsn_option
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
    add_cwd_to_path()
    try:
        domains = roles.domains_of(module)
    except (ImportError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--domains'") from exc
    with connect_operator(dsn) as conn:
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


main.add_command(worker)
main.add_command(tsq)
main.add_command(audit_cmd)
main.add_command(stats_cmd)
main.add_command(console_cmd)
main.add_command(dev)


if __name__ == "__main__":  # pragma: no cover
    main()
