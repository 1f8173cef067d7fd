"""Training-step overhead of each adapter on SmolLM2-135M-Instruct (the bundled model).

One optimizer step = forward + backward + AdamW step on a batch of 4 x 128 tokens, fp32.
Every (method, round) runs in its own fresh process (so its peak RSS is its own), with the
same data and seed; the rounds interleave the methods, so machine noise (other jobs on a
shared machine) hits all of them alike. Per run: the median step over ``--steps`` steps after
``--warmup``. Per method: min / median / max over the rounds, and the ratio to LoRA taken
within each round (paired), with its min / median / max. A target is met only when it
holds at the median; the spread is printed next to it.

``--baseline-src DIR`` also times the methods on another source tree (e.g. main's
``src``), alternating with this one inside every round, so a change is measured against
its baseline under the same load.

    python benchmarks/overhead.py                       # writes benchmarks/results/overhead.{json,md}
    python benchmarks/overhead.py --steps 3 --rounds 3  # a quicker look
    python benchmarks/overhead.py --device cuda --name overhead-cuda
    python benchmarks/overhead.py --paired --cycles 8 --name overhead-paired

``--paired``: all methods in one process, one step of each in turn (the order rotating every
cycle), so every ratio compares steps taken seconds apart: the measurement to trust on a
machine whose load changes from minute to minute. Memory is not measured in this mode.

A method is a preset, a preset with overrides (``qtha-weights:backend='noisy',shots=1024``) or
``qtha-weights-wukong72``: ``qtha-weights`` with its circuits on the emulated Wukong chip, 1024
shots, gradient from the exact simulator (the study's chip row). Ratios are taken to
``--reference`` (default ``lora``); a method's target names its own reference. The noise-aware
training target (the chip row at most 1.05x the same step exact, the study's CPsyCounD shape):

    python benchmarks/overhead.py --paired --methods qtha-weights qtha-weights-wukong72 \
        --reference qtha-weights --batch 4 --seq 256 --cycles 5 --name overhead-chip
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also under runpy / importlib
from _bench import add_load_flag, finish, load_note, load_start, run_meta, spread, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parent.parent / "src"
METHODS = ["peft-lora", "lora", "mpo", "qtha-default", "qtha-weights", "qtha-angle", "qtha-mlp"]
REFERENCE = "lora"
CHIP = "qtha-weights-wukong72"
#: short names for methods with overrides
ALIASES = {CHIP: "qtha-weights:backend='noisy',noise='wukong72',shots=1024,diff_method='hybrid'"}
#: method -> the reference its ratio is taken to, the largest step ratio (and peak-memory ratio) at the median
TARGETS = {
    "qtha-default": {"reference": "lora", "step": 1.15, "memory": 1.05},
    "qtha-weights": {"reference": "lora", "step": 1.10, "memory": 1.05},
    CHIP: {"reference": "qtha-weights", "step": 1.05},
}


def build_model(method: str):
    """SmolLM2-135M with the adapter of ``method``: a preset name, optionally with overrides
    (``qtha-default:encoding='angle',n_qubits=8``), an alias (:data:`ALIASES`) or ``peft-lora``."""
    import ast

    from qpeft.adapters import get_model
    from qpeft.models import load_model

    model, _ = load_model("smollm2-135m")
    method = ALIASES.get(method, method)
    if method == "peft-lora":
        import peft

        cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
        return peft.get_peft_model(model, cfg)
    name, _, extra = method.partition(":")
    overrides = {}
    for item in filter(None, extra.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = ast.literal_eval(value)
    return get_model(model, name, **overrides)


def child(args) -> dict:
    """One run of one method (in a fresh process): its step times, peak memory, saved bytes."""
    import resource

    import torch

    torch.manual_seed(0)
    model = build_model(args.child).to(args.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, 49152, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(args.device)
    cuda = args.device == "cuda"
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    times, losses = [], []
    for step in range(args.warmup + args.steps):
        saved[0] = 0
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if step >= args.warmup:
            times.append(elapsed)
            losses.append(loss.item())
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "trainable_params": sum(p.numel() for p in params),
        "step_seconds": statistics.median(times),
        "step_seconds_all": times,
        "peak_bytes": peak,
        "saved_for_backward_bytes": saved[0],
        "final_loss": losses[-1],
    }


def paired(args) -> dict:
    """Step-level interleaving in one process: per cycle, one step of every method."""
    import torch

    models = {}
    for method in args.methods:
        torch.manual_seed(0)
        model = build_model(method).to(args.device)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        models[method] = (model, torch.optim.AdamW(params, lr=1e-4))
    ids = torch.randint(0, 49152, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def step(method: str) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process): on a shared machine the CPU time leaves
        out the time spent waiting for a core."""
        model, opt = models[method]
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - start, time.process_time() - cpu

    for _ in range(args.warmup):
        for method in args.methods:
            step(method)
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    cpu: dict[str, list[float]] = {m: [] for m in args.methods}
    for cycle in range(args.cycles):
        order = args.methods[cycle % len(args.methods) :] + args.methods[: cycle % len(args.methods)]
        for method in order:
            wall, used = step(method)
            times[method].append(wall)
            cpu[method].append(used)
        print(f"cycle {cycle + 1}: " + "  ".join(f"{m} {times[m][-1]:.2f} s" for m in args.methods), flush=True)
    ref, ref_cpu = times[args.reference], cpu[args.reference]
    return {
        m: {
            "step_seconds": spread(t),
            "step_ratio": spread([a / b for a, b in zip(t, ref)]),
            "step_seconds_all": t,
            "cpu_seconds": spread(cpu[m]),
            "cpu_ratio": spread([a / b for a, b in zip(cpu[m], ref_cpu)]),
            "cpu_seconds_all": cpu[m],
        }
        for m, t in times.items()
    }


