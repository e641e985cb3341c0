# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv and installs
# what it needs (torch pinned to the CPU build the parity suite was proven on).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean readme compat

$(STAMP): requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shimnn demo $(ARGS)

# The whole suite twice: with the compiled fast paths (required: a failed build fails the
# tests) and with them disabled, so both paths are proven against torch.
test: $(STAMP)
	SHIMNN_NATIVE=1 $(BIN)/python -m pytest $(ARGS)
	SHIMNN_NATIVE=0 $(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check shimnn tests examples bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis  # (.venv-torch*: rm by hand)

readme: $(STAMP)
	$(BIN)/python docs/update_readme.py

# The whole suite (both paths) against another torch, in .venv-torch$(TORCH) (a CUDA wheel from
# PyPI: several GB): `make compat TORCH=2.14.1`, then `make readme` for the README's table.
compat: $(STAMP)
	@test -n "$(TORCH)" || { echo "usage: make compat TORCH=2.14.1 [ARGS='--paths python']"; exit 2; }
	$(BIN)/python docs/compat.py $(TORCH) $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.ratios $(ARGS)
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.seed_experiment
