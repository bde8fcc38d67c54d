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
	@echo "== demo 1/3: the blocks and their parameter counts at the paper's size (L=18, d=768)"
	$(BIN)/sigprop blocks --depth 18 --width 768 --heads 12
	@echo "== demo 2/3: SAS at init, layer by layer, measured vs theory"
	$(BIN)/sigprop analyze --block sas
	@echo "== demo 3/3: rank collapse of four blocks at init, with figures in figures/demo"
	$(BIN)/sigprop analyze --block pre-ln,skipless,sas,sas-p --depth 18 --width 768 --heads 12 --out figures/demo --no-table
	@echo "== done. Run the CLI from the virtualenv: source $(VENV)/bin/activate && sigprop --help   (or $(BIN)/sigprop --help)"

## make test: set up, then the test suite
test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
