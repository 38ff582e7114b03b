# Two commands do all the set-up on a fresh Linux machine with Python 3.11:
#   make demo   -- install into .venv, then run the whole job on the bundled data and print the result
#   make test   -- install into .venv (with test extras), then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

.PHONY: install demo test bench
install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/sanitize demo --workdir sanitize-demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/defense.py --config small
