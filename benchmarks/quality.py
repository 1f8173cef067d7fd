"""The reproduction study: does QTHA beat LoRA, and does its quantum branch matter?

Methods on the bundled SmolLM2-135M-Instruct at equal steps, equal data order and the same
held-out examples (per seed), on three data sets:

* ``cpsycound``  (the paper's setting): final training loss (mean of the last 10 % of steps)
  and held-out loss on the run's held-out split;
* ``arithmetic`` (built-in task): held-out loss and exact-match accuracy;
* ``gsm8k``: loss on the first 200 questions of GSM8K's own test file, and accuracy on the
  first 100 of them for seed 0.

The study runs in phases (``--phases``, in the order given), each resumable cell by cell:

* ``arithmetic-tuned``, ``gsm8k-tuned`` (``benchmarks/results/quality-tuned/``): 40 steps, the six
  methods, each method's learning rate tuned on that data set itself by ``qpeft.tune`` (40-step
  runs scored on a validation split of the training examples, grid ``LR_GRID``, MedianPruner,
  an edge-best rate extends the grid), then seeds 0, 1, 2 at the chosen rates.
* ``capacity`` (same directory, arithmetic): ``qtha-default`` against ``qtha-angle`` (8 qubits)
  and ``qtha-deep`` (4 circuit layers), each with a ``qtha-mlp`` of its circuit's parameter count.
* ``cpsycound-400`` (``benchmarks/results/quality-400/``): 400 steps, the six methods, rates tuned
  by 100-step runs; for lora-r8 and qtha-default the tuning is repeated at 400 steps around the chosen
  rate (if the two disagree the phase stops and says what to run instead; the next phases go on);
  then seeds 0, 1, 2.
* ``original``: the committed 40-step study (``benchmarks/results/quality/``): rates from its
  25-step CPsyCounD grid, fixed for every data set, the arithmetic rate check, the chip row.

Within a phase every method's rate is chosen first, then the main cells run seed by seed (all
methods of seed 0, then seed 1, ...), so a partial phase has every method paired. A finished cell
is never run again; a cell or search made with other settings is an error. A main cell whose
settings, rate and seed equal a finished cell of the original study reuses that record.

    python benchmarks/quality.py --commit             # every phase not finished, committing each cell
    python benchmarks/quality.py --status             # what is finished, what is left, estimated hours
    python benchmarks/quality.py --report-only        # tables, paired comparisons, plots
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import sys
from pathlib import Path

import quality_cells as cells
from quality_cells import LR_FROM, MATCHED, METHODS, REFERENCE, SIX, WUKONG, Cell

logger = logging.getLogger("quality")


@dataclasses.dataclass(frozen=True)
class Phase:
    """A part of the study: one data set, its methods, budget and where its cells go."""

    results: str  # directory under benchmarks/results
    dataset: str
    methods: tuple[str, ...]
    steps: int
    tune_steps: int
    check: tuple[str, ...] = ()  # methods whose tuning is repeated at full length around the chosen rate


CAPACITY = ("qtha-default", "qtha-mlp", "qtha-angle", "qtha-mlp-angle", "qtha-deep", "qtha-mlp-deep")
PHASES = {
    "arithmetic-tuned": Phase("quality-tuned", "arithmetic", SIX, 40, 40),
    "capacity": Phase("quality-tuned", "arithmetic", CAPACITY, 40, 40),
    "cpsycound-400": Phase("quality-400", "cpsycound", SIX, 400, 100, check=(REFERENCE, "qtha-default")),
    "gsm8k-tuned": Phase("quality-tuned", "gsm8k", SIX, 40, 40),
}
DEFAULT_PHASES = ("arithmetic-tuned", "capacity", "cpsycound-400", "gsm8k-tuned")


class PhaseStopped(RuntimeError):
    """A phase cannot go on as planned (its message says what to run instead); the next phases can."""


def tune_spec(steps: int, lrs=None, extend: int = 2):
    """The study's search: the grid ``lrs`` (default ``LR_GRID``; extended at an edge), MedianPruner on 4 validation
    points per run, ``TUNE_VAL`` validation examples carved from the training examples."""
    from qpeft.tune import TuneSpec

    return TuneSpec(
        search="grid",
        lrs=list(cells.LR_GRID if lrs is None else lrs),
        steps=steps,
        val_examples=cells.TUNE_VAL,
        seed=cells.TUNE_SEED,
        extend=extend,
        prune=True,
        reports=4,
    )


def search(phase: Phase, method: str, spec, folder: str, commit: bool) -> dict:
    """Run (or resume) ``method``'s search in ``<results>/<dataset>/<folder>/<method>`` (the
    journal and tune.json; the tuning runs' directories go under runs/)."""
    from qpeft.tune import tune

    results = cells.RESULTS_ROOT / phase.results
    where = f"{phase.dataset}/{folder}/{method}"
    runs = cells.RUNS_ROOT / phase.results / where
    base = cells.train_config(Cell(phase.dataset, method, cells.TUNE_SEED, spec.lrs[0], spec.steps, "tune"), runs)

    def on_trial(trial: dict) -> None:
        value = f"{trial['value']:.4f}" if trial["state"] == "complete" else f"pruned at step {trial['pruned_at']}"
        logger.info("[study] %s trial %d, lr %g: %s", where, trial["number"], trial["params"]["lr"], value)
        if commit:
            cells.commit(
                f"Quality study: {phase.results}/{where} trial {trial['number']} "
                f"(lr {trial['params']['lr']:g}: {value})",
                results,
            )

    result = tune(base, spec, results / where, list(cells.SEEDS), on_trial=on_trial, trials_dir=runs)
    if "interrupted" in result:
        raise RuntimeError(f"{where}: the search was interrupted; run the study again to resume it")
    if commit:
        cells.commit(f"Quality study: {phase.results}/{where} chose lr {result['chosen']['lr']:g}", results)
    return result


