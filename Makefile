# The two commands of the README:
#   make run    the main job (today: MiniMMEB generation, checked against data.dvc, and model init;
#               later issues extend it to the whole pipeline)
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
	$(VENV)/bin/embedrl data generate --out data --seed 0 --check-dvc data.dvc
	$(VENV)/bin/embedrl model init --profile tiny --out $(WORKDIR)/models --overwrite

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests components pipelines

clean-venv:
	rm -rf $(VENV)
