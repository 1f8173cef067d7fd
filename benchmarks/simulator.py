"""Simulator benchmark: the QTHA workload on qpeft and on the usual QML stacks.

Workload: angle-encoded inputs (RY), ``hardware_efficient`` ansatz with 2 layers
(RY-RZ on every wire + CZ ring), Pauli-Z expectation per wire; forward + backward with
gradients to both inputs and weights (forward only where a stack cannot backprop, and
labelled so). Every contender runs in the same process on the same machine.

    python benchmarks/simulator.py            # full grid, writes benchmarks/results/simulator.*
    python benchmarks/simulator.py --quick    # small grid for `make demo`, writes simulator-quick.*

Every cell is timed with the measuring function of ``benchmarks/_bench.py`` (the same as
``simulator_floor.py``'s): the contenders of a cell interleaved in ``--rounds`` rounds of
``--repeats`` runs after ``--warmup`` runs, glibc's heap pinned; a time is the median over the
rounds of each round's median run. A contender whose first run takes longer than
``--slow-limit`` seconds runs once per round (marked). For n = 8, batch 4096 quote
``simulator-floor.md`` (the same cell and measuring function, with 1 and 2 threads and a
profile); this grid compares stacks and sizes.

Two references, named for what they are: ``state copy`` (one read and one write of the
(batch, 2^n) complex64 state: a lower bound for any simulator that produces the state) and
``dense GEMM`` (one complex64 (batch, 2^n) x (2^n, 2^n) product: the work of one folded block,
which the fast path does only where its cost model folds, here up to n = 6; at larger n it
applies the gates layer by layer and can beat it).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from qpeft.backends import get_backend
from qpeft.quantum import expval_z, hardware_efficient, simulate
from qpeft.quantum.fold import block_steps, fold_is_cheaper
from qpeft.quantum.simulator import op_matrices

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also under runpy / importlib
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

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = {"n": 8, "batch": 4096, "min_speedup_vs_default_qubit": 15.0, "max_ratio_to_dense_gemm": 5.0}


def _inputs(n: int, batch: int, n_weights: int, dtype=torch.float32, device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, n, generator=g) * math.pi).to(dtype=dtype, device=device).requires_grad_()
    w = (torch.rand(n_weights, generator=g) * 2 * math.pi).to(dtype=dtype, device=device).requires_grad_()
    return x, w


def _train_step(forward: Callable[[], torch.Tensor], x, w) -> Callable[[], None]:
    def run():
        x.grad = w.grad = None
        forward().sum().backward()
        assert x.grad is not None and w.grad is not None

    return run


def qpeft_run(method: str):
    def make(n, batch, device: str = "cpu"):
        c = hardware_efficient(n, 2)
        x, w = _inputs(n, batch, c.n_weights, device=device)
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


def dense_gemm(n, batch, device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(batch, 2**n, dtype=torch.complex64, generator=g).to(device)
    b = torch.randn(2**n, 2**n, dtype=torch.complex64, generator=g).to(device)
    return (lambda: a @ b), "one GEMM"


def state_copy(n, batch, device: str = "cpu"):
    src = torch.randn(batch, 2**n, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)).to(device)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), "one state copy"


def folds(n: int, batch: int) -> bool:
    """Whether qpeft's fast path folds the workload's ansatz block into one unitary at this size."""
    c = hardware_efficient(n, 2)
    ops = [op for op in c.ops if not op.depends_on_input]
    mats = op_matrices(c, ops, None, torch.zeros(c.n_weights), torch.complex64, None)
    return fold_is_cheaper(n, batch, list(block_steps(ops, mats)))


CONTENDERS = {
    "qpeft fast": (qpeft_run("fast"), None),
    "qpeft gates": (qpeft_run("gates"), None),
    "PennyLane default.qubit": (pennylane_run("default.qubit", "backprop"), "pennylane"),
    "PennyLane lightning.qubit": (pennylane_run("lightning.qubit", "adjoint"), "pennylane_lightning"),
    "Qiskit Aer": (forward_only("qiskit"), "qiskit_aer"),
    "pyqpanda3 CPUQVM": (forward_only("pyqpanda3"), "pyqpanda3"),
    "dense GEMM": (dense_gemm, None),
    "state copy": (state_copy, None),
}
REFERENCES = ("dense GEMM", "state copy")


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("pennylane", "pennylane_lightning", "qiskit", "qiskit_aer", "pyqpanda3"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing or odd SDK is reported, not fatal
            out[mod] = None
    return out


def run_grid(qubits, batches, names, args, skip_over: float) -> list[dict]:
    rows = []
    dropped: dict[str, str] = {}  # a stack that took minutes is not rerun at larger sizes
    for n in sorted(qubits):
        for batch in sorted(batches):
            fns, kinds = {}, {}
            for name in names:
                make, module = CONTENDERS[name]
                row = {"n": n, "batch": batch, "contender": name}
                if module is not None and _missing(module):
                    rows.append(row | {"skipped": f"{module} not installed"})
                elif name in dropped:
                    rows.append(row | {"skipped": dropped[name]})
                else:
                    fns[name], kinds[name] = make(n, batch)
            timed = measure(
                fns, rounds=args.rounds, repeats=args.repeats, warmup=args.warmup, slow_limit=args.slow_limit
            )
            folded = folds(n, batch)
            for name, t in timed.items():
                seconds = t["seconds"]["median"]
                row = {"n": n, "batch": batch, "contender": name, "kind": kinds[name], "fast_path_folds": folded}
                row |= {k: v for k, v in t.items() if k != "seconds"} | {
                    "seconds": seconds,
                    "seconds_spread": t["seconds"],
                }
                if "qpeft fast" in timed:
                    row["ratio_to_qpeft_fast"] = round_ratio(timed, name, "qpeft fast")["median"]
                rows.append(row)
                print(
                    f"n={n:2d} batch={batch:5d} {name:28s} {seconds * 1e3:10.2f} ms ({kinds[name]}, "
                    f"{t['runs']} run(s) x {args.rounds} rounds, {t['page_faults']:.0f} page faults per run)",
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

    fast, dq, gemm, copy = t("qpeft fast"), t("PennyLane default.qubit"), t("dense GEMM"), t("state copy")
    out = dict(TARGET)
    if fast and dq:
        out["speedup_vs_default_qubit"] = dq / fast
        out["speedup_met"] = dq / fast >= TARGET["min_speedup_vs_default_qubit"]
    if fast and gemm:
        out["ratio_to_dense_gemm"] = fast / gemm
        out["dense_gemm_met"] = fast / gemm <= TARGET["max_ratio_to_dense_gemm"]
    if fast and copy:
        out["ratio_to_state_copy"] = fast / copy
    return out


def write_markdown(path: Path, meta: dict, rows: list[dict], names: list[str], goal: dict) -> None:
    lines = [
        "# Simulator benchmark",
        "",
        "Workload: angle encoding (RY), `hardware_efficient` ansatz, 2 layers (RY-RZ + CZ ring), "
        "<Z> on every wire, forward + backward with gradients to inputs and weights "
        "(Qiskit Aer and pyqpanda3: forward only, they cannot backprop). References: *dense GEMM*, one "
        "complex64 (batch, 2^n) x (2^n, 2^n) product, the work of one folded block (the fast path folds only "
        "where its cost model says so, marked *folds* below; elsewhere it applies the gates layer by layer, and "
        "the GEMM is not a floor for it); *state copy*, one read and write of the (batch, 2^n) complex64 state, "
        "a lower bound for any simulator that produces the state.",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['threads']} torch threads; {meta['platform']}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + "  ",
        f"Each cell: the contenders interleaved in {meta['rounds']} rounds of {meta['repeats']} runs after "
        f"{meta['warmup']} warm-up runs, glibc's heap pinned (`benchmarks/_bench.py: measure`); time = median "
        f"over the rounds of each round's median run, in ms; x = the same for the per-round ratio to qpeft fast. "
        f"Contenders slower than {meta['slow_limit']} s run once per round (marked *). " + load_note(meta),
        "",
        "**Number to quote** for n = 8, batch 4096 (the target cell): `simulator-floor.md`, the same cell with the "
        "same measuring function at 1 and 2 threads, with a profile. This grid compares stacks and sizes.",
        "",
        "| n | batch | fast path | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    cells: dict[tuple, dict] = {}
    for r in rows:
        cells.setdefault((r["n"], r["batch"]), {})[r["contender"]] = r
    for (n, batch), by_name in cells.items():
        out = []
        folded = next((r["fast_path_folds"] for r in by_name.values() if "fast_path_folds" in r), None)
        for name in names:
            r = by_name.get(name)
            if r is None:
                out.append("not run")
            elif "skipped" in r:
                out.append("n/a")
            else:
                mark = "*" if r["runs"] == 1 else ""
                out.append(f"{r['seconds'] * 1e3:.1f}{mark} ({r.get('ratio_to_qpeft_fast', 0):.2g}x)")
        path_kind = "n/a" if folded is None else ("folds" if folded else "layers")
        lines.append(f"| {n} | {batch} | {path_kind} | " + " | ".join(out) + " |")
    lines += ["", "## Targets (n = 8, batch = 4096)", ""]
    if "speedup_vs_default_qubit" in goal:
        lines.append(
            f"- qpeft fast vs PennyLane default.qubit: **{goal['speedup_vs_default_qubit']:.1f}x faster** "
            f"(target >= {TARGET['min_speedup_vs_default_qubit']:.0f}x: "
            f"{'met' if goal['speedup_met'] else 'NOT met'})"
        )
    if "ratio_to_dense_gemm" in goal:
        lines.append(
            f"- qpeft fast / dense GEMM: **{goal['ratio_to_dense_gemm']:.2f}x** "
            f"(target <= {TARGET['max_ratio_to_dense_gemm']:.0f}x: "
            f"{'met' if goal['dense_gemm_met'] else 'NOT met'}; a reference, not a floor, where the fast path does "
            "not fold)"
        )
    if "ratio_to_state_copy" in goal:
        lines.append(f"- qpeft fast / state copy (the floor): **{goal['ratio_to_state_copy']:.1f}x**")
    if "speedup_vs_default_qubit" not in goal:
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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender and round (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per contender first")
    parser.add_argument(
        "--slow-limit",
        type=float,
        default=5.0,
        help="seconds: a contender whose first run is slower runs once a round",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    add_load_flag(parser)
    args = parser.parse_args(argv)
    names = list(CONTENDERS)
    stem = "simulator"
    if args.quick:
        args.qubits, args.batches, stem = [4, 6], [256], "simulator-quick"
        names = ["qpeft fast", "qpeft gates", "PennyLane default.qubit", *REFERENCES]
    if args.repeats < 1 or args.rounds < 1:
        parser.error("--repeats and --rounds must be at least 1")
    meta = run_meta("simulator.py", argv, loadavg_start=load_start(args.allow_load))
    meta |= {"platform": platform.platform(), "versions": versions(), "allocator_pinned": steady_allocator()}
    meta |= {k: getattr(args, k) for k in ("rounds", "repeats", "warmup", "slow_limit")}
    rows = run_grid(args.qubits, args.batches, names, args, skip_over=120.0)
    finish(meta)
    goal = targets(rows)
    write_results(
        args.out, stem, {"meta": meta, "targets": goal, "results": rows}, write_markdown, meta, rows, names, goal
    )
    plot(args.out / f"{stem}.png", rows, names, max(args.batches))
    print(f"wrote {args.out / stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
