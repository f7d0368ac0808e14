# TORCH lets CI pin the local CPU build; users keep their own CUDA torch.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch>=2.6
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint env clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

env: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -n 2 tests

demo: $(STAMP)
	$(PY) -m tokencache demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