def run_phase(name: str, phase: Phase, args, machine: dict) -> None:
    """Tune every method of ``phase`` (and check the short tuning at full length), then run
    the main cells seed by seed."""
    from quality_report import write_report

    results = cells.RESULTS_ROOT / phase.results
    settings = results_settings(phase.results, args)
    results.mkdir(parents=True, exist_ok=True)
    (results / "study.json").write_text(json.dumps({"settings": settings, "machine": machine}, indent=1))
    tune_steps = min(args.tune_steps or phase.tune_steps, phase.steps)
    lrs = {}
    for k, method in enumerate(phase.methods, 1):
        logger.info(
            "[study] phase %s: tuning %s (%d of %d), %d-step runs", name, method, k, len(phase.methods), tune_steps
        )
        lrs[method] = search(phase, method, tune_spec(tune_steps), f"tune-{tune_steps}", args.commit)["chosen"]["lr"]
        write_report(results, settings, machine)
    if tune_steps < phase.steps:
        step = cells.LR_GRID[1] / cells.LR_GRID[0]
        for method in phase.check:
            logger.info("[study] phase %s: checking %s's rate %g at %d steps", name, method, lrs[method], phase.steps)
            spec = tune_spec(phase.steps, [lrs[method] / step, lrs[method], lrs[method] * step], extend=0)
            full = search(phase, method, spec, f"tune-check-{phase.steps}", args.commit)["chosen"]["lr"]
            write_report(results, settings, machine)
            if not math.isclose(full, lrs[method]):
                raise PhaseStopped(
                    f"phase {name}: {tune_steps}-step tuning chose lr {lrs[method]:g} for {method}, but "
                    f"{phase.steps}-step runs choose {full:g}: the short tuning does not stand in for the full "
                    f"length here. Tune at full length instead: python benchmarks/quality.py --phases {name} "
                    f"--tune-steps {phase.steps} --commit"
                )
    todo = [(seed, method) for seed in cells.SEEDS for method in phase.methods]  # seeds outermost: complete seeds first
    for k, (seed, method) in enumerate(todo, 1):
        cell = Cell(phase.dataset, method, seed, lrs[method], phase.steps, "main")
        logger.info("[study] phase %s: main cell %d of %d: %s", name, k, len(todo), cell.name)
        cells.run_cell(cell, results)
        write_report(results, settings, machine)
        if args.commit:
            cells.commit(f"Quality study: cell {phase.results}/{cell.name}", results)


def results_settings(folder: str, args) -> dict:
    """The settings of one results directory (its study.json and its report's header)."""
    phases = {n: p for n, p in PHASES.items() if p.results == folder}
    steps = {p.steps for p in phases.values()}
    tune_steps = {min(args.tune_steps or p.tune_steps, p.steps) for p in phases.values()}
    return {
        "model": cells.MODEL,
        "steps": max(steps),
        "tune_steps": max(tune_steps),
        "lr_grid": list(cells.LR_GRID),
        "tune": {"seed": cells.TUNE_SEED, "val_examples": cells.TUNE_VAL, "search": "grid", "prune": "median"},
        "seeds": list(cells.SEEDS),
        "common": cells.COMMON,
        "datasets": cells.portable(cells.DATASETS),
        "methods": {m: list(METHODS[m]) for p in phases.values() for m in p.methods},
        "phases": {n: dataclasses.asdict(p) for n, p in phases.items()},
        "matched_lora": args.matched,
    }


