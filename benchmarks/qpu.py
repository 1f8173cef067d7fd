"""Quantum jobs per training step of qtha-weights on SmolLM2-135M-Instruct (the bundled model).

For each gradient method: the circuits one optimizer step sends (60 modules: q_proj and
v_proj of 30 layers), the jobs that takes with one engine call per module (forward, then
gradient) versus one call per step (all modules together), for Origin's 200 programs per job
and IBM's per-job limits; and the job engine's own cost per circuit (keys, cache, split,
threads, polling, ledger) next to the local provider's simulation time per circuit, measured
on a real step (forward + backward through the step runner) with ``local:shots``.

    python benchmarks/qpu.py              # writes benchmarks/results/qpu.{json,md}
    python benchmarks/qpu.py --rounds 2   # a quick look
    python benchmarks/qpu.py --baseline-src ../old-checkout   # this tree against another, interleaved

With ``--baseline-src`` the script runs itself and the other tree's ``benchmarks/qpu.py`` in
turns (``--repeats`` each, alternating which goes first, each in a fresh process with its own
tree's ``src`` on the path) and writes ``qpu-baseline.{json,md}``: the engine's overhead per
circuit of this tree over the other's, per configuration, at the median over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also under runpy / importlib
from _bench import add_load_flag, load_note, load_start, run_meta, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ["parameter_shift", "spsa", "hybrid"]
TARGET = {"max_engine_overhead_ratio": 0.05, "provider": "local:shots", "gradients": "parameter_shift"}
#: the engine's overhead per circuit may grow by at most this factor against a baseline tree
BASELINE_TARGET = 1.10
SHOTS = 1000


def _qtha_layers():
    from qpeft.adapters import get_model
    from qpeft.models import load_model

    torch.manual_seed(0)
    model = get_model(load_model("smollm2-135m")[0], "qtha-weights")
    return [m for m in model.modules() if hasattr(m, "step_runner") and getattr(m, "qnn", None) is not None]


def _step(layers, runner, scope: str) -> None:
    """What a training step does to the quantum part: every module's mixing matrix, backward."""
    runner.scope = scope
    for layer in layers:
        layer.qnn.weights.grad = None
    loss = sum(layer.mixing().square().sum() for layer in layers)
    loss.backward()


class _Clock:
    seconds = 0.0


def _timed(run, clock: _Clock):
    """``run`` that adds its wall time to ``clock.seconds``."""

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            clock.seconds += time.perf_counter() - started

    return timed


def _provider_clock(provider) -> _Clock:
    """A clock of the wall time spent inside the provider's calls (submit / status / result /
    cancel / find / wait): the provider's own time, whatever it does in them."""
    clock = _Clock()
    for name in ("submit", "status", "result", "cancel", "find", "wait"):
        setattr(provider, name, _timed(getattr(provider, name), clock))
    return clock


