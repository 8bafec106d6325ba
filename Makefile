# The two commands: `make demo` and `make test`. Both build .venv with python3.12 if missing.
# The test environment is installed with the exact versions of requirements-ci.lock where that
# file is present (CI tests what was tested); `make lock` rewrites it from .venv.
PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
LOCK := $(wildcard requirements-ci.lock)
export OMP_NUM_THREADS ?= 1

.PHONY: demo test test-slow bench lint lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# after installing, the sparse engine's numba kernels are compiled into numba's cache once
# (`bayes-animal compile`, about 5 s), so that no first fit pays for it
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/bayes-animal compile
	touch $@

$(VENV)/.installed-test: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(if $(LOCK),-c $(LOCK)) -e '.[test]'
	$(BIN)/bayes-animal compile
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/bayes-animal demo

# the test files shared among TEST_WORKERS processes (pytest-xdist; a file's tests stay in one
# process, so a module's fixture is built once): 8 min on CI's two cores, 11 in one process
TEST_WORKERS ?= 2

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m slow

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check bayes_animal tests benchmarks

lock: $(VENV)/.installed-test
	$(BIN)/python .ci/lock.py requirements-ci.lock

clean:
	rm -rf $(VENV) build *.egg-info
