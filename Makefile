# sfd: every target sets up what it needs on a fresh machine (Debian/Ubuntu, Python >= 3.10).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# Idle OpenMP threads sleep instead of spinning (spinning starves other processes on 2 cores).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup data test lint demo demo-quick clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# Fashion-MNIST from Debian's package (needs root or sudo; skipped if already there).
data:
	@if [ ! -f $(FMNIST) ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

lint: setup
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

# The dataset is installed above, so the quick-demo test must run, never skip.
test: setup data lint
	SFD_REQUIRE_FASHION_MNIST=1 $(PY) -m pytest -q

demo: setup data
	$(VENV)/bin/sfd demo --out runs/demo

demo-quick: setup data
	$(VENV)/bin/sfd demo --quick --out runs/demo-quick

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
