# Two commands on a fresh machine: `make demo` installs kdlab and distills on bundled data,
# `make test` runs the linters and the whole test suite (slow tests included, GPU tests
# excluded; plain `pytest` runs the quick default set). Both create/reuse the virtualenv $(VENV).
PYTHON ?= python3
# Where pip takes torch/torchvision from first, e.g. https://download.pytorch.org/whl/cpu (CPU-only
# wheels); empty: PyPI's default wheels, with pyproject's other dependencies.
TORCH_INDEX ?=
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdlab-installed

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kdlab demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -m 'not gpu'

clean:
	rm -rf $(VENV) runs
