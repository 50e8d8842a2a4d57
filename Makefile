# Two commands a user needs: `make demo` and `make test`. Each sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DURATION ?= 0
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck unit models compress-table report clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "make: $(PY) not found; install Python 3.11+"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/edgevib demo --duration $(DURATION)

lint: setup
	$(BIN)/ruff check edgevib edge models cloud tests benchmarks

# mypy cannot follow setuptools' editable import hook, so it checks a tree of
# symlinks laid out as the installed package is.
typecheck: setup
	@rm -rf .typecheck && mkdir -p .typecheck/edgevib
	@for f in edgevib/*; do ln -s ../../$$f .typecheck/edgevib/; done
	@for p in edge models cloud; do ln -s ../../$$p .typecheck/edgevib/$$p; done
	cd .typecheck && ../$(BIN)/mypy -p edgevib

# Doctests of the package first (each module's contract examples), then the suite.
# pytest exits 5 when a selection holds no tests: say so instead of failing the run.
test: lint typecheck
	@$(BIN)/pytest -q -p no:cacheprovider --doctest-modules --import-mode=importlib edgevib edge models cloud \
	 || { echo "make test: a doctest failed"; exit 1; }
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	 if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc

unit: setup
	@$(BIN)/pytest -m "not integration and not slow" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

models: setup
	$(BIN)/edgevib models build-zoo --data ../shared/cwru --out models/zoo

# The compression table (docs/compression_table.md) and models/zoo/cnn_small.onnx.
compress-table: setup
	$(BIN)/python benchmarks/compression_table.py --data ../shared/cwru --bearings ../shared/bearings --out docs
	$(BIN)/python benchmarks/compression_table.py --data ../shared/cwru --out docs/cnn_small --only inherit --zoo

# docs/report.md + docs/report/*.png: short benchmark runs, model latency, fault-injection counts,
# the last soak (benchmarks/soak.py). REPORT_ARGS='--skip-flink ...' reuses parts (see --help).
report: setup
	$(BIN)/python benchmarks/report.py $(REPORT_ARGS)

clean:
	rm -rf .typecheck build *.egg-info .pytest_cache .ruff_cache .mypy_cache