def _measure(layers, method: str, batching: str, spec: str, rounds: int) -> dict:
    """One engine and run directory for ``rounds + 1`` steps, as in a training run; the first step
    (the engine keys its templates and opens its files) is reported on its own."""
    from qpeft.jobs import JobEngine
    from qpeft.jobs.providers import get_provider
    from qpeft.jobs.step import StepRunner
    from qpeft.jobs.summary import totals

    walls, sims, jobs, circuits = [], [], [], []
    with tempfile.TemporaryDirectory() as run_dir:
        provider = get_provider(spec, max_circuits=200)
        inside = _provider_clock(provider)
        engine = JobEngine(
            provider, run_dir, max_parallel=1, poll_interval=0.001, max_poll_interval=0.01, progress=False
        )
        runner = StepRunner(engine, SHOTS, method, batching=batching)
        runner.attach(torch.nn.ModuleList(layers))
        engine.run = _timed(engine.run, clock := _Clock())
        for k in range(rounds + 1):
            clock.seconds = inside.seconds = 0.0
            before = len(engine.ledger.records)
            _step(layers, runner, f"step-{k}")
            t = totals(engine.ledger.records[before:])
            walls.append(clock.seconds)
            sims.append(inside.seconds)
            jobs.append(t["jobs"])
            circuits.append(t["circuits"])
        for layer in layers:
            layer.step_runner = None
    # the machine is shared: a step's wall time can include preemption, so the overhead of each
    # step is taken against that step's own provider time, then the median and the minimum
    first = (walls[0] - sims[0]) / sims[0]
    walls, sims = walls[1:], sims[1:]
    ratios = sorted((w - s) / s for w, s in zip(walls, sims))
    wall, sim = statistics.median(walls), statistics.median(sims)
    n = circuits[0]
    return {
        "method": method,
        "batching": batching,
        "circuits_per_step": n,
        "jobs_per_step": jobs[0],
        "engine_wall_seconds": walls,
        "provider_seconds": sims,
        "engine_overhead_per_circuit_us": 1e6 * statistics.median(w - s for w, s in zip(walls, sims)) / n,
        "provider_per_circuit_us": 1e6 * sim / n,
        "overhead_ratio": statistics.median(ratios),
        "overhead_ratio_min": ratios[0],
        "overhead_ratio_max": ratios[-1],
        "overhead_ratio_first_step": first,
        "wall_seconds_median": wall,
    }


def write_markdown(path: Path, meta: dict, rows: list[dict], limits: list[dict]) -> None:
    lines = [
        "# Quantum jobs per training step: qtha-weights on SmolLM2-135M-Instruct",
        "",
        f"{meta['modules']} quantum modules (6-qubit, 2-layer hardware-efficient QNN each), {SHOTS} shots per "
        f"circuit, provider `{TARGET['provider']}` with 200 circuits per job (Origin's cap), one job at a time. "
        f"Each configuration is one engine and run directory (ledger, result cache) kept for "
        f"{meta['rounds'] + 1} training steps, as in a run; the first step (the engine keys its templates and "
        f"opens its files) is shown on its own, the median / min / max are over the {meta['rounds']} steps after it. "
        "Provider time = wall time inside the provider's calls (submit, status, result: here the simulation "
        "and the sampling); engine overhead = wall time of the engine calls minus that, per circuit.",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['threads']} torch threads; torch {meta['torch']}; {meta['date']}",
        "",
        "| gradients | batching | circuits / step | jobs / step | engine overhead / circuit (us) "
        "| provider / circuit (us) | overhead / provider: median | min | max | first step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['batching']} | {r['circuits_per_step']:,} | {r['jobs_per_step']} | "
            f"{r['engine_overhead_per_circuit_us']:.1f} | {r['provider_per_circuit_us']:.1f} | "
            f"{100 * r['overhead_ratio']:.1f} % | {100 * r['overhead_ratio_min']:.1f} % | "
            f"{100 * r['overhead_ratio_max']:.1f} % | {100 * r['overhead_ratio_first_step']:.1f} % |"
        )
    lines += [
        "",
        "`module`: one engine call per module (forward, then its gradient circuits), what a per-module "
        "QNN call does; `step`: all modules' circuits of the step in one call (`qpeft.jobs.step.StepRunner`). "
        "Modules with equal circuits share one template, so the local provider simulates all circuits of a "
        "template in one batched call. The engine writes each finished job (its results to the cache, then its "
        "`done` record) on one writer thread while the next job runs, and waits for the writes before it "
        "returns. What the engine does per job whatever its size (two ledger records, one append to the "
        "result cache, a status look) dominates when a step has few circuits: SPSA and hybrid send one job "
        "of 180 or 60 circuits per step, and their last job's write cannot overlap anything.",
        "",
        "Jobs per step from the provider limits (the split `qpeft plan` uses):",
        "",
        "| provider | gradients | circuits / step | jobs / step |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['provider']} | {r['method']} | {r['circuits']:,} | {r['jobs']} |" for r in limits]
    row = next(r for r in rows if r["batching"] == "step" and r["method"] == TARGET["gradients"])
    met = row["overhead_ratio"] <= TARGET["max_engine_overhead_ratio"]
    lines += [
        "",
        f"Target: engine overhead under {100 * TARGET['max_engine_overhead_ratio']:.0f} % of the local "
        f"provider's time, for a step of `qtha-weights` with its default gradients ({TARGET['gradients']}), "
        f"step batching, at the median: {100 * row['overhead_ratio']:.1f} % "
        f"(min {100 * row['overhead_ratio_min']:.1f} %, max {100 * row['overhead_ratio_max']:.1f} %): "
        f"**{'met' if met else 'NOT met'}**. {load_note(meta)} A step's wall time includes whatever preemption "
        "hit it, which is why min and max are shown.",
    ]
    path.write_text("\n".join(lines) + "\n")


