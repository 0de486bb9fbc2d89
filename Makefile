# Two commands set up a fresh machine: `make demo` (the main job end to end) and `make test`.
# Both create .venv if it is missing and (re)install when pyproject.toml or constraints.txt changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.steelqc-installed
PYTEST_ARGS ?=

.PHONY: demo lint test test-fast bench bench-fullsize lock clean-state system-deps

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# venvs made before the switch to tensorflow-cpu hold the CUDA build in the same folder: remove both, reinstall one
	@if $(BIN)/python -m pip show tensorflow >/dev/null 2>&1; then $(BIN)/python -m pip uninstall -q -y tensorflow tensorflow-cpu; fi
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/steelqc demo

# ruff (style, imports, bugbear) and mypy (steelqc, tasks, flows; settings in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check steelqc tasks flows tests bench
	$(BIN)/mypy

# Lint first: a finding fails `make test` (and CI) before the suite starts.
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everything but the end-to-end tests marked slow (they still run in `make test` and CI).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Debian packages that a few tests use (they skip without them): PostgreSQL for MLflow-on-PostgreSQL,
# Chromium for the app's browser test. Needs root (apt-get); installs only what is missing.
system-deps:
	@need=""; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	if [ -n "$$need" ]; then \
		echo "installing:$$need"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need; \
	else echo "system packages present"; fi

# Speed and memory benchmarks, each printing its ratio against a baseline measured in the same run.
# (-P: bench/inspect.py must not shadow the standard library's inspect module.)
bench: $(STAMP)
	@for script in rle validate patches train inspect runtime_settings stream_memory backbones; do echo "== bench/$$script.py"; $(BIN)/python -P bench/$$script.py || exit 1; done

# The full-size run: 12,568 generated images, validation + patch index with the local and the Dask runner.
bench-fullsize: $(STAMP)
	$(BIN)/python -P bench/fullsize.py

# Refresh the pinned set after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^steelqc' > constraints.txt

clean-state:
	rm -rf .steelqc
