# Two commands do everything: `make demo` and `make test` (each creates or reuses .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: demo test install bench clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.sinusoid --config experiments/configs/sinusoid_demo.py --workdir runs/sinusoid_demo

test: $(STAMP)
	$(PY) -m pytest

# CPU benchmark against PyTorch (installs the benchmark-only requirements).
bench: $(STAMP)
	$(PY) -m pip install --quiet -r benchmarks/requirements.txt
	$(PY) -m benchmarks.bench --quick

clean:
	rm -rf runs .pytest_cache
