# graft: `make demo` sets up and runs the end-to-end demo; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.graft-installed

export PIP_DISABLE_PIP_VERSION_CHECK ?= 1

.PHONY: install demo test lint bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/graft demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run

# schemathesis against graft serve (text and image models) and hypothesis against the parsers,
# with many more examples than the default suite runs
fuzz: $(STAMP)
	GRAFT_FUZZ_EXAMPLES=$${GRAFT_FUZZ_EXAMPLES:-500} $(BIN)/python -m pytest -s -p no:logging \
		tests/code/test_fuzz_api.py tests/code/test_fuzz_parsers.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
