"""The simulator at its floor: one cell of the simulator benchmark, measured carefully.

Workload (as in ``benchmarks/simulator.py``): angle encoding, ``hardware_efficient`` ansatz
with 2 layers, <Z> on every wire, forward + backward with gradients to inputs and weights,
at n qubits and a batch of B circuits. Floor: one complex64 (B, 2^n) x (2^n, 2^n) GEMM
(forward + backward of a folded circuit needs about three). qpeft, the GEMM and PennyLane
default.qubit run interleaved in every round; the ratio is taken within each round and
reported as min / median / max (a target is met at the median). A torch.profiler table
shows where qpeft's time goes beyond the GEMMs.

    python benchmarks/simulator_floor.py                 # n = 8, B = 4096 -> results/simulator-floor.*
    python benchmarks/simulator_floor.py --device cuda --name simulator-floor-cuda
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from qpeft.quantum import expval_z, hardware_efficient, simulate

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also under runpy / importlib
from _bench import finish, run_meta, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MAX_RATIO_TO_FLOOR = 3.5
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


def workload(n: int, batch: int, device: str):
    c = hardware_efficient(n, 2)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, n, generator=g) * math.pi).to(device).requires_grad_()
    w = (torch.rand(c.n_weights, generator=g) * 2 * math.pi).to(device).requires_grad_()

    def qpeft():
        x.grad = w.grad = None
        expval_z(simulate(c, x, w, method="fast")).sum().backward()

    a = torch.randn(batch, 2**n, dtype=torch.complex64, generator=g).to(device)
    b = torch.randn(2**n, 2**n, dtype=torch.complex64, generator=g).to(device)

    def gemm():
        return a @ b

    return c, qpeft, gemm


def pennylane_step(c, n: int, batch: int):
    qml = __import__("pennylane")
    from qpeft.backends.pennylane import apply_pennylane_ops

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, n, generator=g) * math.pi).requires_grad_()
    w = (torch.rand(c.n_weights, generator=g) * 2 * math.pi).requires_grad_()

    @qml.qnode(qml.device("default.qubit", wires=n), interface="torch", diff_method="backprop")
    def f(inputs, weights):
        apply_pennylane_ops(c, inputs, weights)
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]

    def step():
        x.grad = w.grad = None
        torch.stack(list(f(x, w)), -1).sum().backward()

    return step


def timed(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def measure(n: int, batch: int, threads: int, args) -> dict:
    torch.set_num_threads(threads)
    c, qpeft, gemm = workload(n, batch, args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    contenders = {"qpeft fast": qpeft, "GEMM floor": gemm}
    if args.pennylane and args.device == "cpu":
        contenders["PennyLane default.qubit"] = pennylane_step(c, n, batch)
    for fn in contenders.values():
        fn()  # warm-up
    seconds: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            seconds[name].append(timed(fn, 1 if name.startswith("PennyLane") else args.repeats, sync))
    floor = [q / g for q, g in zip(seconds["qpeft fast"], seconds["GEMM floor"])]
    row = {
        "n": n,
        "batch": batch,
        "threads": threads,
        "seconds": {k: spread(v) for k, v in seconds.items()},
        "ratio_to_floor": spread(floor),
        "floor_met": statistics.median(floor) <= MAX_RATIO_TO_FLOOR,
        "profile": profile_groups(qpeft) if args.device == "cpu" else None,
    }
    if "PennyLane default.qubit" in seconds:
        row["speedup_vs_default_qubit"] = spread(
            [p / q for p, q in zip(seconds["PennyLane default.qubit"], seconds["qpeft fast"])]
        )
    return row


def write_markdown(path: Path, meta: dict, rows: list[dict]) -> None:
    lines = [
        "# The simulator at its floor",
        "",
        "Workload: angle encoding (RY), `hardware_efficient` ansatz, 2 layers (RY-RZ + CZ ring), <Z> on every "
        "wire, forward + backward with gradients to inputs and weights (`simulate(..., method='fast')`). Floor: "
        "one complex64 (batch, 2^n) x (2^n, 2^n) GEMM; forward + backward of a folded block needs about three.",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, torch {meta['torch']}, {meta['device']}, {meta['date']}; shared with other jobs "
        f"(load average {meta['loadavg_start'][0]:.1f} at start, {meta['loadavg_end'][0]:.1f} at end on "
        f"{os.cpu_count()} CPUs): {meta['rounds']} interleaved rounds, each time the median of {meta['repeats']} "
        "runs (PennyLane: one run per round); cells give median (min-max) over the rounds, ratios taken within "
        "each round.",
        "",
        "| n | batch | torch threads | qpeft fast (ms) | GEMM floor (ms) | qpeft / floor | target <= "
        f"{MAX_RATIO_TO_FLOOR}x | PennyLane default.qubit (ms) | qpeft speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]

        def ms(name, s=s):
            v = s.get(name)
            return "n/a" if v is None else f"{v['median'] * 1e3:.1f} ({v['min'] * 1e3:.1f}-{v['max'] * 1e3:.1f})"

        f = r["ratio_to_floor"]
        sp = r.get("speedup_vs_default_qubit")
        lines.append(
            f"| {r['n']} | {r['batch']} | {r['threads']} | {ms('qpeft fast')} | {ms('GEMM floor')} | "
            f"**{f['median']:.2f}x** ({f['min']:.2f}-{f['max']:.2f}) | {'met' if r['floor_met'] else 'NOT met'} | "
            f"{ms('PennyLane default.qubit')} | "
            + (f"{sp['median']:.1f}x ({sp['min']:.1f}-{sp['max']:.1f})" if sp else "n/a")
            + " |"
        )
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
    parser.add_argument("--no-pennylane", dest="pennylane", action="store_false")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="simulator-floor")
    args = parser.parse_args(argv)
    n, batch = (int(v) for v in args.cell.split(","))
    meta = run_meta("simulator_floor.py", argv, args.device, threads=False) | {  # threads: per row
        k: getattr(args, k) for k in ("rounds", "repeats", "device")
    }
    rows = []
    for threads in args.threads:
        rows.append(measure(n, batch, threads, args))
        r = rows[-1]
        print(f"threads {threads}: qpeft / floor {r['ratio_to_floor']}", flush=True)
    finish(meta)
    write_results(args.out, args.name, {"meta": meta, "results": rows}, write_markdown, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
