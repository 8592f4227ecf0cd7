# Two commands from a fresh clone: `make demo` (napari with the plugin) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch installs in seconds; override for CUDA, e.g. TORCH_SPEC="torch==2.13.0+cu126".
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
APT_PACKAGES := xvfb libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
	libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
	libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1

.PHONY: demo test lint format system-deps benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[all]"
	touch $@

$(VENV)/.installed-testing: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[all,testing]"
	touch $@

# Qt needs a display and GL libraries: install Xvfb and friends when missing and we are root.
system-deps:
	@if ! command -v Xvfb >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-cursor; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
		else \
			echo "Xvfb or Qt's X libraries are missing; as root run: apt-get install $(APT_PACKAGES)"; exit 1; \
		fi; \
	fi

demo: $(VENV)/.installed-all
	$(BIN)/python -m napari_unet.demo

test: system-deps $(VENV)/.installed-testing
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-testing
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs

format: $(VENV)/.installed-testing
	$(BIN)/ruff format src tests benchmarks docs
	$(BIN)/ruff check --fix src tests benchmarks docs

benchmarks: $(VENV)/.installed-testing
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist
