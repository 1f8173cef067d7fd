#!/usr/bin/env bash
# benchmarks/gpu.sh on the workplace's lent GPU machine (the `device` tool), in one call.
#
# That machine reaches no package registry and takes at most 64 MiB with the working tree, so
# the bundled model (a 98 MB GGUF) cannot travel: the timings there use SmolLM2-135M's own
# architecture, config and tokenizer with random weights (the same shapes, so the same work per
# step; no quality number comes from that machine). Two halves:
#
#     bash benchmarks/gpu_device.sh prepare     # here: fills .gpu/ (git-ignored through
#                                               # .git/info/exclude): config, tokenizer, wheels
#     # then, with the device tool: run(command="bash benchmarks/gpu_device.sh run",
#     #                                  carry=[".gpu"], timeout_s=600)
#     # GPU_STEPS="tests demo" bash benchmarks/gpu_device.sh run: only those steps of gpu.sh
#
# `run` installs the carried wheels into /tmp/site, writes the random-weight model into a
# private QPEFT_CACHE, runs benchmarks/gpu.sh (the CUDA tests, the simulator floor, the
# training-step overhead and profile, the demo comparison) and copies the results to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    PY="${PYTHON:-.venv/bin/python}"
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/model .gpu/whl
    # the cached model (built on first use from the GGUF), without its weights
    cache=$("$PY" -c 'from qpeft.models import resolve; print(resolve("smollm2-135m"))') || exit
    find "$cache" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .gpu/model/ \;
    # qpeft's dependencies the machine's image lacks (KINDS.md lists what it has); pure Python
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/whl \
        "tenacity==$("$PY" -c 'import tenacity, importlib.metadata as m; print(m.version("tenacity"))')" || exit
    du -sh .gpu && ls .gpu/model .gpu/whl
    ;;
run)
    [[ -d .gpu/model ]] || { echo "gpu_device.sh: no .gpu/ here: run 'prepare' first and carry .gpu" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} QPEFT_CACHE=/tmp/qpeft-cache
    mkdir -p "$QPEFT_CACHE/smollm2-135m" && cp .gpu/model/* "$QPEFT_CACHE/smollm2-135m/"
    python3 - <<'EOF' || exit
import os, torch
from transformers import AutoConfig, AutoModelForCausalLM
where = os.path.join(os.environ["QPEFT_CACHE"], "smollm2-135m")
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(where), dtype=torch.float32)
model.save_pretrained(where, safe_serialization=True)
print("random-weight SmolLM2-135M:", sum(p.numel() for p in model.parameters()), "parameters")
EOF
    out="${OUT:-/tmp/gpu-out}"
    mkdir -p "$out"
    touch /tmp/gpu-start  # only the results this run writes go back (committed *-cuda files travel too)
    PYTHON=python3 QPEFT_RANDOM_WEIGHTS=1 bash benchmarks/gpu.sh 2>&1 | tee "$out/gpu.log"  # kept if cut short
    rc=${PIPESTATUS[0]}
    find benchmarks/results -maxdepth 1 -name '*-cuda*' -newer /tmp/gpu-start -print0 |
        tar czf "$out/results-cuda.tgz" --null -T -
    exit "$rc"
    ;;
*)
    echo "usage: bash benchmarks/gpu_device.sh prepare|run" >&2
    exit 2
    ;;
esac
