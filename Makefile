# The two commands of the README: `make run` and `make test`. Both create .venv with pip if it is
# missing and install the package (editable, with the dev extras) whenever pyproject.toml changes.
# `make research-test` runs the tests of the prototypes in research/, which `make test` leaves out.
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= dev
comma := ,
BIN := $(VENV)/bin
STAMP := $(VENV)/.robustres-installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: run test test-fast lint research-test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

# The embedded default job: the quick-moons sweep (two-moons, 3 depths x 8 values of h x 3 seeds),
# then the report that recommends h per depth.
run: $(STAMP)
	$(BIN)/robustres sweep --config sweeps/quick-moons.yaml
	$(BIN)/robustres report --config sweeps/quick-moons.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The suite without its `slow` end-to-end checks (kill suites, Ray, worker processes): about 2
# minutes on 2 cores, for the edit-test loop. CI runs `make test`.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check robustres tests benchmarks

# The prototypes' own checks (the Triton block in Triton's interpreter: minutes); not in `make test`.
research-test: $(STAMP)
	$(BIN)/python -m pytest -q research/tests

clean:
	rm -rf $(VENV) robustres-store .pytest_cache
