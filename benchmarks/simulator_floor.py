"""The simulator at its floor: one cell of the simulator benchmark, measured carefully.

Workload and contenders are ``benchmarks/simulator.py``'s (imported from it): angle encoding,
``hardware_efficient`` ansatz with 2 layers, <Z> on every wire, forward + backward with
gradients to inputs and weights, at n qubits and a batch of B circuits; PennyLane
default.qubit on the same; and two references, named for what they are:

* ``state copy``: one read and one write of the (B, 2^n) complex64 state. Any simulator that
  produces the state does at least this: the floor.
* ``dense GEMM``: one complex64 (B, 2^n) x (2^n, 2^n) product, the work of one folded block.
  The fast path folds only where its cost model says folding is cheaper (at B = 4096: n <= 6);
  at n = 8 and 10 it applies the gates layer by layer, does less arithmetic than the GEMM, and
  the GEMM is a reference, not a floor (the row says which).

Timing: ``benchmarks/_bench.py``'s ``measure``, the same function as ``simulator.py``'s (the
contenders interleaved in rounds after warm-up runs, glibc's heap pinned); ratios are taken
within each round, reported as min / median / max (a target is met at the median). A
torch.profiler table shows where qpeft's time goes. This file's numbers are the ones to quote
for its cell.

    python benchmarks/simulator_floor.py                 # n = 8, B = 4096 -> results/simulator-floor.*
    python benchmarks/simulator_floor.py --cell 10,4096 --name simulator-floor-n10
    python benchmarks/simulator_floor.py --device cuda --name simulator-floor-cuda
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, simulator, also under runpy / importlib
from _bench import (  # noqa: E402
    add_load_flag,
    finish,
    load_note,
    load_start,
    measure,
    round_ratio,
    run_meta,
    steady_allocator,
    write_results,
)
from simulator import dense_gemm, folds, pennylane_run, qpeft_run, state_copy  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MAX_RATIO_TO_DENSE_GEMM = 3.5
GROUPS = {
    "GEMM (mm, bmm)": ("aten::mm", "aten::bmm", "aten::addmm"),
    "copies (copy_, clone, index)": ("aten::copy_", "aten::clone", "aten::index", "aten::contiguous"),
    "elementwise (mul, add, square, cos, sin, ...)": (
        "aten::mul",
        "aten::add",
        "aten::add_",
        "aten::pow",
        "aten::square",
        "aten::cos",
        "aten::sin",
        "aten::sum",
        "aten::neg",
        "aten::polar",
        "aten::fill_",
        "aten::sub",
        "aten::div",
    ),
}


def profile_groups(fn) -> dict:
    """Self time per op group (ms) of one forward + backward, and the top ops."""
    with torch.profiler.profile() as prof:
        fn()
    groups: dict[str, float] = defaultdict(float)
    total = 0.0
    for avg in prof.key_averages():
        ms = avg.self_cpu_time_total / 1e3
        total += ms
        group = next((g for g, names in GROUPS.items() if avg.key in names), "other (views, autograd, Python)")
        groups[group] += ms
    top = sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[:10]
    return {
        "total_ms": total,
        "groups_ms": dict(groups),
        "top_ops": [{"op": a.key, "calls": a.count, "self_ms": a.self_cpu_time_total / 1e3} for a in top],
    }


def cell(n: int, batch: int, threads: int, args) -> dict:
    torch.set_num_threads(threads)
    contenders = {
        "qpeft fast": qpeft_run("fast")(n, batch, args.device)[0],
        "dense GEMM": dense_gemm(n, batch, args.device)[0],
        "state copy": state_copy(n, batch, args.device)[0],
    }
    if args.pennylane and args.device == "cpu":
        contenders["PennyLane default.qubit"] = pennylane_run("default.qubit", "backprop")(n, batch)[0]
    sync = torch.cuda.synchronize if args.device == "cuda" else None
    timed = measure(
        contenders, rounds=args.rounds, repeats=args.repeats, warmup=args.warmup, sync=sync, slow_limit=args.slow_limit
    )
    row = {
        "n": n,
        "batch": batch,
        "threads": threads,
        "fast_path_folds": folds(n, batch),
        "seconds": {k: v["seconds"] for k, v in timed.items()},
        "cpu_seconds": {k: v["cpu_seconds"] for k, v in timed.items()},
        "page_faults": {k: v["page_faults"] for k, v in timed.items()},
        "runs": {k: v["runs"] for k, v in timed.items()},
        "ratio_to_dense_gemm": round_ratio(timed, "qpeft fast", "dense GEMM"),
        "ratio_to_state_copy": round_ratio(timed, "qpeft fast", "state copy"),
        "profile": profile_groups(contenders["qpeft fast"]) if args.device == "cpu" else None,
    }
    row["dense_gemm_met"] = row["ratio_to_dense_gemm"]["median"] <= MAX_RATIO_TO_DENSE_GEMM
    if "PennyLane default.qubit" in timed:
        row["speedup_vs_default_qubit"] = round_ratio(timed, "PennyLane default.qubit", "qpeft fast")
    return row


def _ms(v: dict | None) -> str:
    return "n/a" if v is None else f"{v['median'] * 1e3:.1f} ({v['min'] * 1e3:.1f}-{v['max'] * 1e3:.1f})"


def _x(v: dict | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"**{v['median']:.{digits}f}x** ({v['min']:.{digits}f}-{v['max']:.{digits}f})"


def write_markdown(path: Path, meta: dict, rows: list[dict]) -> None:
    lines = [
        "# The simulator at its floor",
        "",
        "Workload: angle encoding (RY), `hardware_efficient` ansatz, 2 layers (RY-RZ + CZ ring), <Z> on every "
        "wire, forward + backward with gradients to inputs and weights (`simulate(..., method='fast')`). *State "
        "copy*: one read and write of the (batch, 2^n) complex64 state, the floor of any simulator that produces "
        "it. *Dense GEMM*: one complex64 (batch, 2^n) x (2^n, 2^n) product, the work of one folded block; where "
        "the fast path does not fold (column *fast path*: *layers*), a reference, not a floor.",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, torch {meta['torch']}, {meta['device']}, {meta['date']}. {load_note(meta)}  ",
        f"Timing: `benchmarks/_bench.py: measure` (also `simulator.py`'s): {meta['rounds']} interleaved rounds of "
        f"{meta['repeats']} runs each after {meta['warmup']} warm-up runs (PennyLane: one run per round), glibc's "
        "heap pinned; cells give median (min-max) over the rounds, ratios taken within each round.",
        "",
        "**These are the numbers to quote for this cell** (`simulator.md` times the same cell with the same "
        "function, in a grid that compares stacks and sizes).",
        "",
        "| n | batch | torch threads | fast path | qpeft fast (ms) | state copy (ms) | qpeft / state copy | "
        f"dense GEMM (ms) | qpeft / dense GEMM (target <= {MAX_RATIO_TO_DENSE_GEMM}x) | PennyLane default.qubit "
        "(ms) | qpeft speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        verdict = "met" if r["dense_gemm_met"] else "NOT met"
        lines.append(
            f"| {r['n']} | {r['batch']} | {r['threads']} | {'folds' if r['fast_path_folds'] else 'layers'} | "
            f"{_ms(s['qpeft fast'])} | {_ms(s['state copy'])} | {_x(r['ratio_to_state_copy'], 1)} | "
            f"{_ms(s['dense GEMM'])} | {_x(r['ratio_to_dense_gemm'])} {verdict} | "
            f"{_ms(s.get('PennyLane default.qubit'))} | {_x(r.get('speedup_vs_default_qubit'), 1)} |"
        )
    lines += [
        "",
        "Minor page faults per run: "
        + "; ".join(
            f"{r['threads']} thread(s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["page_faults"].items()) for r in rows
        ),
    ]
    for r in rows:
        p = r.get("profile")
        if not p:
            continue
        lines += [
            "",
            f"## Where qpeft's time goes (n = {r['n']}, batch {r['batch']}, {r['threads']} thread(s); one profiled "
            f"forward + backward, {p['total_ms']:.1f} ms of op self time)",
            "",
            "| op group | ms | share |",
            "|---|---|---|",
        ]
        for g, v in sorted(p["groups_ms"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {g} | {v:.1f} | {v / p['total_ms']:.0%} |")
        lines += ["", "Top ops: " + ", ".join(f"{o['op']} x{o['calls']} {o['self_ms']:.1f} ms" for o in p["top_ops"])]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="8,4096", help="n,batch")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--slow-limit", type=float, default=5.0, help="seconds: slower contenders run once a round")
    parser.add_argument("--no-pennylane", dest="pennylane", action="store_false")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="simulator-floor")
    add_load_flag(parser)
    args = parser.parse_args(argv)
    n, batch = (int(v) for v in args.cell.split(","))
    meta = run_meta("simulator_floor.py", argv, args.device, threads=False, loadavg_start=load_start(args.allow_load))
    meta |= {k: getattr(args, k) for k in ("rounds", "repeats", "warmup", "device")}  # threads: per row
    meta["allocator_pinned"] = steady_allocator()
    rows = []
    for threads in args.threads:
        rows.append(cell(n, batch, threads, args))
        r = rows[-1]
        print(f"threads {threads}: qpeft / dense GEMM {r['ratio_to_dense_gemm']}", flush=True)
    finish(meta)
    write_results(args.out, args.name, {"meta": meta, "results": rows}, write_markdown, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