def _run_tree(tree: Path, rounds: int, out: Path, allow_load: bool) -> list[dict]:
    """Run ``tree``'s ``benchmarks/qpu.py`` in a fresh process with ``tree/src`` first on the path;
    its result rows."""
    command = [sys.executable, str(tree / "benchmarks" / "qpu.py"), "--rounds", str(rounds), "--out", str(out)]
    if allow_load:
        command.append("--allow-load")
    env = os.environ | {"PYTHONPATH": str(tree / "src")}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((out / "qpu.json").read_text())["results"]


def compare_baseline(baseline: Path, rounds: int, repeats: int) -> tuple[list[dict], list[str]]:
    """This tree's and ``baseline``'s engine overhead per circuit, each configuration at the
    median over ``repeats`` alternating runs; returns the rows and the order the runs went in."""
    here = Path(__file__).resolve().parents[1]
    runs: dict[str, list[list[dict]]] = {"this": [], "baseline": []}
    order = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for name in ("this", "baseline") if i % 2 == 0 else ("baseline", "this"):
                tree = here if name == "this" else baseline
                # the other run of the pair is the load here: only the parent checks the machine
                runs[name].append(_run_tree(tree, rounds, Path(tmp) / f"{name}-{i}", allow_load=name == "this"))
                order.append(name)
                print(f"[qpu] {name} run {i + 1} of {repeats} done", flush=True)
    rows = []
    for k, row in enumerate(runs["this"][0]):
        mine = [r[k]["engine_overhead_per_circuit_us"] for r in runs["this"]]
        theirs = [r[k]["engine_overhead_per_circuit_us"] for r in runs["baseline"]]
        assert all(r[k]["method"] == row["method"] and r[k]["batching"] == row["batching"] for r in runs["baseline"])
        rows.append(
            {
                "method": row["method"],
                "batching": row["batching"],
                "circuits_per_step": row["circuits_per_step"],
                "this_us": mine,
                "baseline_us": theirs,
                "this_median_us": statistics.median(mine),
                "baseline_median_us": statistics.median(theirs),
                "ratio": statistics.median(mine) / statistics.median(theirs),
                "this_provider_us": statistics.median(r[k]["provider_per_circuit_us"] for r in runs["this"]),
                "baseline_provider_us": statistics.median(r[k]["provider_per_circuit_us"] for r in runs["baseline"]),
            }
        )
    return rows, order


