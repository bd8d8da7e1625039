# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On this project's machines the pinned CPU wheel is already on disk; a plain `torch`
# would pull a multi-GB CUDA build. Override e.g. TORCH_SPEC="torch>=2.2" on a GPU box.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test demo bench lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

UCE := $(VENV)/bin/uceindex
DEMO := demo_out

# Offline, end to end, on the 700 labelled PBMCs shipped in data/ and a tiny random model.
demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(UCE) models tiny $(DEMO)/model --genes-from data/pbmc700.h5ad --species human
	$(UCE) models info $(DEMO)/model
	$(UCE) embed data/pbmc700.h5ad $(DEMO)/pbmc700_uce.h5ad --species human --model-dir $(DEMO)/model

bench: $(STAMP)
	$(PY) bench/embed.py --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check uceindex cli tests bench
	$(VENV)/bin/ruff format --check uceindex cli tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo_out
