#!/usr/bin/env bash
# The GPU path, measured: on a machine with CUDA, run the CUDA test cases, then the simulator
# and overhead benchmarks (and the step profile) on the GPU, writing
# benchmarks/results/*-cuda.{json,md}.
#
# Usage (from the repository root; needs a Python with a CUDA build of torch and qpeft's
# dependencies installed):
#     PYTHON=.venv/bin/python bash benchmarks/gpu.sh            # about 5 minutes on one H200
# On the workplace's lent GPU machine (no registry, no room for the GGUF), run it through
# benchmarks/gpu_device.sh, which brings the dependencies and a random-weight SmolLM2-135M.
# Each step has its own time limit, and a failing step does not stop the others; the exit
# status is non-zero if any step failed. GPU_STEPS="tests profile" runs only the steps named
# (tests, simulator-8, simulator-12, overhead, overhead-large, profile, demo).
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
RESULTS=benchmarks/results
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu.sh: torch.cuda.is_available() is False with $PYTHON; run this on a CUDA machine" >&2
    exit 2
fi
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name())'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

failed=()
wanted() {  # wanted NAME: the step is among $GPU_STEPS, or GPU_STEPS is unset (every step)
    [[ -z "${GPU_STEPS:-}" || " $GPU_STEPS " == *" $1 "* ]]
}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, remember failures
    local name=$1 limit=$2
    shift 2
    wanted "$name" || return 0
    echo "== $name (limit ${limit}s): $*"
    if ! timeout "$limit" "$@"; then
        echo "== $name FAILED" >&2
        failed+=("$name")
    fi
}

# 1. The CUDA test cases: every test that skips without CUDA (their ids or skip reasons say so).
wanted tests && rm -f "$RESULTS"/tests-cuda.*  # no stale summary
step tests 90 "$PYTHON" -m pytest -q -rs -k "cuda or gpu" --junitxml="$RESULTS/tests-cuda.xml" tests
[[ -f "$RESULTS/tests-cuda.xml" ]] && "$PYTHON" - "$RESULTS/tests-cuda.xml" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
cases = []
for case in suite.iter("testcase"):
    status = "passed"
    for tag in ("failure", "error", "skipped"):
        if case.find(tag) is not None:
            status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
    cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "status": status,
                  "seconds": float(case.get("time", 0))})
out = Path(sys.argv[1]).with_suffix("")
Path(f"{out}.json").write_text(json.dumps({"cases": cases}, indent=2))
counts = {s: sum(c["status"] == s for c in cases) for s in ("passed", "failed", "error", "skipped")}
lines = ["# CUDA test cases", "", ", ".join(f"{v} {k}" for k, v in counts.items()), "", "| test | status |", "|---|---|"]
lines += [f"| {c['test']} | {c['status']} |" for c in cases]
Path(f"{out}.md").write_text("\n".join(lines) + "\n")
print(counts)
EOF

# 2. The simulator at its floor on the GPU (two cells), then the training-step overhead (all
# methods in one process, steps interleaved) and profile, then the README's demo comparison.
step simulator-8 60 "$PYTHON" benchmarks/simulator_floor.py --device cuda --threads 1 --cell 8,4096 \
    --name simulator-floor-cuda
step simulator-12 60 "$PYTHON" benchmarks/simulator_floor.py --device cuda --threads 1 --cell 12,4096 \
    --name simulator-floor-12-cuda
step overhead 100 "$PYTHON" benchmarks/overhead.py --device cuda --paired --cycles 10 --warmup 3 \
    --methods lora mpo qtha-default qtha-weights qtha-angle qtha-mlp --name overhead-cuda
# the same at a batch that fills a GPU better (16 x 512 tokens): how much of the ratio is launch overhead
step overhead-large 80 "$PYTHON" benchmarks/overhead.py --device cuda --paired --cycles 5 --warmup 2 --batch 16 \
    --seq 512 --methods lora qtha-default qtha-weights qtha-mlp --name overhead-cuda-16x512
step profile 120 "$PYTHON" benchmarks/profile_step.py --device cuda --name profile-cuda
demo=$(mktemp -d)
step demo 180 "$PYTHON" -m qpeft.cli compare --model smollm2-135m --data arithmetic --methods lora,qtha --seeds 0 \
    --steps 40 --batch-size 4 --max-length 160 --lr 1e-3 --eval-examples 32 --out "$demo"
if [[ -f "$demo/report.md" ]]; then
    grep -v "^!\[training loss\]" "$demo/report.md" > "$RESULTS/demo-cuda.md"  # its plot stays behind
    [[ -n "${QPEFT_RANDOM_WEIGHTS:-}" ]] && "$PYTHON" -c 'import sys; sys.path.insert(0, "benchmarks"); import _bench
print(_bench.RANDOM_WEIGHTS_NOTE, end="")' >> "$RESULTS/demo-cuda.md"
fi

if ((${#failed[@]})); then
    echo "gpu.sh: failed steps: ${failed[*]}" >&2
    exit 1
fi
echo "gpu.sh: all steps passed; results in $RESULTS/*-cuda.{json,md}"
