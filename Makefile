# The two commands of the README:
#   make run    the main job: the whole Kubeflow pipeline locally (kfp.local) on the tiny profile and the
#               DVC-tracked MiniMMEB in data/ (generated from seed 0 and checked against data.dvc when
#               absent); MLflow in $(WORKDIR)/mlflow.db
#   make test   the test suite
# Both create .venv/ from the lock file first when it is missing or stale.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORKDIR ?= runs/local
export HF_HUB_OFFLINE := 1
export DS_BUILD_OPS := 0

.PHONY: install run test lint clean-venv

install: $(STAMP)

# torch first, from the CPU build (a bare `torch` requirement would pull a multi-GB CUDA build),
# then every exact pin of the lock file, then the project itself without dependencies.
$(STAMP): requirements/lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: install
	test -d data || $(VENV)/bin/embedrl data generate --out data --seed 0 --check-dvc data.dvc --quiet
	$(VENV)/bin/embedrl pipeline run --local --profile tiny --workdir $(WORKDIR)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests components pipelines

clean-venv:
	rm -rf $(VENV)
