# make demo: set up .venv and render the built-in demo memes.  make test: set up and run the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean

setup: $(STAMP)

# The lock pins every package (torch==2.13.0: from PyPI on Linux the CUDA build; the README's Quick start
# puts the CPU build in first); the project itself installs editable.
# --no-compile: pip would byte-compile every installed module (torch alone has thousands), which took
# more than half of a fresh setup here (200 s -> 85 s without); Python compiles the few modules that
# are imported, once, on first use.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

demo: setup
	$(VENV)/bin/hellomeme-batch demo --output demo-output

# Two test processes, each taking whole files (--dist loadfile), so a module's shared render (a
# module-scoped fixture) runs once, not once per process.  Every Ray test starts its own private
# local Ray, so two can run side by side; most of a Ray test's time is start-up and waiting.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25 tests

bench: setup
	$(PY) bench/cpu_pipeline.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
