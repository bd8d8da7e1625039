# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On this project's machines the pinned CPU wheel is already on disk; a plain `torch`
# would pull a multi-GB CUDA build. Override e.g. TORCH_SPEC="torch>=2.2" on a GPU box.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test browser demo bench lint clean gpu-wheels gpu-check

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,bench,scale]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) browser
	$(PY) -m pytest tests

# The web page's tests (tests/test_web.py) drive Debian's chromium through Playwright: installed
# here when missing and we are root; otherwise (or if apt fails) those tests fail saying how.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends chromium chromium-driver) \
	    || echo "could not install chromium: tests/test_web.py will fail"; \
	else \
	  echo "no $(CHROMIUM): tests/test_web.py will fail; as root run" \
	    "apt-get install -y --no-install-recommends chromium chromium-driver"; \
	fi

UCE := $(VENV)/bin/uceindex
DEMO := demo_out

# Offline, end to end, on the 700 labelled PBMCs shipped in data/ and a tiny random model:
# embed, ingest three quarters as the reference atlas, annotate the rest, ask SQL.
demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(UCE) models tiny $(DEMO)/model --genes-from data/pbmc700.h5ad --species human
	$(UCE) models info $(DEMO)/model
	$(UCE) embed data/pbmc700.h5ad $(DEMO)/pbmc700_uce.h5ad --species human --model-dir $(DEMO)/model
	$(PY) -c "import anndata as ad; a = ad.read_h5ad('data/pbmc700.h5ad'); q = a.obs_names[::4]; \
	  a[q].copy().write_h5ad('$(DEMO)/query.h5ad'); a[~a.obs_names.isin(q)].copy().write_h5ad('$(DEMO)/reference.h5ad')"
	$(UCE) ingest $(DEMO)/reference.h5ad --species human --store $(DEMO)/atlas --model-dir $(DEMO)/model
	$(UCE) datasets --store $(DEMO)/atlas
	$(UCE) index --store $(DEMO)/atlas
	$(UCE) query $(DEMO)/query.h5ad --species human --store $(DEMO)/atlas --model-dir $(DEMO)/model \
	  --k 15 --out $(DEMO)/predictions.csv
	$(UCE) sql --store $(DEMO)/atlas "SELECT cell_type, count(*) AS cells FROM cells GROUP BY 1 ORDER BY cells DESC"
	# The same annotation with an embedding that carries biology: the shipped PCA (obsm X_pca).
	$(UCE) ingest $(DEMO)/reference.h5ad --embedding-key X_pca --species human --store $(DEMO)/atlas_pca
	$(UCE) query $(DEMO)/query.h5ad --embedding-key X_pca --store $(DEMO)/atlas_pca --k 15 --out $(DEMO)/predictions_pca.csv
	$(PY) -c "import pandas as pd, anndata as ad; p = pd.read_csv('$(DEMO)/predictions_pca.csv', index_col=0); \
	  truth = ad.read_h5ad('$(DEMO)/query.h5ad').obs['cell_type'].astype(str); \
	  print(f'X_pca k-NN accuracy on the held-out quarter: {(p.predicted == truth.loc[p.index]).mean():.1%}')"
	@echo "demo outputs in $(DEMO)/ (random tiny model: for real embeddings run 'uceindex models download 4layer')"

bench: $(STAMP)
	$(PY) bench/embed.py --quick
	$(PY) bench/ingest.py --quick
	$(PY) bench/search.py --quick
	$(PY) bench/sql.py --quick
	$(PY) bench/service.py --quick
	$(PY) bench/web.py --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check uceindex cli tests bench
	$(VENV)/bin/ruff format --check uceindex cli tests bench
	$(VENV)/bin/lint-imports --no-cache

# The GPU check (bench/gpu_check.sh) runs on a bare machine with Python 3.12 and CUDA torch but
# none of these, and no network: fetch their wheels here first, into .whl/ (git-ignored).
GPU_WHEELS := anndata==0.12.19 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 \
  google-crc32c==1.9.0 array-api-compat==1.16.0 legacy-api-wrap==1.5 natsort==8.4.0 \
  scverse-misc==0.1.7 session-info2==0.4.1 pandas==2.3.3 pytz tzdata uce-model==0.1.4

gpu-wheels: $(STAMP)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)

gpu-check:
	bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo_out
