# The whole set-up is two commands: `make demo` and `make test`.
# Each builds (or refreshes) .venv from pyproject.toml by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_PATHS := $(wildcard runtime codegen generated tools tests bench examples)

.PHONY: venv demo test lint typecheck check-generated check-breaking unit bench bench-otel bench-scale soak bench-venv generate clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

generate: $(STAMP)
	$(VENV)/bin/cbgen generate
	$(PY) tools/async_to_sync.py

# `make demo ARGS=--keep` keeps the embedded server running after the summary.
demo: $(STAMP)
	$(PY) examples/demo.py $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict runtime/cbus codegen/cbgen generated/shop

check-generated: $(STAMP)
	$(VENV)/bin/cbgen generate --check
	$(PY) tools/async_to_sync.py --check
	$(PY) tools/cli_reference.py --check

# Schema changes since the previous commit must not strand queued messages.
check-breaking: $(STAMP)
	@if git rev-parse --verify --quiet HEAD~1 >/dev/null; then \
		$(VENV)/bin/cbgen breaking --against HEAD~1; \
	else echo "check-breaking: no HEAD~1 (shallow clone?), skipped"; fi

unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck check-generated check-breaking unit

# Benchmarks run in their own virtualenv: the peers (reliable-cmd, pgqueuer) are
# installed there only, never into the project's environment.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[codegen]" -r bench/requirements.txt
	@touch $@

bench: $(BENCH_VENV)/.installed $(STAMP)
	$(PY) bench/bench_codegen.py
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)
	$(PY) bench/otel.py
	$(PY) bench/keyed.py

# The cost of tracing's hooks (bench/otel.py): OpenTelemetry installed, no provider, vs hidden.
bench-otel: $(STAMP)
	$(PY) bench/otel.py $(BENCH_ARGS)

# Sends from 1, 8 and 32 threads against raw pgmq.send, and an idle worker's cost (ADR 0010).
.PHONY: bench-concurrency bench-idle
bench-concurrency: $(STAMP)
	$(PY) bench/concurrent_sends.py $(BENCH_ARGS)

bench-idle: $(STAMP)
	$(PY) bench/idle.py $(BENCH_ARGS)
# Drains against a deep backlog and a big command log (bench/scale.py, ~15-25 min;
# `make bench-scale SCALE_ARGS=--quick`: 100k backlog, 1M-row log, ~3 min).
bench-scale: $(STAMP)
	$(PY) bench/scale.py $(SCALE_ARGS)

# A steady load with retention for 30 minutes (bench/soak.py), not part of `make test`:
# `make soak SOAK_ARGS='--minutes 3 --retention 60'` for a short one.
soak: $(STAMP)
	$(PY) bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) *.egg-info .mypy_cache .pytest_cache .ruff_cache
