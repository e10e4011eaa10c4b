"""`cbus tsq` and `cbus audit`: through click's CliRunner, and once as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import cbus
import psycopg
import pytest
from cbus._cli_db import START_GRACE
from cbus.cli import main
from click.testing import CliRunner, Result

from .helpers import drain
from .test_troubleshooting import in_tsq, status


def cbus_cli(dsn: str, *args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner(env={"CBUS_DSN": dsn, "USER": "tester", **(env or {})})
    return runner.invoke(main, list(args), catch_exceptions=False)


def write_factory(
    folder: Path,
    testbus: ModuleType,
    module: str = "cli_handlers",
    handlers: str = "[domain.TestbusHandlers()]",
    more: str = "",
) -> None:
    """A handler module `module` whose `make()` returns `handlers`, for `cbus worker`."""
    (folder / f"{module}.py").write_text(
        f"import {testbus.__name__} as domain\n\n\ndef make():\n    return {handlers}\n{more}"
    )


def test_list_shows_a_table_and_json(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    command_ids, _ = in_tsq(dsn, conn, testbus, 3)
    result = cbus_cli(dsn, "tsq", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "UPDATED",
        "DOMAIN",
        "COMMAND_ID",
        "KIND",
        "ATTEMPTS",
        "LAST",
        "ERROR",
    ]
    assert len(lines) == 4
    for command_id in command_ids:
        assert str(command_id) in result.stdout
    assert "testbus.Echo  1/3       PermanentError [BROKEN]: n=" in result.stdout

    result = cbus_cli(dsn, "tsq", "list", "--json", "--domain", "testbus", "--kind", "Echo")
    assert result.exit_code == 0, result.output
    page = json.loads(result.stdout)
    assert {item["command_id"] for item in page["items"]} == {str(c) for c in command_ids}
    assert page["next_cursor"] is None
    assert page["items"][0]["last_error_code"] == "BROKEN"

    result = cbus_cli(dsn, "tsq", "list", "--domain", "orders")
    assert (result.exit_code, result.stdout) == (0, "The troubleshooting queue is empty\n")


def test_list_pages_with_after(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    command_ids, _ = in_tsq(dsn, conn, testbus, 3)
    first = cbus_cli(dsn, "tsq", "list", "--limit", "2")
    assert first.exit_code == 0, first.output
    more = first.stdout.splitlines()[-1]
    assert more.startswith("More: cbus tsq list --after ")
    cursor = more.rsplit(" ", 1)[1]
    second = cbus_cli(dsn, "tsq", "list", "--limit", "2", "--after", cursor, "--json")
    page = json.loads(second.stdout)
    assert len(page["items"]) == 1 and page["next_cursor"] is None
    seen = [line.split()[2] for line in first.stdout.splitlines()[1:3]]
    assert {*seen, page["items"][0]["command_id"]} == {str(c) for c in command_ids}

    bad = cbus_cli(dsn, "tsq", "list", "--after", "garbage")
    assert bad.exit_code == 2
    assert (
        "Invalid value for '--after': Invalid cursor 'garbage': pass the `next_cursor` of a "
        "previous page" in bad.stderr
    )


def test_show_prints_record_message_and_audit(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    (command_id,), _ = in_tsq(dsn, conn, testbus)
    result = cbus_cli(dsn, "tsq", "show", "testbus", str(command_id))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"command_id      {command_id}\n" in out
    assert "status          IN_TROUBLESHOOTING_QUEUE\n" in out
    assert "last error      PermanentError [BROKEN]: n=0 is broken today\n" in out
    assert 'in the archive):\n  {"n":0,"text":""}\n' in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("AT "))
    events = [line.split()[1] for line in lines[header + 1 : header + 4]]
    assert events == ["sent*", "failed", "moved_to_troubleshooting"]
    assert "* from the command log" in out

    as_json = json.loads(cbus_cli(dsn, "tsq", "show", "testbus", str(command_id), "--json").stdout)
    assert as_json["record"]["status"] == "IN_TROUBLESHOOTING_QUEUE"
    assert as_json["message"] == {"n": 0, "text": ""}
    assert [e["event"] for e in as_json["audit"]] == ["sent", "failed", "moved_to_troubleshooting"]


def test_retry_cancel_complete_and_audit(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    (to_retry, to_cancel, to_complete), handlers = in_tsq(dsn, conn, testbus, 3)

    result = cbus_cli(dsn, "tsq", "retry", "testbus", str(to_retry), "--reason", "fixed")
    assert (result.exit_code, result.stdout) == (
        0,
        f"Command {to_retry} in domain `testbus` sent again by tester\n",
    )
    result = cbus_cli(
        dsn, "tsq", "cancel", "testbus", str(to_cancel), "--reason", "dup", "--operator", "bob"
    )
    assert (result.exit_code, result.stdout) == (
        0,
        f"Command {to_cancel} in domain `testbus` canceled by bob\n",
    )
    result = cbus_cli(
        dsn,
        "tsq",
        "complete",
        "testbus",
        str(to_complete),
        "--result",
        '{"n": 2, "text": "manual"}',
    )
    assert result.exit_code == 0, result.output

    drain(dsn, [handlers])
    assert status(conn, to_retry) == "COMPLETED"
    assert status(conn, to_cancel) == "CANCELED"
    record = cbus.get_command(conn, "testbus", to_complete)
    assert record is not None
    assert (record.status, record.result) == ("COMPLETED", {"n": 2, "text": "manual"})

    audit = cbus_cli(dsn, "audit", "testbus", str(to_retry))
    assert audit.exit_code == 0, audit.output
    rows = [line.split() for line in audit.stdout.splitlines()[1:]]
    assert [r[1] for r in rows[:5]] == [
        "sent*",
        "failed",
        "moved_to_troubleshooting",
        "retried",
        "completed*",
    ]
    assert rows[3][3] == "tester"
    assert '"reason":"fixed"' in rows[3][4]
    cancel_audit = json.loads(cbus_cli(dsn, "audit", "testbus", str(to_cancel), "--json").stdout)
    assert cancel_audit[-1]["event"] == "canceled"
    assert cancel_audit[-1]["operator"] == "bob"
    assert cancel_audit[-1]["detail"] == {"reason": "dup"}


def test_errors_are_one_line_with_an_exit_status(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    (command_id,), _ = in_tsq(dsn, conn, testbus)
    missing = uuid.UUID("00000000-0000-4000-8000-000000000001")

    result = cbus_cli(dsn, "tsq", "retry", "testbus", str(missing))
    assert (result.exit_code, result.stderr) == (
        3,
        f"Error: No command {missing} in domain `testbus`\n",
    )
    result = cbus_cli(dsn, "audit", "testbus", str(missing))
    assert result.exit_code == 3

    assert (
        cbus_cli(dsn, "tsq", "cancel", "testbus", str(command_id), "--reason", "x").exit_code == 0
    )
    result = cbus_cli(dsn, "tsq", "complete", "testbus", str(command_id))
    assert result.exit_code == 4
    assert result.stderr.startswith(
        f"Error: Cannot complete command {command_id} in domain `testbus`: it is CANCELED, "
        "not IN_TROUBLESHOOTING_QUEUE (canceled by tester at "
    )

    result = cbus_cli(dsn, "tsq", "complete", "testbus", str(command_id), "--result", "{nope")
    assert result.exit_code == 2
    assert "Invalid value for '--result': not valid JSON: " in result.stderr

    result = cbus_cli(dsn, "tsq", "show", "testbus", "not-a-uuid")
    assert result.exit_code == 2
    assert "'not-a-uuid' is not a valid UUID" in result.stderr

    result = cbus_cli(dsn, "tsq", "retry", "testbus", str(command_id), "--operator", " ")
    assert result.exit_code == 2
    assert "Invalid value for '--operator': no operator name: pass --operator NAME" in result.stderr

    unreachable = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    result = cbus_cli(unreachable, "tsq", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Cannot reach PostgreSQL: ")
    assert result.stderr.count("\n") == 1


def test_a_real_cbus_process(dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType) -> None:
    (command_id,), _ = in_tsq(dsn, conn, testbus)
    exe = str(Path(sys.executable).with_name("cbus"))
    env = {**os.environ, "CBUS_DSN": dsn, "USER": "ops"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)

    listed = run("tsq", "list", "--domain", "testbus")
    assert listed.returncode == 0, listed.stderr
    assert str(command_id) in listed.stdout

    canceled = run("tsq", "cancel", "testbus", str(command_id), "--reason", "from a shell")
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout == f"Command {command_id} in domain `testbus` canceled by ops\n"

    again = run("tsq", "retry", "testbus", str(command_id))
    assert again.returncode == 4
    assert "Traceback" not in again.stderr
    assert again.stderr.startswith(f"Error: Cannot retry command {command_id}")

    audit = run("audit", "testbus", str(command_id))
    assert audit.returncode == 0, audit.stderr
    last = audit.stdout.splitlines()[-2].split()  # the footnote on synthetic events is last
    assert last[1:4] == ["canceled", "1", "ops"]

    missing = run("tsq", "show", "testbus", str(uuid.uuid4()))
    assert missing.returncode == 3 and "Traceback" not in missing.stderr


@pytest.mark.parametrize("group", ["tsq", "audit"])
def test_help_lists_exit_statuses(group: str) -> None:
    result = CliRunner().invoke(main, [group, "--help"])
    assert result.exit_code == 0
    assert "3 command not found" in result.stdout


def test_json_logs_keep_the_worker_s_keys() -> None:
    import io
    import logging

    from cbus.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cbus.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        command_id = uuid.uuid4()
        logger.warning(
            "message %s set aside", 7, extra={"action": "poison", "command_id": command_id}
        )
    finally:
        logger.removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert record["message"] == "message 7 set aside"
    assert record["level"] == "WARNING"
    assert record["logger"] == "cbus.test.json"
    assert record["action"] == "poison"
    assert record["command_id"] == str(command_id)


def test_worker_on_a_database_without_cbus_exits_with_the_reason(
    empty_db: str, testbus: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_factory(tmp_path, testbus)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"CBUS_DSN": empty_db})
    result = runner.invoke(main, ["worker", "cli_handlers:make", "--until-idle"])
    assert result.exit_code == 1
    assert "cbus is not installed in this database" in result.output


def test_complete_checks_the_result_with_the_generated_package(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    (command_id,), _ = in_tsq(dsn, conn, testbus, 1)
    args = ["tsq", "complete", "testbus", str(command_id), "--domains", "tbpkg"]
    result = cbus_cli(dsn, *args, "--result", '{"n": "seven"}')
    assert result.exit_code == 2, result.output
    assert "Invalid value for --result: Invalid result for `testbus.Echo`: " in result.stderr
    result = cbus_cli(dsn, *args, "--result", '{"n": 7, "text": "by hand"}')
    assert result.exit_code == 0, result.output
    record = cbus.get_command(conn, "testbus", command_id)
    assert record is not None and record.result == {"n": 7, "text": "by hand"}


NO_ACCOUNT_ENV = {"USER": None, "LOGNAME": None, "LNAME": None, "USERNAME": None}


def _one_line_error(result: Result, exit_code: int = 2) -> str:
    assert result.exit_code == exit_code, result.output
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    return result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["db", "install"],
        ["worker", "tests.chaos_handlers:make"],
        ["tsq", "list"],
        ["tsq", "show", "testbus", str(uuid.UUID(int=1))],
        ["audit", "testbus", str(uuid.UUID(int=1))],
    ],
)
def test_a_sqlalchemy_url_is_one_line_that_says_drop_the_driver(args: list[str]) -> None:
    url = "postgresql+psycopg://app:Hunter2@127.0.0.1/app"
    for result in (
        cbus_cli(url, *args),
        CliRunner().invoke(main, [*args, "--dsn", url], catch_exceptions=False),
    ):
        line = _one_line_error(result)
        assert "SQLAlchemy URL" in line and "drop `+psycopg`" in line
        assert "Hunter2" not in result.output


@pytest.mark.parametrize("args", [["db", "install"], ["worker", "x:y"], ["tsq", "list"]])
def test_a_malformed_key_value_dsn_never_echoes_the_password(args: list[str]) -> None:
    result = cbus_cli("host=127.0.0.1 password=Hunter2 Secret", *args)
    line = _one_line_error(result)
    assert line.startswith("Error: Malformed DSN: ")
    assert "Secret" not in result.output and "Hunter2" not in result.output


def test_a_password_on_the_command_line_is_warned_about(dsn: str) -> None:
    with_password = psycopg.conninfo.make_conninfo(dsn, password="not-needed")
    runner = CliRunner()
    result = runner.invoke(main, ["tsq", "list", "--dsn", with_password])
    assert result.exit_code == 0, result.output
    [warning] = result.stderr.splitlines()
    assert warning.startswith("Warning: --dsn carries a password")
    assert "CBUS_DSN" in warning
    from_env = cbus_cli(with_password, "tsq", "list")
    assert (from_env.exit_code, from_env.stderr) == (0, "")


@pytest.mark.parametrize(
    "args",
    [
        ["tsq", "list"],
        ["tsq", "show", "testbus", str(uuid.UUID(int=1))],
        ["tsq", "retry", "testbus", str(uuid.UUID(int=1))],
        ["tsq", "cancel", "testbus", str(uuid.UUID(int=1))],
        ["tsq", "complete", "testbus", str(uuid.UUID(int=1))],
        ["audit", "testbus", str(uuid.UUID(int=1))],
    ],
)
def test_a_database_without_cbus_says_to_install_it(empty_db: str, args: list[str]) -> None:
    line = _one_line_error(cbus_cli(empty_db, *args), exit_code=1)
    assert "run `cbus db install --domains PKG`" in line


def test_worker_mistakes_are_one_line(
    dsn: str, testbus: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_factory(
        tmp_path,
        testbus,
        "two_handlers",
        "[domain.TestbusHandlers(), domain.TestbusHandlers()]",
        "\n\ndef broken():\n    raise RuntimeError('no config')\n",
    )
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(cbus_cli(dsn, "worker", "two_handlers:make", "--log-level", "LOUD"))
    assert "Unknown log level `LOUD`: pass --log-level DEBUG, INFO" in line
    line = _one_line_error(cbus_cli(dsn, "worker", "two_handlers:make", "--until-idle"))
    assert "two_handlers:make: Two handler objects serve the same domain" in line
    for factory, expected in [
        ("two_handlers", "Invalid factory `two_handlers`: expected MODULE:FACTORY"),
        ("no_such_module:make", "Cannot import `no_such_module`"),
        ("two_handlers:nothing", "`two_handlers` has no callable `nothing`"),
        ("two_handlers:broken", "two_handlers:broken() raised RuntimeError: no config"),
    ]:
        assert expected in _one_line_error(cbus_cli(dsn, "worker", factory)), factory


def test_a_worker_where_nothing_listens_fails_fast_in_one_line(
    dsn: str, testbus: ModuleType, tmp_path: Path
) -> None:
    write_factory(tmp_path, testbus)
    exe = str(Path(sys.executable).with_name("cbus"))
    env = {
        **os.environ,
        "CBUS_DSN": "postgresql://nobody@127.0.0.1:1/none",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    done = subprocess.run(
        [exe, "worker", "cli_handlers:make"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("Error: Cannot reach PostgreSQL: "), line
    # A database that does not exist can never work: reported at once, without the grace.
    env["CBUS_DSN"] = psycopg.conninfo.make_conninfo(dsn, dbname="cbus_no_such_db")
    started = time.monotonic()
    done = subprocess.run(
        [exe, "worker", "cli_handlers:make"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 1 and 'database "cbus_no_such_db" does not exist' in done.stderr
    assert time.monotonic() - started < START_GRACE


def test_operator_defaults_to_the_account_without_user(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType
) -> None:
    import getpass

    ids, _ = in_tsq(dsn, conn, testbus, 3)
    account = getpass.getuser() if os.environ.get("USER") is None else None
    for action, command_id in zip(["retry", "cancel", "complete"], ids, strict=True):
        result = cbus_cli(dsn, "tsq", action, "testbus", str(command_id), env=NO_ACCOUNT_ENV)
        assert result.exit_code == 0, result.output
        import pwd

        expected = account or pwd.getpwuid(os.getuid()).pw_name
        assert result.stdout.rstrip().endswith(f" by {expected}"), result.stdout
    events = json.loads(cbus_cli(dsn, "audit", "testbus", str(ids[1]), "--json").stdout)
    assert events[-1]["event"] == "canceled" and events[-1]["detail"] == {"reason": None}


def test_db_install_takes_a_domain_module(
    empty_db: str, testbus: ModuleType, conn: psycopg.Connection[Any]
) -> None:
    result = cbus_cli(empty_db, "db", "install", "--domains", testbus.__name__)
    assert result.exit_code == 0, result.output
    assert result.stdout == "queue testbus__commands ready\ncbus installed\n"
    line = _one_line_error(cbus_cli(empty_db, "db", "install", "--domains", "json"))
    assert "pass the generated package" in line


def test_complete_checks_the_result_against_the_installed_schema(
    dsn: str, conn: psycopg.Connection[Any], testbus: ModuleType, tmp_path: Path
) -> None:
    # A process that cannot import the generated package: only the database knows.
    ids, _ = in_tsq(dsn, conn, testbus, 3)
    # One of them as a command that declares no result (WriteRow), changed in the log.
    conn.execute(
        "UPDATE cbus.command SET kind = 'testbus.WriteRow' WHERE command_id = %s", (ids[2],)
    )
    conn.commit()
    exe = str(Path(sys.executable).with_name("cbus"))
    env = {**os.environ, "CBUS_DSN": dsn, "USER": "ops"}

    def complete(command_id: uuid.UUID, result: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, "tsq", "complete", "testbus", str(command_id), "--result", result],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    bad = complete(ids[0], '{"n": "seven", "text": "x"}')
    assert bad.returncode == 2, bad.stderr
    assert (
        "Invalid result for `testbus.Echo` (version 1, as installed): 'seven' is not of type "
        "'integer' - at `$.n`" in bad.stderr
    )
    assert "Traceback" not in bad.stderr
    missing = complete(ids[0], '{"n": 1}')
    assert missing.returncode == 2
    assert missing.stderr.endswith(": 'text' is a required property - at `$`\n")
    assert missing.stderr.count("\n") == 1, missing.stderr
    bogus = complete(ids[2], '{"bogus": 1}')
    assert bogus.returncode == 2, bogus.stderr
    assert "`testbus.WriteRow` declares no result: complete it without one" in bogus.stderr
    assert status(conn, ids[2]) == "IN_TROUBLESHOOTING_QUEUE"

    good = complete(ids[0], '{"n": 7, "text": "by hand"}')
    assert good.returncode == 0, good.stderr
    record = cbus.get_command(conn, "testbus", ids[0])
    assert record is not None and record.result == {"n": 7, "text": "by hand"}
    assert complete(ids[2], "null").returncode == 0


def test_operator_falls_back_to_the_uid_without_an_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import getpass

    from cbus.cli import _account

    def no_account() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")  # a container's bare uid

    monkeypatch.setattr(getpass, "getuser", no_account)
    assert _account() == f"uid {os.getuid()}"
