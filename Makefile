# Developer entry points. `make check` is exactly what CI runs (.ci/run): `make lint`
# (ruff check, ruff format --check, mypy strict; any finding fails), then `make test`,
# which installs everything into .venv; the test session starts and stops its own
# Kafka broker (DURAFKA_BOOTSTRAP_SERVERS, else Docker, else Java + Maven; see tests/conftest.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.durafka-installed
PYTEST_ARGS ?=

.PHONY: install check test test-compiled demo lint broker-start broker-stop broker-status

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing durafka with its dev tools into $(VENV) ..."
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

check: lint test test-compiled

test: install
	@# Fetch the broker up front (once, cached) so the first test is not timed on a download.
	@if [ -z "$$DURAFKA_BOOTSTRAP_SERVERS$$DURAFKA_BOOTSTRAP" ] && command -v mvn >/dev/null 2>&1; then \
		$(BIN)/durafka dev-broker fetch >/dev/null \
			|| echo "could not fetch Kafka with Maven; the test session will say why"; \
	fi
	$(BIN)/pytest -p no:cacheprovider -ra $(PYTEST_ARGS)

# The compiled build (DURAFKA_COMPILE=1: setup.py's COMPILED_MODULES through mypyc),
# in a copy of the checkout so that no extension module ever shadows a source
# here: the suites of the replay engine, the processor, the codec, features and
# entities, on memory:// and on the real broker (a session of its own, as `make test`),
# their kill -9 tests, and the chaos soak (compiled role processes killed, a broker kill).
COMPILED := .durafka/compiled
COMPILED_SUITES ?= tests/foundation/test_compiled.py tests/runtime tests/codec tests/processor \
	tests/features tests/entities tests/soak/test_soak.py
test-compiled: install
	rm -rf $(COMPILED) && mkdir -p $(COMPILED)
	tar -c --exclude=./.venv --exclude=./.durafka --exclude=./.git --exclude=./build . | tar -x -C $(COMPILED)
	cd $(COMPILED) && DURAFKA_COMPILE=1 $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace
	cd $(COMPILED) && DURAFKA_EXPECT_COMPILED=1 PYTHONPATH=. $(CURDIR)/$(BIN)/pytest -p no:cacheprovider -ra \
		-m "not containers" $(COMPILED_SUITES)

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
