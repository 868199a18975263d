# The two commands of the README: `make run` and `make test`. Both create .venv with pip if it is
# missing and install the package (editable, with the dev extras) whenever pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.robustres-installed

.PHONY: run test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The embedded default job: two-moons at depth 30, the plain ResNet (h = 1) against h = 0.1.
run: $(STAMP)
	$(BIN)/robustres train --dataset two-moons --depth 30 --h 1,0.1 --seed 0

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) robustres-store .pytest_cache
