"""Benchmark of cbgen: generation time for 500 commands, import time of the output.

Goals (issue 3): generating 500 commands in under 1 s, importing the generated
package in under 100 ms. The package imports its domains lazily, so the goal is
reported against `import PKG` and against one domain; importing every domain is
reported beside them. Prints a table and writes `bench/results/codegen.json`.
Run with `python bench/bench_codegen.py` from the repository root.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cbgen import __version__
from cbgen.model import build
from cbgen.output import format_python, write_tree
from cbgen.pipeline import load_sources
from cbgen.render import render_package

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = 10
COMMANDS_PER_DOMAIN = 50
RUNS = 5
IMPORT_RUNS = 9


def synthetic_schema(d: int) -> str:
    """One domain with types, constraints, defaults, results and errors on every command."""
    lines = [
        "cbus: 1",
        f"domain: domain{d}",
        f"description: Synthetic domain {d}.",
        "options: {max_attempts: 5, backoff: [1, 10, 60]}",
        "types:",
        "  Money:",
        "    fields:",
        "      amount: decimal",
        '      currency: {type: string, pattern: "^[A-Z]{3}$"}',
        "  Status:",
        "    enum: [new, active, closed]",
        "commands:",
    ]
    for c in range(COMMANDS_PER_DOMAIN):
        lines += [
            f"  DoThing{c}:",
            f"    description: Synthetic command {c}.",
            "    fields:",
            "      thing_id: uuid",
            "      name: {type: string, min_length: 1, max_length: 80}",
            "      qty: {type: int, ge: 1, default: 1}",
            "      price: Money",
            '      tags: {type: "list[string]", default: []}',
            "      status: {type: Status, default: new}",
            '      note: "string?"',
            "      at: datetime",
            "    result:",
            "      fields: {accepted: bool, eta_days: 'int?'}",
            "    errors: [NOT_FOUND, CONFLICT]",
        ]
    return "\n".join(lines) + "\n"


def bench_generation(sources: list[tuple[str, str]], target: Path, models: str) -> dict[str, float]:
    t0 = time.perf_counter()
    package = build(load_sources(sources), target.name, models)
    t1 = time.perf_counter()
    files = render_package(package)
    t2 = time.perf_counter()
    formatted = format_python(files, target)
    t3 = time.perf_counter()
    write_tree(target, formatted)
    t4 = time.perf_counter()
    return {
        "check": t1 - t0,
        "render": t2 - t1,
        "format": t3 - t2,
        "write": t4 - t3,
        "total": t4 - t0,
    }


# Each probe runs in a fresh interpreter with the runtime already imported (as in an
# application), and times `import PKG` (lazy), then one domain, then every domain.
IMPORT_STEPS = """\
import time, cbus, cbus.registry, msgspec
t0 = time.perf_counter()
import {pkg}
t1 = time.perf_counter()
import {pkg}.{first}
t2 = time.perf_counter()
for name in {pkg}.__all__:
    getattr({pkg}, name)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t0)
