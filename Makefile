# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LATPROF := $(VENV)/bin/latprof
STAMP  := $(VENV)/.installed
DEMO   ?= out/demo

.PHONY: venv demo test test-interpret test-gpu test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The main job on the CPU: sparse sweep of a CIFAR VGG-16's conv layers (lines and the
# (c_in, c_out) grid), its staircases with plots, then pruning to 60% of its latency using only
# the table, measured on this machine against the prediction and two FLOPs-matched baselines.
demo: $(STAMP)
	$(LATPROF) sweep --model vgg16_cifar10 --batch 8 --quick --out $(DEMO)/cpu.parquet
	$(LATPROF) tables info $(DEMO)/cpu.parquet
	$(LATPROF) steps vgg16_cifar10 --table $(DEMO)/cpu.parquet --plot $(DEMO)/steps
	$(LATPROF) prune vgg16_cifar10 --table $(DEMO)/cpu.parquet --target-ratio 0.6 --compare --quick \
		--out $(DEMO)/pruned --json $(DEMO)/prune.json --plot $(DEMO)/prune.png

test: $(STAMP)
	$(PY) -m pytest -q

# Only the Triton kernels, run by Triton's interpreter on CPU tensors.
test-interpret: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests/kernels

# On a machine with CUDA: the kernels compiled, and the GPU timing tests.
test-gpu: $(STAMP)
	TRITON_INTERPRET=0 $(PY) -m pytest -q -m gpu tests

gpu-smoke: $(STAMP)
	$(PY) bench/gpu_smoke.py

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Each writes <name>_<device>.json and .md under bench/results (about 40 minutes in all on 2 cores).
bench: $(STAMP)
	$(PY) bench/sweep_bench.py --out bench/results
	$(PY) bench/steps_bench.py --out bench/results --tune --sparse-full
	$(PY) bench/prune_bench.py --out bench/results --quick
	$(PY) bench/accuracy_bench.py --out bench/results

clean:
	rm -rf out .pytest_cache