def run_original(args, machine: dict) -> None:
    """The committed 40-step study: rates from its finished CPsyCounD grid (fixed for every data
    set), main cells, the arithmetic rate check, then the emulated-chip row."""
    from quality_report import write_report
    from quality_stats import metrics

    results = cells.RESULTS
    settings = {
        "model": cells.MODEL,
        "steps": 40,
        "tune_steps": 25,
        "lr_grid": list(cells.LR_GRID),
        "tune_seed": cells.TUNE_SEED,
        "seeds": list(cells.SEEDS),
        "common": cells.COMMON,
        "datasets": cells.portable(cells.DATASETS),
        "methods": {k: list(METHODS[k]) for k in (*SIX, WUKONG)},
        "tune_dataset": cells.TUNE_DATASET,
        "matched_lora": args.matched,
    }
    (results / "study.json").write_text(json.dumps({"settings": settings, "machine": machine}, indent=1))
    methods = [m for m in args.methods if m in (*SIX, WUKONG)]
    lrs = {}
    for method in [m for m in methods if m not in LR_FROM]:
        grid = {}
        for lr in cells.LR_GRID:
            cell = Cell(cells.TUNE_DATASET, method, cells.TUNE_SEED, lr, 25, "grid")
            grid[lr] = cells.finished_cell(cell, results)
            if grid[lr] is None:
                raise SystemExit(f"the original study's grid cell {cell.name} is missing from {results}")
        lrs[method] = cells.chosen_lr(grid)
    for method, source in LR_FROM.items():
        if method in methods:
            if source not in lrs:
                raise SystemExit(f"{method} takes the learning rate tuned for {source}: include {source}")
            lrs[method] = lrs[source]

    def run_and_report(cell: Cell) -> dict:
        record = cells.run_cell(cell, results)
        write_report(results, settings, machine)
        if args.commit:
            cells.commit(f"Quality study: cell {cell.name}", results)
        return record

    # the emulated-chip row is slow (noisy density matrices): it comes after everything else
    phases = [[m for m in methods if m != WUKONG], [m for m in methods if m == WUKONG]]
    for phase, dataset in [(p, d) for p in phases for d in args.datasets]:
        for seed in cells.SEEDS:  # seeds outermost: a partial study still has every method paired
            for method in phase:
                run_and_report(Cell(dataset, method, seed, lrs[method], 40, "main"))
        if dataset not in cells.LR_CHECK:
            continue
        for method in [m for m in phase if m not in LR_FROM]:
            chosen = cells.run_cell(Cell(dataset, method, cells.SEEDS[0], lrs[method], 40, "main"), results)
            for lr in sorted(set(lrs.values()) - {lrs[method]}):
                check = run_and_report(Cell(dataset, method, cells.SEEDS[0], lr, 40, "lrcheck"))
                if metrics(check)["heldout_loss"] < metrics(chosen)["heldout_loss"]:  # it mattered: all seeds
                    for seed in cells.SEEDS[1:]:
                        run_and_report(Cell(dataset, method, seed, lr, 40, "lrcheck"))


def status(names: list[str], args) -> str:
    """What is finished and what is left of each phase, with the training hours left on a
    quiet machine (steps x SECONDS_PER_STEP; evaluation not counted)."""
    lines, left = [], 0.0
    for name in names:
        phase = PHASES[name]
        results = cells.RESULTS_ROOT / phase.results
        tune_steps = min(args.tune_steps or phase.tune_steps, phase.steps)
        per_step = cells.SECONDS_PER_STEP.get(phase.dataset, 4.0) / 3600
        lines.append(f"phase {name} ({phase.results}/{phase.dataset}, {phase.steps} steps, tuning {tune_steps}):")
        lrs = {}
        for method in phase.methods:
            folder = results / phase.dataset / f"tune-{tune_steps}" / method
            done = folder / "tune.json"
            if done.is_file():
                lrs[method] = json.loads(done.read_text())["chosen"]["lr"]
                lines.append(f"  tuned {method}: lr {lrs[method]:g}")
            else:
                n = _finished_trials(folder)
                left += max(0, len(cells.LR_GRID) - n) * tune_steps * per_step
                lines.append(f"  tuning {method}: {n} of {len(cells.LR_GRID)}+ trials finished")
        if tune_steps < phase.steps:
            for method in phase.check:
                folder = results / phase.dataset / f"tune-check-{phase.steps}" / method
                if (folder / "tune.json").is_file():
                    full = json.loads((folder / "tune.json").read_text())["chosen"]["lr"]
                    agrees = method in lrs and math.isclose(full, lrs[method])
                    lines.append(
                        f"  full-length check of {method}: lr {full:g} ({'agrees' if agrees else 'DISAGREES'})"
                    )
                    continue
                n = _finished_trials(folder)
                left += max(0, 3 - n) * phase.steps * per_step
                lines.append(f"  full-length check of {method}: {n} of 3 trials finished")
        todo = [(s, m) for s in cells.SEEDS for m in phase.methods]
        done = [(s, m) for s, m in todo if (results / phase.dataset / m / f"seed{s}" / "cell.json").is_file()]
        left += (len(todo) - len(done)) * phase.steps * per_step
        lines.append(f"  main cells: {len(done)} of {len(todo)} finished")
    lines.append(f"about {left:.1f} h of training left on a quiet machine (evaluation not counted)")
    return "\n".join(lines)


