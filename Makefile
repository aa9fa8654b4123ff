# Fresh machine: `make demo` (install + the main job on the embedded world), `make test` (install + tests).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU torch where no CUDA driver is present (no CUDA wheels dragged in); the default build otherwise.
TORCH := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")

.PHONY: install demo test test-all lint clean-world perf docs

install: $(STAMP)

# lmms-eval goes in without its requirements (an unpinned torchvision among them pulls a CUDA torch over the CPU
# build); the `lmms` extra holds the runtime imports the adapter needs.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,lmms]"
	$(BIN)/pip install -q --no-deps "lmms-eval==0.7.3"
	touch $(STAMP)

# The quick suite (one or two strategies per family) on the embedded world, then the leaderboard. Runs already
# in results/ are skipped; the report is written even if a run failed.
demo: install
	$(BIN)/mllmtune world build
	$(BIN)/mllmtune bench benchmarks/quick.yaml; status=$$?; $(BIN)/mllmtune report && exit $$status

test: install
	$(BIN)/python -m pytest -q -m "not gpu"

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

# Suite overhead, memory, start-up and growth against plain baselines (~10 minutes on 2 cores) -> results/perf.csv.
perf: install
	$(BIN)/mllmtune perf

# docs/recipes.md from the recipe schema (tests/test_reference.py fails when it is stale).
docs: install
	$(BIN)/python -m mllmtune.config.reference > docs/recipes.md

lint: install
	$(BIN)/ruff check mllmtune tests
	$(BIN)/ruff format --check mllmtune tests

clean-world:
	rm -rf $${MLLMTUNE_HOME:-$$HOME/.cache/mllmtune}/world