def write_baseline_markdown(path: Path, meta: dict, rows: list[dict]) -> None:
    lines = [
        "# Job engine overhead per circuit: this tree against a baseline tree",
        "",
        f"`benchmarks/qpu.py --rounds {meta['rounds']}` of this tree and of `{meta['baseline_src']}` "
        f"(commit {meta['baseline_commit']}; this tree at {meta['this_commit']}), {meta['repeats']} runs each in "
        "fresh processes, alternating which goes first (order: "
        f"{', '.join(meta['order'])}). Each run measures every configuration as `qpu.md` describes; the "
        "engine overhead per circuit (wall time of the engine calls minus the provider's, per circuit, median "
        "over the steps of a run) is taken at the median over the runs.",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['cpu']}, {meta['threads']} torch threads; torch {meta['torch']}; {meta['date']}",
        "",
        "| gradients | batching | circuits / step | overhead / circuit, this (us) | baseline (us) | this / baseline "
        "| runs, this | runs, baseline | provider / circuit, this / baseline (us) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['batching']} | {r['circuits_per_step']:,} | {r['this_median_us']:.1f} | "
            f"{r['baseline_median_us']:.1f} | {r['ratio']:.2f}x | "
            f"{', '.join(f'{v:.1f}' for v in r['this_us'])} | {', '.join(f'{v:.1f}' for v in r['baseline_us'])} | "
            f"{r['this_provider_us']:.1f} / {r['baseline_provider_us']:.1f} |"
        )
    row = next(r for r in rows if r["batching"] == "step" and r["method"] == TARGET["gradients"])
    met = row["ratio"] <= BASELINE_TARGET
    lines += [
        "",
        f"Target: the engine's overhead per circuit grows by at most {100 * (BASELINE_TARGET - 1):.0f} % for a "
        f"step of `qtha-weights` with its default gradients ({TARGET['gradients']}), step batching: "
        f"{row['ratio']:.2f}x: **{'met' if met else 'NOT met'}**. {load_note(meta)}",
    ]
    path.write_text("\n".join(lines) + "\n")


def _commit(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=15, help="steps measured per configuration (after one first step)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--baseline-src", type=Path, help="compare with this checkout's benchmarks/qpu.py")
    parser.add_argument("--repeats", type=int, default=3, help="--baseline-src: runs of each tree")
    add_load_flag(parser)
    args = parser.parse_args(argv)
    loadavg_start = load_start(args.allow_load)
    if args.baseline_src is not None:
        baseline = args.baseline_src.resolve()
        if not (baseline / "benchmarks" / "qpu.py").is_file():
            parser.error(f"--baseline-src {args.baseline_src}: no benchmarks/qpu.py there (give a checkout's root)")
        rows, order = compare_baseline(baseline, args.rounds, args.repeats)
        meta = run_meta("qpu.py", argv, loadavg_start=loadavg_start, finished=True)
        meta |= {
            "rounds": args.rounds,
            "repeats": args.repeats,
            "order": order,
            "baseline_src": str(args.baseline_src),
            "baseline_commit": _commit(baseline),
            "this_commit": _commit(Path(__file__).resolve().parents[1]),
            "target_ratio": BASELINE_TARGET,
        }
        write_results(args.out, "qpu-baseline", {"meta": meta, "results": rows}, write_baseline_markdown, meta, rows)
        return 0

    from qpeft.jobs.plan import plan_run

    layers = _qtha_layers()
    rows = []
    for method in METHODS:
        for batching in ("module", "step"):
            rows.append(_measure(layers, method, batching, TARGET["provider"], args.rounds))
            print(json.dumps(rows[-1]), flush=True)
    circuits = [layer.qnn.executed_circuit for layer in layers]
    limits = []
    for spec in ("origin", "ibm"):
        for method in METHODS:
            p = plan_run(circuits, spec, SHOTS, 1, method, eval_passes=0)
            limits.append(
                {"provider": spec, "method": method, "circuits": p.circuits_per_step, "jobs": p.jobs_per_step}
            )
    meta = run_meta("qpu.py", argv, loadavg_start=loadavg_start, finished=True)
    meta |= {"rounds": args.rounds, "modules": len(layers), "shots": SHOTS}
    payload = {"meta": meta, "target": TARGET, "results": rows, "limits": limits}
    write_results(args.out, "qpu", payload, write_markdown, meta, rows, limits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