def _finished_trials(folder: Path) -> int:
    journal = folder / "optuna.journal"
    if not journal.is_file():
        return 0
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="tune", storage=JournalStorage(JournalFileBackend(str(journal))))
    states = optuna.trial.TrialState
    return len(study.get_trials(states=(states.COMPLETE, states.PRUNED)))


def main(argv: list[str] | None = None) -> int:
    """Run (or report, or show the status of) the phases named by ``--phases``; 0 when every
    phase went through, 4 when one stopped (its message says what to run instead)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--phases",
        default=",".join(DEFAULT_PHASES),
        help=f"comma-separated, run in this order: {', '.join(PHASES)}, original",
    )
    parser.add_argument("--tune-steps", type=int, help="steps of every tuning run (default: each phase's own)")
    parser.add_argument("--status", action="store_true", help="say what is finished and what is left; run nothing")
    parser.add_argument("--report-only", action="store_true", help="write the reports from finished cells")
    parser.add_argument("--commit", action="store_true", help="git-commit every finished cell and tuning trial")
    parser.add_argument(
        "--results-root", type=Path, default=cells.RESULTS_ROOT, help="where the results folders are (runs: beside it)"
    )
    parser.add_argument("--model", default=cells.MODEL, help="(for a quick trial of the schedule) another model")
    parser.add_argument("--max-steps", type=int, help="(for a quick trial of the schedule) cap every phase's steps")
    parser.add_argument("--datasets", default=",".join(cells.DATASETS), help="original phase: comma-separated")
    parser.add_argument("--methods", default=",".join((*SIX, WUKONG)), help="original phase: comma-separated subset")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.phases.split(",") if n.strip()]
    unknown = sorted(set(names) - set(PHASES) - {"original"})
    if unknown:
        raise SystemExit(f"unknown phase(s) {unknown}; choose from {[*PHASES, 'original']}")
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if sorted(set(args.methods) - set(METHODS)):
        raise SystemExit(f"unknown method(s) {sorted(set(args.methods) - set(METHODS))}; choose from {list(METHODS)}")
    if sorted(set(args.datasets) - set(cells.DATASETS)):
        raise SystemExit(f"unknown data set(s) {sorted(set(args.datasets) - set(cells.DATASETS))}")
    if args.results_root.resolve() != cells.RESULTS_ROOT:  # (a trial elsewhere: its runs beside it)
        cells.RUNS_ROOT = args.results_root.resolve().parent / "runs"
    cells.RESULTS_ROOT = args.results_root.resolve()
    cells.RESULTS = cells.RESULTS_ROOT / "quality"
    cells.MODEL = args.model
    if args.max_steps:
        for n, p in PHASES.items():
            PHASES[n] = dataclasses.replace(
                p, steps=min(p.steps, args.max_steps), tune_steps=min(p.tune_steps, args.max_steps)
            )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("qiskit").setLevel(logging.WARNING)  # the chip row's transpiler logs every pass
    if args.status:
        print(status([n for n in names if n != "original"], args))
        return 0

    from quality_report import write_report  # the sibling file: tables, paired comparisons, plots

    from qpeft.sysinfo import cpu_model

    rank, matched = cells.matched_lora_rank()
    METHODS[MATCHED] = ("lora", {"r": rank, "alpha": 2.0 * rank})  # alpha/r = 2, as LoRA r=8 alpha 16
    args.matched = {"r": rank, **matched}
    machine = {"cpu": cpu_model(), "platform": platform.platform(), "python": sys.version.split()[0]}
    stopped: list[str] = []
    for name in names:
        if name == "original":
            cells.RESULTS.mkdir(parents=True, exist_ok=True)
            if not args.report_only:
                run_original(args, machine)
            write_report(cells.RESULTS, json.loads((cells.RESULTS / "study.json").read_text())["settings"], machine)
            continue
        phase = PHASES[name]
        results = cells.RESULTS_ROOT / phase.results
        if not args.report_only:
            try:
                run_phase(name, phase, args, machine)
            except PhaseStopped as err:
                logger.error("[study] phase %s stopped: %s", name, err)
                stopped.append(name)
        if results.is_dir():
            write_report(results, results_settings(phase.results, args), machine)
            if args.commit:
                cells.commit(f"Quality study: {phase.results} report", results)
    if stopped:
        logger.error("[study] stopped phase(s): %s (see the messages above)", ", ".join(stopped))
        return 4
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
