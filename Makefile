# Two commands for a fresh machine (root or sudo, apt available):
#   make demo   installs what it needs, then runs the end-to-end demo into outputs/demo
#   make test   installs what it needs, then runs the test suite
# Both re-use .venv; the install step re-runs only when setup.py, pyproject.toml or the install script change.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spade4d-installed
OUT ?= outputs/demo
PRESET ?= quick

.PHONY: demo test test-demo install lint bench clean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml scripts/install.sh scripts/install_minkowski.sh
	bash scripts/install.sh $(VENV)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spade4d demo --out $(OUT) --preset $(PRESET)

test: $(STAMP)
	$(PY) -m pytest tests

# the demo end to end with few steps (about 4 minutes on 2 cores; CI runs it after the suite)
test-demo: $(STAMP)
	$(PY) -m pytest tests -m demo

lint: $(STAMP)
	$(VENV)/bin/ruff check spade4d tests scripts data_tools

bench: $(STAMP)
	$(PY) scripts/bench_evaluator.py

clean:
	rm -rf $(VENV) outputs
