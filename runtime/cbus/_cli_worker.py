"""`cbus worker`: load the handlers a factory makes and run them until a signal."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import click

from ._cli_common import add_cwd_to_path, dsn_option
from ._cli_db import UserError, db_errors, wait_for_server

__all__ = ["load_factory", "worker"]


def load_factory(spec: str) -> Iterable[object]:
    """Call `MODULE:FACTORY` and return the handler objects it makes."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(
            f"Invalid factory `{spec}`: expected MODULE:FACTORY, for example `myapp.handlers:make`"
        )
    add_cwd_to_path()
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


@click.command()
@click.argument("factory")
@dsn_option
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

    FACTORY is MODULE:CALLABLE, for example `myapp.handlers:make` (`cbgen scaffold`
    writes a `make()`): cbus imports MODULE as Python would, from the current folder
    and the folders of PYTHONPATH (add the folder `cbgen generate` wrote to, for
    example `PYTHONPATH=generated`), and calls CALLABLE() with no arguments; it
    returns one handler object or a list of them.

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


def _log_level(value: str) -> str:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise UserError(
            f"Unknown log level `{value}`: pass --log-level DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return value.upper()