def write_paired_markdown(path: Path, meta: dict, rows: dict) -> None:
    lines = [
        "# Adapter overhead on SmolLM2-135M-Instruct, paired steps",
        "",
        f"One training step (forward + backward + AdamW) on {meta['batch']} x {meta['seq']} tokens, fp32, "
        f"{meta['device']}. All methods live in one process; each of {meta['cycles']} cycles takes one step of "
        f"every method in turn (order rotating), after {meta['warmup']} warm-up step(s) each, so each ratio to "
        f"`{meta['reference']}` compares steps taken seconds apart. Cells: median over the cycles (min-max).",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['threads']} torch threads; torch {meta['torch']}; {meta['date']}.  ",
        load_note(meta),
        "",
        "Wall: the step's elapsed time; CPU: the process's CPU time during the step (it leaves out the "
        "time spent waiting for a core while other jobs run, so it is the steadier of the two here; "
        f"the verdict reads it when it was recorded). Ratios: to `{meta['reference']}`, step by step.",
        "",
        "| method | step wall (s) | x ref (wall) | step CPU (s) | x ref (CPU) | target |",
        "|---|---|---|---|---|---|",
    ]
    for method, r in rows.items():
        target = TARGETS.get(method)
        ratio = r.get("cpu_ratio", r["step_ratio"])
        verdict = ""
        if target and target["reference"] == meta["reference"]:
            verdict = f"<= {target['step']}x: {'met' if ratio['median'] <= target['step'] else 'NOT met'}"
        cpu_cells = f"{_fmt(r['cpu_seconds'], '{:.3f}')} | {_fmt(r['cpu_ratio'])}" if "cpu_ratio" in r else "n/a | n/a"
        lines.append(
            f"| {method} | {_fmt(r['step_seconds'], '{:.3f}')} | {_fmt(r['step_ratio'])} | {cpu_cells} | {verdict} |"
        )
    path.write_text("\n".join(lines) + "\n")


