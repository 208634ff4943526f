# Developer entry points. `make check` is exactly what CI runs (.ci/run): `make lint`
# (ruff check, ruff format --check, mypy strict; any finding fails), then `make test`,
# which installs everything into .venv; the test session starts and stops its own
# Kafka broker (DURAFKA_BOOTSTRAP_SERVERS, else Docker, else Java + Maven; see tests/conftest.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.durafka-installed
PYTEST_ARGS ?=

.PHONY: install check test demo lint broker-start broker-stop broker-status

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing durafka with its dev tools into $(VENV) ..."
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

check: lint test

test: install
	@# Fetch the broker up front (once, cached) so the first test is not timed on a download.
	@if [ -z "$$DURAFKA_BOOTSTRAP_SERVERS$$DURAFKA_BOOTSTRAP" ] && command -v mvn >/dev/null 2>&1; then \
		$(BIN)/durafka dev-broker fetch >/dev/null \
			|| echo "could not fetch Kafka with Maven; the test session will say why"; \
	fi
	$(BIN)/pytest -p no:cacheprovider -ra $(PYTEST_ARGS)

demo: install
	DURAFKA_BOOTSTRAP_SERVERS=memory:// $(BIN)/python -m examples.hello

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

broker-start: install
	@$(BIN)/durafka dev-broker start

broker-stop: install
	@$(BIN)/durafka dev-broker stop

broker-status: install
	@$(BIN)/durafka dev-broker status
