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
	$(PY) -m pip install --quiet -e ".[dev,postgres]"
	touch $@

# The main job on the embedded default: train each family briefly on the builtin data (local
# Ray, one worker each; step counts below are shorter than the presets in configs/ so the whole
# job, set-up included, stays well under 10 minutes on 2 cores) and write a sample grid per
# family to outputs/. The Prefect retrain flow takes this over later.
OUT ?= outputs
RUN_PLAN ?= vae:digits:1000 gan:digits:800 gan-mlp:digits:1000 rvae:moving-digits:250
run: $(STAMP)
	@set -e; for spec in $(RUN_PLAN); do \
	  model=$${spec%%:*}; rest=$${spec#*:}; data=$${rest%%:*}; steps=$${rest#*:}; \
	  echo "== $$model on builtin:$$data, $$steps steps"; \
	  $(VENV)/bin/genimg train --model $$model --dataset builtin:$$data \
	    --config configs/$$model-$$data.yaml --steps $$steps -o $(OUT)/$$model; \
	  $(VENV)/bin/genimg sample $(OUT)/$$model -n 64 --seed 0 -o $(OUT)/$$model.png; \
	done
	$(VENV)/bin/genimg sample $(OUT)/rvae -n 16 --seed 0 -o $(OUT)/rvae.gif
	@echo "sample grids: $(OUT)/vae.png $(OUT)/gan.png $(OUT)/gan-mlp.png $(OUT)/rvae.png $(OUT)/rvae.gif"

test: $(STAMP)
	$(PY) -m pytest --durations=30

clean:
	rm -rf $(VENV) outputs .genimg .pytest_cache
