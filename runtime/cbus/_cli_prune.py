"""`cbus db prune`: what retention says is due, removed at once (contract section 9)."""

from __future__ import annotations

import click

from ._cli_db import connect, dsn_callback

__all__ = ["db_prune"]


@click.command("prune")
@click.option(
    "--dsn",
    envvar="CBUS_DSN",
    required=True,
    help="PostgreSQL connection string (default: $CBUS_DSN, which `ps` does not show)",
    callback=dsn_callback,
)
@click.option("--domain", default=None, help="Only this domain (default: every domain).")
@click.option("--dry-run", is_flag=True, help="Count what is due; delete nothing.")
def db_prune(dsn: str, domain: str | None, dry_run: bool) -> None:
    """Delete the finished commands, audit rows and archived messages past their retention.

    Prints one line per domain and status with the rows removed (or, with --dry-run,
    that would be); waits for a worker's pass in progress to end first.
    """
    from ._pruner import known_domains, prune

    with connect(dsn) as conn:
        known = known_domains(conn)
        if domain is not None and domain not in known:
            shown = ", ".join(known) or "none"
            raise click.ClickException(
                f"Unknown domain `{domain}`: this database has no queue or recorded retention "
                f"for it (domains: {shown}); run `cbus db install --domains ...` first"
            )
        done = prune(conn, domains=[domain] if domain else None, dry_run=dry_run, wait=True)
    assert done is not None
    verb = "would be removed" if dry_run else "removed"
    for pruned in done:
        for what, n in pruned.counts.items():
            click.echo(f"{pruned.domain} {what}: {n} {verb}")
