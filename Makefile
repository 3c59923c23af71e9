# The one interface for people and CI. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?=
OUT ?= runs/demo
ENCODING ?= instruct_pos_2_input
SETUP_FLAGS ?=
TORCH_CUDA ?=

SWEEP ?= sweeps/debug.yaml
BACKEND ?= local
RUNS ?= runs
SET ?=
SETS = $(foreach s,$(SET),--set $(s))

.PHONY: help setup test test-fast check bench data demo clean sweep plan status pull report cancel rehearse \
        logs image push-image lock hadolint

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

setup: $(PY)  ## create .venv and install the project with dev tools (CPU or GPU torch, auto-detected; TORCH_CUDA=cu126 picks a CUDA build)
	source $(VENV)/bin/activate && TORCH_CUDA="$(TORCH_CUDA)" bash scripts/install.sh --dev $(SETUP_FLAGS)

TEST_WORKERS ?= 2
XDIST = $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup,)
test:  ## the whole suite, slow tests included (trainer runs, DeepSpeed; SLURM jobs when SLURM_CONF is set); TEST_WORKERS=1: in one process
	$(PY) -m pytest -q $(XDIST)

test-fast:  ## the suite without the slow tests: no trainer run, no cluster job
	$(PY) -m pytest -q -m "not slow" $(XDIST)

check:  ## ruff + mypy
	$(PY) -m ruff check .
	$(PY) -m mypy

bench:  ## benchmarks against the reference algorithms (needs ../shared/ni-sample)
	$(PY) bench/bench_encoding.py
	$(PY) bench/bench_scoring.py
	$(PY) bench/bench_trainer.py
	$(PY) bench/bench_launcher.py
	$(PY) bench/bench_data.py --scale $(or $(DATA_SCALE),0.1)   # DATA_SCALE=1: the real repository's size

DEMO_DATA = $(if $(DATA),$(DATA),$(OUT)/data)
data:  ## Super-NaturalInstructions at the pinned revision into DATA_DIR (default data/natural-instructions)
	$(PY) -m trainer fetch-data --out $(or $(DATA_DIR),data/natural-instructions)

demo:  ## end to end on the embedded default data: data, prompts, baselines, scores (DATA=... for real NI)
	$(if $(DATA),,$(PY) -m trainer make-data --out $(OUT)/data --overwrite)
	$(PY) -m trainer encode --data $(DEMO_DATA) --split test --encoding $(ENCODING) --out $(OUT)/prompts.jsonl
	for b in copy_demo copy_input; do \
	  $(PY) -m evaluation baseline $$b --data $(DEMO_DATA) --out $(OUT)/$$b/predicted_examples.jsonl && \
	  $(PY) -m evaluation score $(OUT)/$$b/predicted_examples.jsonl --data $(DEMO_DATA) --out $(OUT)/$$b/metrics.json \
	  || exit 1; \
	done

NO_WAIT ?=
sweep:  ## submit SWEEP to BACKEND, live view until it ends (Ctrl-C: it runs on), then pull and report; NO_WAIT=1: submit only; SET="k=v ..." overrides
	$(PY) -m launcher submit $(SWEEP) --backend $(BACKEND) --runs-root $(RUNS) $(SETS) $(if $(NO_WAIT),--no-wait,--wait)
ifeq ($(NO_WAIT),)
	$(PY) -m launcher pull $(SWEEP) --runs-root $(RUNS) $(SETS)
	$(PY) -m launcher report $(SWEEP) --runs-root $(RUNS) $(SETS)
endif

LIMIT ?=
rehearse:  ## every run (or LIMIT) of SWEEP with its real topology, toy model, on BACKEND (local or slurm): checkpoint, resume, predict
	$(PY) -m launcher rehearse $(SWEEP) --backend $(BACKEND) $(if $(LIMIT),--limit $(LIMIT),) $(if $(PARTITION),--partition $(PARTITION),) --runs-root $(RUNS)-rehearsal

plan:  ## the expanded runs of SWEEP and the exact artifacts BACKEND would submit
	$(PY) -m launcher plan $(SWEEP) --backend $(BACKEND) --render --runs-root $(RUNS) $(SETS)

status pull report cancel:  ## status / pull / report / cancel of SWEEP
	$(PY) -m launcher $@ $(SWEEP) --runs-root $(RUNS) $(SETS)

clean:  ## remove caches and demo outputs (keeps .venv)
	rm -rf runs/demo .pytest_cache .mypy_cache .ruff_cache .hypothesis

# --- images (images/README.md) ----------------------------------------------------------------------------
IMAGE_KIND ?= trainer

image:  ## build images/$(IMAGE_KIND)/Dockerfile as tk-lab-$(IMAGE_KIND):<git-sha> (clean tree or ALLOW_DIRTY=1)
	bash images/build.sh build $(IMAGE_KIND)

push-image:  ## push that image: REGISTRY=host/org and/or BEAKER=1; records it, prints the sweep lines
	bash images/build.sh push $(IMAGE_KIND)

lock:  ## regenerate requirements/lock.txt from pyproject.toml (uv, PyPI)
	source $(VENV)/bin/activate && bash scripts/lock.sh

hadolint:  ## lint every Dockerfile
	$(VENV)/bin/hadolint images/*/Dockerfile

RUN ?=
logs:  ## logs of RUN in SWEEP (make logs SWEEP=... RUN=<run-id>); without RUN a live summary; FOLLOW=0 prints once
	$(PY) -m launcher logs $(SWEEP) $(RUN) --runs-root $(RUNS) $(if $(filter 0,$(FOLLOW)),,--follow)
