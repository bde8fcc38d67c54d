# The README's two commands. Both create .venv on first use (CPU torch 2.13.0), then reuse it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean figures

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make demo: set up, then the main job (rank collapse at init, SAS vs the others)
demo: $(STAMP)
	$(BIN)/sigprop blocks --depth 18 --width 768 --heads 12
	$(BIN)/sigprop analyze --block sas
	$(BIN)/sigprop analyze --block pre-ln,skipless,sas,sas-p --depth 18 --width 768 --heads 12 --out figures/demo --no-table

## make test: set up, then the test suite
test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
