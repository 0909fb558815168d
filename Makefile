# Ambient: `make demo` runs the whole pipeline on the generated demo world and serves the app;
# `make test` runs the test suite (`make test-postgres`: the app's tests on a throwaway PostgreSQL); `make bench` runs the benchmarks into bench-out/.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: demo test test-postgres postgres bench science chromium sounds stamps clean screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Debian's Chromium for the browser tests (never `playwright install`: it downloads a browser).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# Debian's recordings for benchmarks/bench_synthesis.py: real sounds that are not the demo world's.
sounds:
	@test -d /usr/share/games/lincity-ng/sounds -a -f /usr/share/games/ufoai/base/0snd.pk3 || \
		(apt-get update -qq && apt-get install -y -qq lincity-ng-data ufoai-sound >/dev/null)

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# Debian's PostgreSQL and psycopg for `make test-postgres` (the server runs from a temp dir, no service).
PG_STAMP := $(VENV)/.installed-postgres
$(PG_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,postgres]'
	touch $(PG_STAMP)

postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)

# The app's tests against PostgreSQL: each test gets a fresh database on a throwaway local cluster.
# PYTEST_ARGS picks other tests (default: the app, store, jobs, clusters, hardening and fuzz tests).
test-postgres: $(PG_STAMP) postgres
	bash scripts/test_postgres.sh $(PYTEST_ARGS)

demo: $(STAMP)
	bash scripts/demo.sh $(DEMO_DIR)

bench: $(STAMP) sounds
	mkdir -p bench-out
	for b in $(filter-out benchmarks/bench_science.py,$(wildcard benchmarks/bench_*.py)); do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The demo's finding on world seeds 0-4 with its controls, into BENCHMARKS.md (about 11 minutes a seed on
# 2 cores; not part of `make bench` or `make test`). SCIENCE_ARGS e.g. "--seeds 0 1" or "--out DIR".
# Tux Paint's stamps: the demo world's objects (scripts/demo.sh installs them too); without them worlds draw
# procedural objects and the figures are not the demo's.
stamps:
	@test -d /usr/share/tuxpaint/stamps || (apt-get update -qq && apt-get install -y -qq tuxpaint-stamps-default >/dev/null) || \
		echo "tuxpaint-stamps-default not installable: worlds use procedural objects"

science: $(STAMP) stamps
	$(BIN)/python benchmarks/bench_science.py $(SCIENCE_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) bench-out

# Rewrite the screenshots in docs/ from the browser tests.
screenshots: $(STAMP) chromium
	AMBIENT_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/test_browser.py tests/test_browser_admin.py tests/test_browser_blind.py \
	  tests/test_browser_campaigns.py tests/test_browser_emergence.py tests/test_browser_explore_units.py tests/test_browser_listen.py \
	  tests/test_browser_unit.py
