# Every target sets up .venv itself; `make demo` and `make test` work from a clean clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint format clean bench image

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is required (set PYTHON=python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'blackforest==0.1.3'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/kontext-receiver demo

lint: $(STAMP)
	$(BIN)/ruff check receiver tests
	$(BIN)/ruff format --check receiver tests
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

format: $(STAMP)
	$(BIN)/ruff format receiver tests
	$(BIN)/ruff check --fix receiver tests

test: lint
	$(BIN)/pytest

# Performance figures against baselines measured in the same run (about 4 minutes, plus about 2 the
# first time, to build the cached stores of figure 9; not part of `test`).
# `$(BIN)/python -m tests.bench --quick` is a shorter variant (about 2 minutes). Writes bench-results.json.
# `--only 1 8` runs phases 1 and 8 alone: each name's first words, whole (1 is not 1s, 10 or 11).
bench: $(STAMP)
	$(BIN)/python -m tests.bench

# The container image, built offline with buildah (no Docker daemon): deploy/build-image.sh.
# IMAGE=name:tag overrides the default localhost/kontext-receiver:dev.
image: $(STAMP)
	PYTHON=$(BIN)/python deploy/build-image.sh

clean:
	rm -rf $(VENV) data build .mypy_cache .ruff_cache .pytest_cache