def run(method: str, src: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--device", args.device]
    for flag in ("steps", "warmup", "batch", "seq"):
        cmd += [f"--{flag}", str(getattr(args, flag))]
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{method} ({src}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(runs: dict[str, list[dict]], ref_key: str) -> list[dict]:
    rows = []
    ref = runs[ref_key]
    for key, results in runs.items():
        step_ratios = [r["step_seconds"] / q["step_seconds"] for r, q in zip(results, ref)]
        mem_ratios = [r["peak_bytes"] / q["peak_bytes"] for r, q in zip(results, ref)]
        rows.append(
            {
                "method": key,
                "trainable_params": results[0]["trainable_params"],
                "rounds": len(results),
                "step_seconds": spread([r["step_seconds"] for r in results]),
                "step_ratio": spread(step_ratios),
                "peak_bytes": spread([r["peak_bytes"] for r in results]),
                "memory_ratio": spread(mem_ratios),
                "saved_for_backward_bytes": results[0]["saved_for_backward_bytes"],
                "final_loss": results[0]["final_loss"],
                "runs": results,
            }
        )
    return rows


def goals(runs: dict[str, list[dict]]) -> dict:
    """Each target whose method and reference ran: the within-round ratios to its reference."""
    out = {}
    for method, target in TARGETS.items():
        ref = target["reference"]
        if method not in runs or ref not in runs:
            continue
        step = spread([r["step_seconds"] / q["step_seconds"] for r, q in zip(runs[method], runs[ref])])
        goal = {"reference": ref, "max_step_ratio": target["step"], "step_ratio": step}
        goal["step_met"] = step["median"] <= target["step"]
        if "memory" in target:
            memory = spread([r["peak_bytes"] / q["peak_bytes"] for r, q in zip(runs[method], runs[ref])])
            goal |= {"max_memory_ratio": target["memory"], "memory_ratio": memory}
            goal["memory_met"] = memory["median"] <= target["memory"]
        out[method] = goal
    return out


def _fmt(s: dict, f: str = "{:.2f}") -> str:
    return f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"


def write_markdown(path: Path, meta: dict, rows: list[dict], goal: dict) -> None:
    mem = "peak CUDA memory" if meta["device"] == "cuda" else "peak RSS"
    lines = [
        "# Adapter overhead on SmolLM2-135M-Instruct",
        "",
        f"One training step (forward + backward + AdamW) on {meta['batch']} x {meta['seq']} tokens, fp32, "
        f"{meta['device']}. {meta['rounds']} rounds; in every round each method runs once, in a fresh process, "
        f"interleaved with the others ({meta['warmup']} warm-up + {meta['steps']} timed steps; a run's step time "
        f"is the median of its timed steps). Cells: median over the rounds (min-max); x LoRA is taken within "
        "each round, then summarised the same way.",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['threads']} torch threads; torch {meta['torch']}; {meta['date']}.  ",
        load_note(meta) + " Absolute times move with the machine's load; the within-round ratios are the "
        f"numbers to read (x ref: to `{meta['reference']}`).",
        "",
        f"| method | trainable params | step (s) | x ref | {mem} (MiB) | x ref | saved for backward (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = {k: v / 2**20 for k, v in r["peak_bytes"].items()}
        lines.append(
            f"| {r['method']} | {r['trainable_params']:,} | {_fmt(r['step_seconds'], '{:.3f}')} | "
            f"{_fmt(r['step_ratio'])} | {_fmt(peak, '{:.0f}')} | {_fmt(r['memory_ratio'])} | "
            f"{r['saved_for_backward_bytes'] / 2**20:.0f} |"
        )
    from qpeft.adapters import PRESETS

    lines += ["", "Presets measured:", ""]
    names = {r["method"].split("@")[0] for r in rows}
    lines += [f"- `{m}`: {PRESETS[m][2]}" for m in PRESETS if m in names]
    lines += [f"- `{m}`: `{ALIASES[m]}`" for m in ALIASES if m in names]
    if meta.get("baseline_src"):
        lines += [
            "",
            f"`method@baseline`: the same preset on the source tree `{meta['baseline_src']}`, run in the same rounds.",
        ]
    lines += ["", "## Targets (each against its reference, within rounds; met only at the median)", ""]
    for method, g in goal.items():
        text = (
            f"- `{method}` step time vs `{g['reference']}`: **{g['step_ratio']['median']:.2f}x** (min "
            f"{g['step_ratio']['min']:.2f}, max {g['step_ratio']['max']:.2f}; target <= {g['max_step_ratio']}x: "
            f"{'met' if g['step_met'] else 'NOT met'})"
        )
        if "memory_ratio" in g:
            text += (
                f"; {mem}: **{g['memory_ratio']['median']:.2f}x** (min {g['memory_ratio']['min']:.2f}, max "
                f"{g['memory_ratio']['max']:.2f}; target <= {g['max_memory_ratio']}x: "
                f"{'met' if g['memory_met'] else 'NOT met'})"
            )
        lines.append(text)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (at least 3)")
    parser.add_argument("--baseline-src", type=Path, help="also time --baseline-methods on this source tree")
    parser.add_argument("--baseline-methods", nargs="+", default=["qtha-default", "qtha-weights"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="overhead", help="results file stem")
    parser.add_argument("--paired", action="store_true", help="step-level interleaving in one process")
    parser.add_argument("--cycles", type=int, default=8, help="--paired: steps per method")
    parser.add_argument("--reference", default=REFERENCE, help="the method the x ref ratios are taken to")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_load_flag(parser)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.paired:
        return main_paired(args, argv)
    if args.steps < 1 or args.rounds < 3:
        parser.error("--steps must be at least 1 and --rounds at least 3")
    if args.reference not in args.methods:
        parser.error(f"--methods must include the reference {args.reference!r}")
    loadavg_start = load_start(args.allow_load)
    from qpeft.models import load_model

    load_model("smollm2-135m")  # build the cache once, outside the timed processes
    plan = [(m, m, SRC) for m in args.methods]
    if args.baseline_src:
        plan += [(f"{m}@baseline", m, args.baseline_src) for m in args.baseline_methods]
    runs: dict[str, list[dict]] = {key: [] for key, _, _ in plan}
    for rnd in range(args.rounds):
        for key, method, src in plan:
            r = run(method, src, args)
            runs[key].append(r)
            print(
                f"round {rnd + 1} {key:24s} {r['step_seconds']:.3f} s/step  peak {r['peak_bytes'] / 2**20:.0f} MiB",
                flush=True,
            )
    rows = summarize(runs, args.reference)
    goal = goals(runs)
    meta = run_meta("overhead.py", argv, args.device, loadavg_start=loadavg_start, finished=True)
    meta |= {"baseline_src": str(args.baseline_src) if args.baseline_src else None}
    meta |= {k: getattr(args, k) for k in ("steps", "warmup", "batch", "seq", "rounds", "device", "reference")}
    write_results(
        args.out, args.name, {"meta": meta, "targets": goal, "results": rows}, write_markdown, meta, rows, goal
    )
    return 0


def main_paired(args, argv) -> int:
    if args.reference not in args.methods:
        raise SystemExit(f"--methods must include the reference {args.reference!r}")
    meta = run_meta("overhead.py", argv, args.device, loadavg_start=load_start(args.allow_load)) | {
        k: getattr(args, k) for k in ("warmup", "batch", "seq", "cycles", "device", "reference")
    }
    rows = paired(args)
    finish(meta)
    write_results(args.out, args.name, {"meta": meta, "results": rows}, write_paired_markdown, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
