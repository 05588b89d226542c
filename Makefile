# vqa-cache: `make features && make train`, `make test` (`make test-fast`: the unit tier), `make lint`.
# `make install` builds .venv once (and again whenever pyproject.toml changes); every target needs it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# EXTRAS: the package's optional extras installed into .venv (dev: what the tests need; CI adds all: the
# trackers and the demo, whose tests otherwise skip naming their extra). Each set of extras has its own stamp.
EXTRAS ?= dev
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
CLI    := $(BIN)/vqa-cache

# SETUP: a recipe pair, extract/SETUP.toml and train/SETUP.toml
SETUP ?= resnet50-tinybert-concat
EXTRACT_RECIPE ?= extract/$(SETUP).toml
TRAIN_RECIPE   ?= train/$(SETUP).toml
FINETUNE_RECIPE ?= train/easyvqa-finetune.toml
SWEEP_RECIPE   ?= train/easyvqa-sweep.toml
TRIALS ?= 50
ARGS ?=

.PHONY: install features train finetune sweep test test-fast test-latest lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

# RECIPE=... picks another recipe for the target at hand; SETUP=NAME another pair (make features train SETUP=resnet50-bow-lstm).
features: $(STAMP)
	$(CLI) extract $(or $(RECIPE),$(EXTRACT_RECIPE)) $(ARGS)

train: $(STAMP)
	$(CLI) train $(or $(RECIPE),$(TRAIN_RECIPE)) $(ARGS)

finetune: $(STAMP)
	$(CLI) finetune $(or $(RECIPE),$(FINETUNE_RECIPE)) $(ARGS)

sweep: $(STAMP)
	$(CLI) sweep $(or $(RECIPE),$(SWEEP_RECIPE)) --trials $(TRIALS) $(ARGS)

# Every test, on two processes (pytest-xdist; a file's tests stay on one, sharing its fixtures): 6 min 14 s
# against 9 min 16 s in one process on the 2-core machine.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

# The inner loop: every test but those marked slow (a subprocess, torchrun, a notebook kernel, a long training),
# on two processes (pytest-xdist; a file's tests stay on one, sharing its fixtures).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -n 2 --dist loadfile -q tests

# The Hugging Face stack drifts (issue 23.6): the encoder, hf dataset and bad-input tests on the newest
# transformers, timm and datasets that the pyproject.toml ranges allow (CI runs it after `make test`). A throwaway
# venv sees .venv's packages through a .pth file; the upgrades land in its own site-packages, in front of them;
# torch and torchvision stay the installed ones (.ci/latest_constraints.py pins them).
LATEST       := .venv-latest
LATEST_TESTS ?= tests/test_encoders.py tests/test_hf.py tests/test_bad_input.py
test-latest: $(STAMP)
	rm -rf $(LATEST)
	$(BIN)/python -m venv $(LATEST)
	$(BIN)/python -c 'import site; print(site.getsitepackages()[0])' \
	  > "$$($(LATEST)/bin/python -c 'import site; print(site.getsitepackages()[0])')/base-venv.pth"
	$(BIN)/python .ci/latest_constraints.py > $(LATEST)/constraints.txt
	$(LATEST)/bin/python -m pip install --quiet --upgrade --constraint $(LATEST)/constraints.txt transformers timm datasets
	$(LATEST)/bin/python -c 'import torch, transformers, timm, datasets; print("test-latest: torch", torch.__version__, \
	  "transformers", transformers.__version__, "timm", timm.__version__, "datasets", datasets.__version__)'
	PYTHONPATH=$(CURDIR) $(LATEST)/bin/python -m pytest -q $(LATEST_TESTS)

# ruff check, ruff format --check (pyproject.toml [tool.ruff]) and mypy ([tool.mypy]); CI (.ci/run) runs it
# before the tests. `ruff format .` and `ruff check --fix .` make most of it right.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/finetune.py
	$(BIN)/python bench/scale.py --sizes 300,900

clean:
	rm -rf $(VENV) $(LATEST) runs sweeps