"""
IMPORT_COLD = IMPORT_STEPS.replace("import time, cbus, cbus.registry, msgspec", "import time")
STEPS = ("package", "one_domain", "all_domains")


def _python(folder: Path, code: str) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return [float(x) for x in out.stdout.split()]


def bench_imports(probes: dict[str, tuple[Path, str]]) -> dict[str, dict[str, float]]:
    """Best of IMPORT_RUNS per step; probes interleaved so load on the machine hits all alike.

    `probes` maps a label to (folder, code); bytecode is compiled beforehand, as once
    installed.
    """
    for folder, _ in probes.values():
        compileall.compile_dir(folder, quiet=1)
    times: dict[str, list[list[float]]] = {label: [] for label in probes}
    for _ in range(IMPORT_RUNS):
        for label, (folder, code) in probes.items():
            times[label].append(_python(folder, code))
    return {
        label: dict(zip(STEPS, (min(step) for step in zip(*runs, strict=True)), strict=True))
        for label, runs in times.items()
    }


def without_slots(source: Path, target: Path) -> None:
    """A copy of a dataclass package whose classes do not set `slots=True` (an experiment)."""
    target.mkdir()
    for p in source.glob("*.py"):
        text = p.read_text().replace(source.name, target.name)
        (target / p.name).write_text(text.replace(", slots=True)", ")"))


def main() -> None:
    sources = [(f"domain{d}.yaml", synthetic_schema(d)) for d in range(DOMAINS)]
    with tempfile.TemporaryDirectory() as tmp:
        probes: dict[str, tuple[Path, str]] = {}
        for models in ("dataclass", "struct"):
            target = Path(tmp) / f"bench_{models}"
            runs = [bench_generation(sources, target, models) for _ in range(RUNS)]
            if models == "dataclass":
                gen = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                lines = sum(p.read_text().count("\n") for p in target.glob("*.py"))
            probes[models] = (Path(tmp), IMPORT_STEPS.format(pkg=target.name, first="domain0"))
        without_slots(Path(tmp) / "bench_dataclass", Path(tmp) / "bench_noslots")
        probes["dataclass_no_slots"] = (
            Path(tmp),
            IMPORT_STEPS.format(pkg="bench_noslots", first="domain0"),
        )
        probes["shop"] = (ROOT / "generated", IMPORT_STEPS.format(pkg="shop", first="orders"))
        probes["shop_cold"] = (ROOT / "generated", IMPORT_COLD.format(pkg="shop", first="orders"))
        imports = bench_imports(probes)

    n = DOMAINS * COMMANDS_PER_DOMAIN
    per = COMMANDS_PER_DOMAIN
    rows = [
        (f"generate {n} commands: load + check + model", gen["check"], None),
        (f"generate {n} commands: render", gen["render"], None),
        (f"generate {n} commands: ruff", gen["format"], None),
        (f"generate {n} commands: write", gen["write"], None),
        (f"generate {n} commands: total", gen["total"], 1.0),
        ("import shop (lazy: no domain yet)", imports["shop"]["package"], 0.1),
        ("import shop.orders (2 commands)", imports["shop"]["one_domain"], 0.1),
        ("import shop, every domain (5 commands)", imports["shop"]["all_domains"], None),
        ("same, cold (runtime, psycopg included)", imports["shop_cold"]["all_domains"], None),
    ]
    for models in ("dataclass", "struct"):
        rows += [
            (f"--models {models}: import pkg (lazy)", imports[models]["package"], 0.1),
            (f"--models {models}: one domain ({per} commands)", imports[models]["one_domain"], 0.1),
            (
                f"--models {models}: all {DOMAINS} domains ({n} commands)",
                imports[models]["all_domains"],
                None,
            ),
        ]
    rows += [
        (
            "  experiment: dataclass without slots, one domain",
            imports["dataclass_no_slots"]["one_domain"],
            None,
        ),
        (
            f"  experiment: dataclass without slots, all {DOMAINS} domains",
            imports["dataclass_no_slots"]["all_domains"],
            None,
        ),
    ]
    print(f"{'measure':<56} {'ms':>9} {'goal ms':>8}")
    for name, seconds, goal in rows:
        goal_s = f"{goal * 1000:.0f}" if goal else "-"
        print(f"{name:<56} {seconds * 1000:>9.1f} {goal_s:>8}")
    print(
        f"({DOMAINS} domains, {n} commands, {lines} generated lines; median of {RUNS} "
        f"generations, best of {IMPORT_RUNS} imports, runtime imported first unless cold)"
    )

    result = {
        "cbgen": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "domains": DOMAINS,
        "commands": n,
        "generated_lines": lines,
        "generation_s": gen,
        "import_s": imports,
        "goals_s": {"generation_total": 1.0, "import_package": 0.1, "import_one_domain": 0.1},
    }
    out = ROOT / "bench" / "results" / "codegen.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
