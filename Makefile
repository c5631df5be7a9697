# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APP_STAMP := $(VENV)/.app-installed
export DS_ACCELERATOR ?= cpu

.PHONY: install test test-fast demo clean

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# the web page's tests (tests/app) need the [app] extra and a real browser: Debian's chromium + chromium-driver
$(APP_STAMP): $(STAMP)
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	$(BIN)/pip install -q -e '.[dev,app]'
	touch $(APP_STAMP)

install: $(STAMP)

test: $(STAMP) $(APP_STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

clean:
	rm -rf runs/demo .pytest_cache
