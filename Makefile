# Every target builds .venv on first use, so a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo console test lint typecheck unit bench bench-quick wrk jq postgresql chromium chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# The demo, then the relay and its stand-ins left running with the console open, until Ctrl-C.
console: $(STAMP)
	$(BIN)/python -m scripts.console_demo

lint: $(STAMP)
	$(BIN)/ruff check relay tests scripts bench
	$(BIN)/ruff format --check relay tests scripts bench

typecheck: $(STAMP)
	$(BIN)/mypy

# One pytest worker per core, at most four: most tests wait on processes of their own, and each worker starts
# its own throwaway PostgreSQL server.
unit: $(STAMP) jq postgresql chromium wrk
	$(BIN)/pytest -q -n auto --maxprocesses 4

test: lint typecheck unit

# The fault-injection suite on its long profile; docs/reliability.md gets the figures even when one fails.
chaos: $(STAMP)
	mkdir -p var
	rm -f var/chaos-results.jsonl
	RELAY_CHAOS=full RELAY_CHAOS_RESULTS=$(CURDIR)/var/chaos-results.jsonl $(BIN)/pytest -q tests/chaos; \
	  status=$$?; $(BIN)/python scripts/chaos_report.py var/chaos-results.jsonl || status=1; exit $$status

# The saturating load generator comes from Debian's packages.
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

# The runbooks' recipes, which tests/test_runbooks.py runs as shown, use jq and curl from Debian's packages.
jq:
	@command -v jq >/dev/null && command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq jq curl; }

# The tests start a throwaway PostgreSQL 15 server of their own from Debian's packages.
postgresql:
	@test -x /usr/lib/postgresql/15/bin/postgres || { apt-get update -qq && apt-get install -y -qq postgresql; }

# The console's browser tests drive Debian's Chromium through Playwright (no browser download).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

# SQLite and PostgreSQL (a throwaway server of the run's own). Exits 1, naming each one, when a target is
# missed; bench/RESULTS.md gets the figures either way.
bench: $(STAMP) wrk postgresql
	$(BIN)/python -m bench.run

bench-quick: $(STAMP) wrk postgresql
	$(BIN)/python -m bench.run --quick --out /tmp/relay-bench-quick.md

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
