"""Where a training step's time goes, per part, for LoRA and the QTHA presets (torch.profiler).

One step = forward + backward + AdamW on SmolLM2-135M-Instruct (bundled), ``--batch`` x
``--seq`` tokens, fp32. Every adapter module gets profiler ranges (forward hooks), and each
backward node is attributed to the part whose forward op created it (the profiler's
autograd sequence numbers), so each part's time is forward + backward (+ recomputation):

* base model: everything outside the adapters' deltas (the frozen linears included);
* adapter glue: scaling and adding the delta;
* LoRA factors / MPO factors: the down and up projections;
* circuit: the QuantumLayer (or the MLP control);
* fusion: the rest of the delta (``h + gamma*q``, the weights-mode mixing);
* dtype conversions: ``.to`` / complex <-> real copies and their backward, wherever they are;
* autograd bookkeeping: backward time outside any node (the engine), plus gradient accumulation;
* optimizer: AdamW.

``host`` columns give the Python / dispatcher time of a part's forward (its range's wall time
minus the time inside its ops); ``ops`` the number of forward ops + backward nodes per step.

    python benchmarks/profile_step.py             # writes benchmarks/results/profile.{json,md}
    python benchmarks/profile_step.py --methods qtha-weights qtha-weights-wukong72 --seq 256 --name profile-chip

A method is what ``overhead.py`` takes: a preset, a preset with overrides, or an alias such as
``qtha-weights-wukong72`` (the study's chip row).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.checkpoint import set_checkpoint_early_stop

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also under runpy / importlib
from _bench import add_load_flag, finish, load_note, load_start, run_meta, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ["lora", "qtha-default", "qtha-weights"]
CONVERSIONS = {
    "aten::to",
    "aten::_to_copy",
    "aten::view_as_real",
    "aten::view_as_complex",
    "aten::real",
    "aten::imag",
    "aten::complex",
    "aten::type_as",
}
CONVERSION_NODES = (
    "ToCopyBackward",
    "ViewAsRealBackward",
    "ViewAsComplexBackward",
    "RealBackward",
    "ImagBackward",
    "ComplexBackward",
)
PARTS = [
    "base model",
    "adapter glue",
    "LoRA factors",
    "MPO factors",
    "circuit",
    "fusion",
    "dtype conversions",
    "autograd bookkeeping",
    "optimizer",
]
PREFIX = "qpeft::"


def _ranged(module: torch.nn.Module, name: str) -> None:
    """Open a profiler range named ``qpeft::name`` around every forward of ``module``."""
    stack = []

    def enter(mod, args):
        rf = record_function(PREFIX + name)
        rf.__enter__()
        stack.append(rf)

    def leave(mod, args, out):
        stack.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def instrument(model) -> None:
    from qpeft.adapters.base import AdapterLayer

    for layer in model.modules():
        if not isinstance(layer, AdapterLayer):
            continue
        _ranged(layer, "adapter")
        _ranged(layer.base_layer, "base")
        for attr in ("mpo_A", "mpo_B"):
            if getattr(layer, attr, None) is not None:
                _ranged(getattr(layer, attr), "mpo")
        for attr in ("qnn", "mlp"):
            if getattr(layer, attr, None) is not None:
                _ranged(getattr(layer, attr), "circuit")
        delta = layer.delta
        has_factors = hasattr(layer, "mpo_A")

        def ranged_delta(x, _delta=delta, _name="delta" if has_factors else "lora"):
            with record_function(PREFIX + _name):
                return _delta(x)

        layer.delta = ranged_delta


RANGE_PART = {
    "base": "base model",
    "adapter": "adapter glue",
    "mpo": "MPO factors",
    "circuit": "circuit",
    "delta": "fusion",
    "lora": "LoRA factors",
}


def _range_of(event) -> str | None:
    """The innermost qpeft range around an event (None: outside the adapters)."""
    e = event.cpu_parent
    while e is not None:
        if e.name.startswith(PREFIX):
            return e.name[len(PREFIX) :]
        e = e.cpu_parent
    return None


def _is_top_op(event) -> bool:
    """An op called from Python (not from inside another op)."""
    p = event.cpu_parent
    return p is None or p.name.startswith((PREFIX, "step::", "Optimizer."))


def _in_optimizer(event) -> bool:
    e = event.cpu_parent
    while e is not None:
        if e.name == "step::optimizer":
            return True
        e = e.cpu_parent
    return False


def _recomputed(event) -> float:
    """Time of the qpeft ranges run inside ``event`` (forward recomputation in backward)."""
    total, todo = 0.0, list(event.cpu_children)
    while todo:
        e = todo.pop()
        if e.name.startswith(PREFIX):
            total += e.cpu_time_total
        else:
            todo.extend(e.cpu_children)
    return total


def attribute(events, steps: int) -> dict:
    """{part: {"ms": per step, "host_ms": ..., "ops": per step}} from one profile."""
    ms = defaultdict(float)
    host = defaultdict(float)
    ops = defaultdict(int)
    conv_from = defaultdict(float)
    seq_part: dict[int, str] = {}
    backward_ranges = [e for e in events if e.name == "step::backward"]

    def in_backward(e) -> bool:
        return any(b.time_range.start <= e.time_range.start <= b.time_range.end for b in backward_ranges)

    for e in events:  # every forward op that recorded an autograd node, nested ones too (einsum's)
        if e.sequence_nr >= 0 and not e.name.startswith(("autograd::", PREFIX, "step::")):
            rng = _range_of(e)
            seq_part.setdefault(e.sequence_nr, RANGE_PART[rng] if rng is not None else "base model")
    node_total = 0.0
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function"):
            continue
        if e.name.startswith(PREFIX):
            inner = sum(c.cpu_time_total for c in e.cpu_children if not c.name.startswith(PREFIX))
            nested = sum(c.cpu_time_total for c in e.cpu_children if c.name.startswith(PREFIX))
            host[RANGE_PART[e.name[len(PREFIX) :]]] += e.cpu_time_total - inner - nested
            continue
        if e.name.startswith("step::") or not _is_top_op(e) or e.name.startswith("autograd::"):
            continue
        if _in_optimizer(e):
            ms["optimizer"] += e.cpu_time_total
            ops["optimizer"] += 1
            continue
        rng = _range_of(e)
        if rng is None and in_backward(e) and e.cpu_parent is not None:
            continue  # an op run by a backward node: counted with its node below
        part = RANGE_PART[rng] if rng is not None else "base model"
        if e.name in CONVERSIONS:
            conv_from[part] += e.cpu_time_total
            part = "dtype conversions"
        ms[part] += e.cpu_time_total
        ops[part] += 1
    for e in events:
        if not e.name.startswith("autograd::engine::evaluate_function"):
            continue
        node = e.name.split(": ", 1)[-1]
        node_total += e.cpu_time_total
        own = e.cpu_time_total - _recomputed(e)  # a checkpoint's recomputation is counted in its ranges
        if "AccumulateGrad" in node:
            part = "autograd bookkeeping"
        else:
            part = seq_part.get(e.sequence_nr, "base model")
            if node.startswith(CONVERSION_NODES):
                conv_from[part] += own
                part = "dtype conversions"
        ms[part] += own
        ops[part] += 1
    engine = sum(b.cpu_time_total for b in backward_ranges) - node_total
    ms["autograd bookkeeping"] += max(0.0, engine)
    return {
        part: {
            "ms": ms[part] / 1e3 / steps,
            "host_ms": host[part] / 1e3 / steps,
            "ops": ops[part] / steps,
        }
        for part in PARTS
    } | {"dtype conversions by origin (ms)": {k: v / 1e3 / steps for k, v in conv_from.items()}}


def step_fn(model, opt, ids):
    def step():
        with record_function("step::forward"):
            loss = model(input_ids=ids, labels=ids).loss
        with record_function("step::backward"):
            loss.backward()
        with record_function("step::optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def measure(method: str, args) -> dict:
    from overhead import build_model

    torch.manual_seed(0)
    model = build_model(method).to(args.device)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 49152, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(args.device)
    step = step_fn(model, opt, ids)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    instrument(model)
    step()  # warm the hooks
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    # no early stop: a checkpoint's recomputation then runs whole, so every range it opens closes
    with profile(activities=activities) as prof, set_checkpoint_early_stop(False):
        for _ in range(args.profiled):
            step()
        sync()
    parts = attribute(prof.events(), args.profiled)
    profiled_ms = sum(e.cpu_time_total for e in prof.events() if e.name.startswith("step::")) / 1e3 / args.profiled
    return {
        "method": method,
        "step_seconds": times,
        "step_seconds_median": statistics.median(times),
        "profiled_step_ms": profiled_ms,
        "parts": parts,
    }


def write_markdown(path: Path, meta: dict, rows: list[dict]) -> None:
    ref = next((r for r in rows if r["method"] == "lora"), rows[0])
    lines = [
        "# Where a training step's time goes (torch.profiler)",
        "",
        f"SmolLM2-135M-Instruct, {meta['batch']} x {meta['seq']} tokens, fp32, {meta['device']}; one step = "
        "forward + backward + AdamW. Step time: median of "
        f"{meta['steps']} unprofiled steps; parts: mean of {meta['profiled']} profiled steps (the profiler "
        "itself adds time to every op, so parts sum to more than the step).",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['threads']} torch threads, torch {meta['torch']}, {meta['date']}. "
        + load_note(meta)
        + " Compare the methods within this run rather than with other runs.",
        "",
        "| | " + " | ".join(r["method"] for r in rows) + " |",
        "|---|" + "---|" * len(rows),
        "| step (s, unprofiled) | "
        + " | ".join(
            f"{r['step_seconds_median']:.3f} ({r['step_seconds_median'] / ref['step_seconds_median']:.2f}x)"
            for r in rows
        )
        + " |",
    ]
    for part in PARTS:
        cells = []
        for r in rows:
            p = r["parts"][part]
            extra = p["ms"] - ref["parts"][part]["ms"]
            cell = f"{p['ms']:.1f}"
            if r is not ref:
                cell += f" ({extra:+.1f})"
            if p["host_ms"] >= 0.05:
                cell += f", host {p['host_ms']:.1f}"
            cell += f", {p['ops']:.0f} ops"
            cells.append(cell)
        lines.append(f"| {part} (ms) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "(+x): ms per step more than LoRA. The base model is the same code in every column, so its "
        "differences between columns measure the machine's load during that method's run, not the method; "
        "read the adapter rows (MPO factors, circuit, fusion, conversions) and their op counts. "
        "Autograd bookkeeping is the engine's time between nodes, which the profiler inflates per node. "
        "dtype conversions by the part they came from (ms): "
        + "; ".join(
            f"{r['method']}: "
            + (", ".join(f"{k} {v:.1f}" for k, v in r["parts"]["dtype conversions by origin (ms)"].items()) or "none")
            for r in rows
        ),
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="unprofiled timed steps")
    parser.add_argument("--profiled", type=int, default=2, help="profiled steps")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="profile", help="results file stem")
    add_load_flag(parser)
    args = parser.parse_args(argv)
    meta = run_meta("profile_step.py", argv, args.device, loadavg_start=load_start(args.allow_load)) | {
        k: getattr(args, k) for k in ("batch", "seq", "warmup", "steps", "profiled", "device")
    }
    rows = []
    for method in args.methods:
        rows.append(measure(method, args))
        print(f"{method:14s} {rows[-1]['step_seconds_median']:.3f} s/step", flush=True)
    finish(meta)
    write_results(args.out, args.name, {"meta": meta, "results": rows}, write_markdown, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
