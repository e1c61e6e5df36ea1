# Two commands on a fresh machine: `make run` and `make test`.
# torch is installed first, pinned to the CPU wheel this machine kind ships on disk, so that
# pip never resolves pyproject's open `torch>=2.4` to a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.genimg-installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
export PYTHONUNBUFFERED ?= 1

.PHONY: run test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The main job on the embedded default: train each family briefly on the builtin data and
# write a sample grid per family to outputs/ (the Prefect retrain flow takes this over later).
OUT ?= outputs
run: $(STAMP)
	@set -e; for spec in vae:digits gan:digits gan-mlp:digits rvae:moving-digits; do \
	  model=$${spec%%:*}; data=$${spec#*:}; \
	  echo "== $$model on builtin:$$data"; \
	  $(VENV)/bin/genimg train --model $$model --dataset builtin:$$data \
	    --config configs/$$model-$$data.yaml -o $(OUT)/$$model; \
	  $(VENV)/bin/genimg sample $(OUT)/$$model -n 64 --seed 0 -o $(OUT)/$$model.png; \
	done
	$(VENV)/bin/genimg sample $(OUT)/rvae -n 16 --seed 0 -o $(OUT)/rvae.gif
	@echo "sample grids: $(OUT)/vae.png $(OUT)/gan.png $(OUT)/gan-mlp.png $(OUT)/rvae.png $(OUT)/rvae.gif"

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) outputs .genimg .pytest_cache
