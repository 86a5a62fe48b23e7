# eeg2fmri — every set-up step lives here. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch on machines without an NVIDIA driver (2.13.0 lies on this workplace's disk);
# with a driver, pyproject's loose range keeps whatever CUDA build is installed or picks one.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")
SCALE ?= ci
SUBJECTS ?= 1
PROTOCOL ?= project
RAW ?= data/raw
PREPARED ?= data/prepared
RESULTS ?= results
PYTEST_ARGS ?=

.PHONY: help install demo test test-slow lint format bench reproduce-table1 reproduce-table2 reproduce-ablation reproduce-fill reproduce-learning-curve clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## create .venv and install eeg2fmri with its test tools

DEMO_RAW := data/demo/raw
DEMO_PREPARED := data/demo/prepared
demo: install ## simulate a subject, prepare it, train the model and two ridge baselines, print one table (CPU, ~10 min)
	test -d $(DEMO_RAW)/sub_0001 || $(VENV)/bin/eeg2fmri simulate --out_dir $(DEMO_RAW) --subjects [1] --scale ci \
	    --n_runs 3 --run_seconds 200 --signal_gain 3
	$(VENV)/bin/eeg2fmri prepare --subject_dir $(DEMO_RAW)/sub_0001 --out_dir $(DEMO_PREPARED)
	rm -rf runs/demo
	for b in ridge fir_ridge; do \
	  $(VENV)/bin/eeg2fmri fit --config configs/demo.yaml --config configs/baselines/$$b.yaml --data.data_path $(DEMO_PREPARED)/sub_0001.h5 \
	      --trainer.logger false --trainer.default_root_dir runs/demo/$$b && \
	  $(VENV)/bin/eeg2fmri test --config configs/demo.yaml --config configs/baselines/$$b.yaml --data.data_path $(DEMO_PREPARED)/sub_0001.h5 \
	      --trainer.logger false --trainer.default_root_dir runs/demo/$$b \
	      --ckpt_path runs/demo/$$b/checkpoints/last.ckpt || exit 1; \
	done
	$(VENV)/bin/eeg2fmri fit --config configs/demo.yaml --data.data_path $(DEMO_PREPARED)/sub_0001.h5
	$(VENV)/bin/eeg2fmri test --config configs/demo.yaml --data.data_path $(DEMO_PREPARED)/sub_0001.h5 \
	    --ckpt_path runs/demo/latest/checkpoints/last.ckpt
	$(VENV)/bin/eeg2fmri table --results '[runs/demo/fir_ridge/checkpoints/test_metrics.json, runs/demo/ridge/checkpoints/test_metrics.json, runs/demo/latest/checkpoints/test_metrics.json]'

test: install ## run the test suite (fast tests; a few minutes on 2 CPU cores)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: install ## run the slow tests (fault injection, DDP, reproduce at smallest scale)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: install ## ruff's lint rules and format check (the rules are in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## rewrite the code in ruff's format and apply its safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install ## benchmark the training step and sampler against a bare-PyTorch reference (SCALE=ci|paper)
	$(VENV)/bin/eeg2fmri bench --scale $(SCALE)

reproduce-table1: install ## Table 1 / S1-S3 + floors: every method x K in {3,10,30} x region (SCALE=ci|small|long|paper, PROTOCOL=project|paper)
	$(VENV)/bin/eeg2fmri reproduce table1 --scale $(SCALE) --subjects [$(SUBJECTS)] --raw $(RAW) --prepared $(PREPARED) --results $(RESULTS) --protocol $(PROTOCOL)

reproduce-table2: install ## Table 2 + Figure 3: InterRecon vs linear interpolation and the gap sweep
	$(VENV)/bin/eeg2fmri reproduce table2 --scale $(SCALE) --subjects [$(SUBJECTS)] --raw $(RAW) --prepared $(PREPARED) --results $(RESULTS)

reproduce-ablation: install ## Table S4: latent dimension 512 / 1024 / 2048
	$(VENV)/bin/eeg2fmri reproduce ablation --scale $(SCALE) --subjects [$(SUBJECTS)] --raw $(RAW) --prepared $(PREPARED) --results $(RESULTS)

reproduce-fill: install ## censored-frame filling study: InterRecon vs linear vs cubic spline
	$(VENV)/bin/eeg2fmri reproduce fill --scale $(SCALE) --subjects [$(SUBJECTS)] --raw $(RAW) --prepared $(PREPARED) --results $(RESULTS)

reproduce-learning-curve: install ## FIR ridge and the model's posterior mean on 1/12 .. all of the training split; the EEG-explainable ceiling (SCALE=long)
	$(VENV)/bin/eeg2fmri reproduce learning_curve --scale $(SCALE) --subjects [$(SUBJECTS)] --raw $(RAW) --prepared $(PREPARED) --results $(RESULTS)

clean: ## remove generated data, runs and results (keeps .venv)
	rm -rf data/raw data/prepared data/demo runs results lightning_logs
