"""Simulator benchmark: the QTHA workload on qpeft and on the usual QML stacks.

Workload: angle-encoded inputs (RY), ``hardware_efficient`` ansatz with 2 layers
(RY-RZ on every wire + CZ ring), Pauli-Z expectation per wire; forward + backward with
gradients to both inputs and weights (forward only where a stack cannot backprop, and
labelled so). Every contender runs in the same process on the same machine.

    python benchmarks/simulator.py            # full grid, writes benchmarks/results/simulator.*
    python benchmarks/simulator.py --quick    # small grid for `make demo`, writes simulator-quick.*

Each time is the median of ``--repeats`` runs after one warm-up run. A contender whose
single run takes longer than ``--slow-limit`` seconds is timed once and marked.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from qpeft.backends import get_backend
from qpeft.quantum import expval_z, hardware_efficient, simulate
from qpeft.sysinfo import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also under runpy / importlib
from _bench import write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = {"n": 8, "batch": 4096, "min_speedup_vs_default_qubit": 15.0, "max_ratio_to_floor": 5.0}


def _inputs(n: int, batch: int, n_weights: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, n, generator=g) * math.pi).to(dtype).requires_grad_()
    w = (torch.rand(n_weights, generator=g) * 2 * math.pi).to(dtype).requires_grad_()
    return x, w


def _train_step(forward: Callable[[], torch.Tensor], x, w) -> Callable[[], None]:
    def run():
        x.grad = w.grad = None
        forward().sum().backward()
        assert x.grad is not None and w.grad is not None

    return run


def qpeft_run(method: str):
    def make(n, batch):
        c = hardware_efficient(n, 2)
        x, w = _inputs(n, batch, c.n_weights)
        return _train_step(lambda: expval_z(simulate(c, x, w, method=method)), x, w), "fwd+bwd"

    return make


def pennylane_run(device: str, diff_method: str):
    def make(n, batch):
        qml = __import__("pennylane")
        from qpeft.backends.pennylane import apply_pennylane_ops

        c = hardware_efficient(n, 2)
        x, w = _inputs(n, batch, c.n_weights, torch.float64 if device != "default.qubit" else torch.float32)

        @qml.qnode(qml.device(device, wires=n), interface="torch", diff_method=diff_method)
        def f(inputs, weights):
            apply_pennylane_ops(c, inputs, weights)  # inputs (batch, n): parameter broadcasting
            return [qml.expval(qml.PauliZ(i)) for i in range(n)]

        return _train_step(lambda: torch.stack(list(f(x, w)), -1), x, w), "fwd+bwd"

    return make


def forward_only(backend: str):
    def make(n, batch):
        c = hardware_efficient(n, 2)
        x, w = _inputs(n, batch, c.n_weights, torch.float64)
        runner = get_backend(backend)
        return (lambda: runner.run(c, x.detach(), w.detach())), "fwd only"

    return make


def gemm_floor(n, batch):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(batch, 2**n, dtype=torch.complex64, generator=g)
    b = torch.randn(2**n, 2**n, dtype=torch.complex64, generator=g)
    return (lambda: a @ b), "one GEMM"


CONTENDERS = {
    "qpeft fast": (qpeft_run("fast"), None),
    "qpeft gates": (qpeft_run("gates"), None),
    "PennyLane default.qubit": (pennylane_run("default.qubit", "backprop"), "pennylane"),
    "PennyLane lightning.qubit": (pennylane_run("lightning.qubit", "adjoint"), "pennylane_lightning"),
    "Qiskit Aer": (forward_only("qiskit"), "qiskit_aer"),
    "pyqpanda3 CPUQVM": (forward_only("pyqpanda3"), "pyqpanda3"),
    "GEMM floor": (gemm_floor, None),
}


def time_it(run: Callable[[], object], repeats: int, slow_limit: float) -> tuple[float, int]:
    start = time.perf_counter()
    run()  # warm-up
    first = time.perf_counter() - start
    if first > slow_limit:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start, 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), repeats


def machine() -> dict:
    cpu = cpu_model()
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("pennylane", "pennylane_lightning", "qiskit", "qiskit_aer", "pyqpanda3"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing or odd SDK is reported, not fatal
            versions[mod] = None
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": versions,
    }


def run_grid(qubits, batches, names, repeats, slow_limit, skip_over: float) -> list[dict]:
    rows = []
    dropped: dict[str, str] = {}  # a stack that took minutes is not rerun at larger sizes
    for n in sorted(qubits):
        for batch in sorted(batches):
            for name in names:
                make, module = CONTENDERS[name]
                row = {"n": n, "batch": batch, "contender": name}
                if module is not None and _missing(module):
                    rows.append(row | {"skipped": f"{module} not installed"})
                    continue
                if name in dropped:
                    rows.append(row | {"skipped": dropped[name]})
                    continue
                run, kind = make(n, batch)
                seconds, runs = time_it(run, repeats, slow_limit)
                rows.append(row | {"seconds": seconds, "runs": runs, "kind": kind})
                print(
                    f"n={n:2d} batch={batch:5d} {name:28s} {seconds * 1e3:10.2f} ms ({kind}, {runs} runs)",
                    flush=True,
                )
                if seconds > skip_over:
                    dropped[name] = f"not run: took {seconds:.0f} s at n={n}, batch={batch}"
    return rows


def _missing(module: str) -> bool:
    try:
        __import__(module)
        return False
    except ImportError:
        return True


def add_ratios(rows: list[dict]) -> None:
    base = {(r["n"], r["batch"]): r["seconds"] for r in rows if r["contender"] == "qpeft fast" and "seconds" in r}
    for r in rows:
        if "seconds" in r and (r["n"], r["batch"]) in base:
            r["ratio_to_qpeft_fast"] = r["seconds"] / base[(r["n"], r["batch"])]


def targets(rows: list[dict]) -> dict:
    def t(name):
        return next(
            (
                r.get("seconds")
                for r in rows
                if r["contender"] == name and r["n"] == TARGET["n"] and r["batch"] == TARGET["batch"]
            ),
            None,
        )

    fast, dq, floor = t("qpeft fast"), t("PennyLane default.qubit"), t("GEMM floor")
    out = dict(TARGET)
    if fast and dq:
        out["speedup_vs_default_qubit"] = dq / fast
        out["speedup_met"] = dq / fast >= TARGET["min_speedup_vs_default_qubit"]
    if fast and floor:
        out["ratio_to_floor"] = fast / floor
        out["floor_met"] = fast / floor <= TARGET["max_ratio_to_floor"]
    return out


def write_markdown(path: Path, meta: dict, rows: list[dict], names: list[str], goal: dict) -> None:
    lines = [
        "# Simulator benchmark",
        "",
        "Workload: angle encoding (RY), `hardware_efficient` ansatz, 2 layers (RY-RZ + CZ ring), "
        "<Z> on every wire, forward + backward with gradients to inputs and weights "
        "(Qiskit Aer and pyqpanda3: forward only, they cannot backprop; GEMM floor: one "
        "complex64 (batch, 2^n) x (2^n, 2^n) product).",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']['cpu']}, "
        f"{meta['machine']['threads']} torch threads; {meta['machine']['platform']}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["machine"]["versions"].items() if v) + "  ",
        f"Median of {meta['repeats']} runs after a warm-up (runs slower than {meta['slow_limit']} s: "
        "timed once, marked *). Times in ms; x = time / qpeft fast.",
        "",
        "| n | batch | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    cells: dict[tuple, dict] = {}
    for r in rows:
        cells.setdefault((r["n"], r["batch"]), {})[r["contender"]] = r
    for (n, batch), by_name in cells.items():
        out = []
        for name in names:
            r = by_name.get(name)
            if r is None:
                out.append("not run")
            elif "skipped" in r:
                out.append("n/a")
            else:
                mark = "*" if r["runs"] == 1 else ""
                out.append(f"{r['seconds'] * 1e3:.1f}{mark} ({r.get('ratio_to_qpeft_fast', 0):.2g}x)")
        lines.append(f"| {n} | {batch} | " + " | ".join(out) + " |")
    lines += ["", "## Targets (n = 8, batch = 4096)", ""]
    if "speedup_vs_default_qubit" in goal:
        lines.append(
            f"- qpeft fast vs PennyLane default.qubit: **{goal['speedup_vs_default_qubit']:.1f}x faster** "
            f"(target >= {TARGET['min_speedup_vs_default_qubit']:.0f}x: "
            f"{'met' if goal['speedup_met'] else 'NOT met'})"
        )
    if "ratio_to_floor" in goal:
        lines.append(
            f"- qpeft fast / single-GEMM floor: **{goal['ratio_to_floor']:.2f}x** "
            f"(target <= {TARGET['max_ratio_to_floor']:.0f}x: {'met' if goal['floor_met'] else 'NOT met'}; "
            "forward + backward needs about 3 such products)"
        )
    if len(lines) and "speedup_vs_default_qubit" not in goal:
        lines.append("- not measured in this run (n = 8, batch = 4096 not in the grid)")
    path.write_text("\n".join(lines) + "\n")


def plot(path: Path, rows: list[dict], names: list[str], batch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        pts = [
            (r["n"], r["seconds"] * 1e3)
            for r in rows
            if r["contender"] == name and r["batch"] == batch and "seconds" in r
        ]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("qubits n")
    ax.set_ylabel("ms per step (median)")
    ax.set_title(f"QTHA circuit workload, batch {batch}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small grid (n 4, 6; batch 256) for `make demo`")
    parser.add_argument("--qubits", type=int, nargs="+", default=[4, 6, 8, 10])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    parser.add_argument(
        "--slow-limit", type=float, default=60.0, help="seconds: a stack whose warm-up run takes longer is timed once"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = list(CONTENDERS)
    stem = "simulator"
    if args.quick:
        args.qubits, args.batches, stem = [4, 6], [256], "simulator-quick"
        names = ["qpeft fast", "qpeft gates", "PennyLane default.qubit", "GEMM floor"]
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": " ".join(["python", "benchmarks/simulator.py", *sys.argv[1:]])
        if argv is None
        else "python benchmarks/simulator.py " + " ".join(argv),
        "machine": machine(),
        "repeats": args.repeats,
        "slow_limit": args.slow_limit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    rows = run_grid(args.qubits, args.batches, names, args.repeats, args.slow_limit, skip_over=120.0)
    add_ratios(rows)
    goal = targets(rows)
    write_results(
        args.out, stem, {"meta": meta, "targets": goal, "results": rows}, write_markdown, meta, rows, names, goal
    )
    plot(args.out / f"{stem}.png", rows, names, max(args.batches))
    print(f"wrote {args.out / stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
