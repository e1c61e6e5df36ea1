# Two commands on a fresh machine: `make run` and `make test`.
# torch is installed first, pinned, from PyTorch's CPU wheel index, so that pip never resolves
# pyproject's open `torch>=2.4` to a multi-GB CUDA build. Where that index is unreachable (a
# mirror-only network) the plain pin is installed instead (a local CPU wheel where there is one).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.genimg-installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0
export PYTHONUNBUFFERED ?= 1

.PHONY: run test test-fast lint setup clean

setup: $(STAMP)

# constraints.txt pins Ray: a driver and the cluster it talks to must run the same Ray version,
# and the images in infra/ are built with that pin.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	if $(PY) -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)/torch/', timeout=10)" 2>/dev/null; then \
	  $(PY) -m pip install --quiet --index-url "$(TORCH_INDEX)" "$(TORCH_PIN)" || $(PY) -m pip install --quiet "$(TORCH_PIN)"; \
	else \
	  echo "torch: $(TORCH_INDEX) is unreachable here; installing $(TORCH_PIN) from pip's configured index"; \
	  $(PY) -m pip install --quiet "$(TORCH_PIN)"; \
	fi
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,postgres]"
# A torch-fidelity copy outside site-packages, for the Inception agreement test: installed, it
# would make torchmetrics import it and torchvision, whose PyPI wheel fails beside the CPU torch.
	$(PY) -m pip install --quiet --no-deps --target $(VENV)/reference torch-fidelity==0.4.0
	touch $@

# The main job on the embedded default: the Prefect retrain flow (genimg/configs/retrain.yaml: ingest the
# builtin data, train gan / vae / rvae on a local Ray, evaluate, register, promote), then a sample
# grid or GIF from each family's champion in outputs/.
OUT ?= outputs
run: $(STAMP)
	$(VENV)/bin/genimg retrain
	@mkdir -p $(OUT)
	$(VENV)/bin/genimg sample models:/genimg-digits-gan@champion -n 64 --seed 0 -o $(OUT)/gan.png
	$(VENV)/bin/genimg sample models:/genimg-digits-vae@champion -n 64 --seed 0 -o $(OUT)/vae.png
	$(VENV)/bin/genimg sample models:/genimg-moving-digits-rvae@champion -n 16 --seed 0 -o $(OUT)/rvae.gif
	@echo "champions: models:/genimg-digits-gan@champion models:/genimg-digits-vae@champion models:/genimg-moving-digits-rvae@champion"
	@echo "samples:   $(OUT)/gan.png $(OUT)/vae.png $(OUT)/rvae.gif"

# Lint, format and types: what CI checks before any test runs.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# What a developer runs after each change (under 5 minutes on 2 cores): every test not marked slow,
# on two pytest-xdist workers (a worker that runs out of tests takes some of the other's).
PYTEST_FAST := $(PY) -m pytest -m "not slow" -n 2 --dist worksteal

test-fast: $(STAMP)
	$(PYTEST_FAST) --durations=20

# The whole suite, as CI runs it: every test that does not start Ray on two workers, then those
# that do (Ray clusters, node loss, searches, Ray Jobs) one at a time: each of them uses both cores.
# mypy (one core, a minute on a fresh clone) runs beside the first part.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy > .mypy.out 2>&1 & mypy=$$!; \
	$(PY) -m pytest -m "not ray" -n 2 --dist worksteal --durations=40; tests=$$?; \
	wait $$mypy; types=$$?; cat .mypy.out; rm -f .mypy.out; test $$tests -eq 0 && test $$types -eq 0
	$(PY) -m pytest -m ray --durations=40

clean:
	rm -rf $(VENV) outputs .genimg .pytest_cache
