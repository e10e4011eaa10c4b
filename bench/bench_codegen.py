"""Benchmark of cbgen: generation time for 500 commands, import time of the output.

Goals (issue 3): generating 500 commands in under 1 s, importing the generated
package in under 100 ms. Prints a table and writes `bench/results/codegen.json`.
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
from cbgen.render import format_python, load_sources, render_package, write_tree

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = 10
COMMANDS_PER_DOMAIN = 50
RUNS = 5


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


IMPORT_ONLY = (
    "import time, cbus, cbus.registry, msgspec; t = time.perf_counter(); import {pkg}; "
    "print(time.perf_counter() - t)"
)
IMPORT_COLD = "import time; t = time.perf_counter(); import {pkg}; print(time.perf_counter() - t)"


def bench_import(folder: Path, pkg: str, code: str) -> float:
    """Best of RUNS fresh interpreters, bytecode compiled beforehand (as once installed)."""
    compileall.compile_dir(folder, quiet=1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times = []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, "-c", code.format(pkg=pkg)],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        times.append(float(out.stdout))
    return min(times)


def main() -> None:
    sources = [(f"domain{d}.yaml", synthetic_schema(d)) for d in range(DOMAINS)]
    imports: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for models in ("dataclass", "struct"):
            target = Path(tmp) / f"bench_{models}"
            runs = [bench_generation(sources, target, models) for _ in range(RUNS)]
            if models == "dataclass":
                gen = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                lines = sum(p.read_text().count("\n") for p in target.glob("*.py"))
            imports[f"{models}_package"] = bench_import(Path(tmp), target.name, IMPORT_ONLY)
    imports["shop_runtime_loaded"] = bench_import(ROOT / "generated", "shop", IMPORT_ONLY)
    imports["shop_cold"] = bench_import(ROOT / "generated", "shop", IMPORT_COLD)

    n = DOMAINS * COMMANDS_PER_DOMAIN
    rows = [
        (f"generate {n} commands: load + check + model", gen["check"], None),
        (f"generate {n} commands: render", gen["render"], None),
        (f"generate {n} commands: ruff", gen["format"], None),
        (f"generate {n} commands: write", gen["write"], None),
        (f"generate {n} commands: total", gen["total"], 1.0),
        ("import shop (2 domains, 5 commands)", imports["shop_runtime_loaded"], 0.1),
        ("import shop, cold (runtime, psycopg included)", imports["shop_cold"], None),
        (f"import {n} commands, --models dataclass", imports["dataclass_package"], 0.1),
        (f"import {n} commands, --models struct", imports["struct_package"], 0.1),
    ]
    print(f"{'measure':<50} {'ms':>9} {'goal ms':>8}")
    for name, seconds, goal in rows:
        goal_s = f"{goal * 1000:.0f}" if goal else "-"
        print(f"{name:<50} {seconds * 1000:>9.1f} {goal_s:>8}")
    print(
        f"({DOMAINS} domains, {n} commands, {lines} generated lines; median of {RUNS} "
        f"generations, best of {RUNS} imports, runtime imported first unless cold)"
    )

    result = {
        "cbgen": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "domains": DOMAINS,
        "commands": DOMAINS * COMMANDS_PER_DOMAIN,
        "generated_lines": lines,
        "generation_s": gen,
        "import_s": imports,
        "goals_s": {"generation_total": 1.0, "import": 0.1},
    }
    out = ROOT / "bench" / "results" / "codegen.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
