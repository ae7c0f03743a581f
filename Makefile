# Two entry points (see README): `make run` and `make test`. Both create/refresh .venv from requirements.txt (and
# requirements-nodeps.txt, installed without dependencies).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt | cksum | cut -d' ' -f1)
PORT ?= 8501
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: venv run test lint bench bench-quick chromium demo clean

$(STAMP): requirements.txt requirements-nodeps.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) -m tp_core build-demo

run: demo
	@if [ -f app.py ]; then \
		$(PY) -m tp_core serve --port $(PORT); \
	fi

# Debian's chromium for the real-browser tests (never `playwright install`: it downloads a browser). Without it those
# tests fail, so a failed install stops here; TP_SKIP_BROWSER=1 opts out of both (the tests are then skipped).
chromium:
	@if [ "$${TP_SKIP_BROWSER:-}" = 1 ]; then echo "TP_SKIP_BROWSER=1: no chromium; the browser tests are skipped"; \
	elif ! command -v chromium >/dev/null 2>&1; then echo "installing Debian chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| { echo "error: could not install Debian chromium (TP_SKIP_BROWSER=1 skips the browser tests)"; exit 1; }; \
	fi

# pytest-xdist: TEST_WORKERS processes, each running whole test modules (--dist loadfile: a module's fixtures are set
# up once); the app, server and browser modules overlap with the unit tests. Two on two cores: a third worker made
# the same suite take more CPU and longer (README, Tests). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: venv chromium lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 \
		$(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# ruff with the repository's ruff.toml; part of `make test`, so CI lints before it tests
lint: venv
	$(PY) -m ruff check .

bench: venv
	$(PY) benchmarks/run_all.py

bench-quick: venv
	$(PY) benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
