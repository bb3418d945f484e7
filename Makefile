# Two commands do everything: `make demo` and `make test` (each creates or reuses .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
BENCH_STAMP := $(VENV)/.bench-requirements-installed
DOCS_STAMP := $(VENV)/.docs-requirements-installed

.PHONY: demo test lint install bench check-full docs clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# torch (CPU build) for the benchmarks and the JAX-vs-PyTorch equivalence test only.
$(BENCH_STAMP): $(STAMP) benchmarks/requirements.txt
	$(PY) -m pip install --quiet -r benchmarks/requirements.txt
	touch $(BENCH_STAMP)

# The documentation site's tools (mkdocs, mkdocstrings), pinned in docs/requirements.txt.
$(DOCS_STAMP): $(STAMP) docs/requirements.txt
	$(PY) -m pip install --quiet -r docs/requirements.txt
	touch $(DOCS_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.sinusoid --config=experiments/configs/sinusoid_paper.py:demo --workdir=runs/sinusoid_demo

test: $(STAMP) $(BENCH_STAMP)
	$(PY) -m pytest

# ruff, configured in pyproject.toml (CI runs it before the tests).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The documentation site (mkdocs.yml, docs/) into site/; --strict: any warning fails, a
# docstring's included. docs/results.md is generated: python -m experiments.results_page.
docs: $(DOCS_STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

# CPU benchmark against PyTorch (installs the benchmark-only requirements).
bench: $(BENCH_STAMP)
	$(PY) benchmarks/bench.py --quick

# The full-size meta-gradient checks beyond `make test` (~45 min on 2 CPU cores): all 32
# formulations against PyTorch float64 and finite differences, then every conv_impl x task
# batching x unroll against the plain formulation and float64 on 12 random instances.
# Exit status non-zero if any judged comparison fails (docs/correctness.md).
check-full: $(BENCH_STAMP)
	$(PY) benchmarks/grad_check.py --variants all
	$(PY) benchmarks/formulation_consistency.py --instances 12

clean:
	rm -rf runs .pytest_cache site
