"""Tables, paired comparisons and loss plots of the quality study (``benchmarks/quality.py``),
from the finished cells under ``benchmarks/results/quality/`` (a partial study reports what
is finished and says what is missing)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from quality_sections import budget_lines, capacity_lines, tuning_lines
from quality_stats import fmt, mean_std, metrics, paired

REFERENCE, MATCHED = "lora-r8", "lora-matched"
CHIP, CHIP_OF = "qtha-weights-wukong72", "qtha-weights"  # the emulated-chip row and its exact twin
QTHA, CONTROLS = ("qtha-default", "qtha-weights"), ("qtha-mlp", "qtha-none")
ORDER = [REFERENCE, MATCHED, "qtha-default", "qtha-weights", "qtha-none", "qtha-mlp", "qtha-weights-wukong72"]
ORDER += ["qtha-angle", "qtha-mlp-angle", "qtha-deep", "qtha-mlp-deep"]  # the capacity check


def load_cells(results: Path) -> dict:
    """The finished cells under ``results`` by data set and kind:
    {dataset: {"main": {method: {seed: record}}, "grid": {method: {lr: record}},
    "lrcheck": {method: {lr: {seed: record}}}}}"""
    cells: dict = {}
    for path in sorted(results.glob("*/**/cell.json")):
        record = json.loads(path.read_text())
        c = record["cell"]
        bucket = cells.setdefault(c["dataset"], {"main": {}, "grid": {}, "lrcheck": {}})
        if c["kind"] == "grid":
            bucket["grid"].setdefault(c["method"], {})[c["lr"]] = record
        elif c["kind"] == "lrcheck":
            bucket["lrcheck"].setdefault(c["method"], {}).setdefault(c["lr"], {})[c["seed"]] = record
        else:
            bucket["main"].setdefault(c["method"], {})[c["seed"]] = record

    def rank(method: str) -> tuple[int, str]:
        return (ORDER.index(method) if method in ORDER else len(ORDER), method)

    for bucket in cells.values():
        for kind in ("main", "grid", "lrcheck"):
            bucket[kind] = {m: bucket[kind][m] for m in sorted(bucket[kind], key=rank)}
    return cells


def dataset_section(name: str, data: dict, results: Path) -> tuple[list[str], dict]:
    main, grid = data["main"], data["grid"]
    lines = [f"## {name}", ""]
    summary: dict = {"methods": {}, "paired": {}, "grid": {}}
    if grid:
        lrs = sorted({lr for g in grid.values() for lr in g})
        lines += ["Learning-rate grid (validation loss on the tuning run's own held-out split; chosen in bold):", ""]
        lines += ["| method | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|---" * (len(lrs) + 1) + "|"]
        for method, points in grid.items():
            best = min(points, key=lambda lr: points[lr]["validation_loss"])
            row = []
            for lr in lrs:
                value = points.get(lr, {}).get("validation_loss")
                text = "–" if value is None else f"{value:.4f}"
                row.append(f"**{text}**" if lr == best and len(points) == len(lrs) else text)
            lines.append(f"| {method} | " + " | ".join(row) + " |")
            summary["grid"][method] = {str(lr): p["validation_loss"] for lr, p in points.items()}
        lines.append("")
    if (results / name).is_dir():
        lines += tuning_lines(results, name, summary)
    if not main:
        lines += ["No main cell finished yet.", ""]
        return lines, summary
    lines += comparison_lines(main, summary)
    lines += lr_check_lines(main, data.get("lrcheck", {}), summary)
    lines += capacity_lines(main, summary)
    original = results.parent / "quality"
    if results.name != "quality" and original.is_dir():  # the same data set in the original study
        other = load_cells(original).get(name, {}).get("main", {})
        if other:
            steps = {r["cell"]["steps"] for runs in main.values() for r in runs.values()}
            before = {r["cell"]["steps"] for runs in other.values() for r in runs.values()}
            label = f"{'/'.join(map(str, sorted(steps)))} steps, tuned on {name}"
            study = original / "study.json"
            source = json.loads(study.read_text())["settings"].get("tune_dataset") if study.is_file() else None
            rates = f"rates tuned on {source}" if source else "original"
            lines += budget_lines(main, other, label, f"{'/'.join(map(str, sorted(before)))} steps, {rates}", summary)
    plot = results / f"{name}-loss.png"
    plot_curves(main, plot, name)
    lines += [f"![{name} training loss]({plot.name})", ""]
    return lines, summary


def comparison_lines(main: dict, summary: dict) -> list[str]:
    """The per-method table (mean +- std over seeds) and the paired comparisons against
    ``lora-r8`` and ``lora-matched``; fills ``summary["methods"]`` and ``summary["paired"]``."""
    lines: list[str] = []
    ref_params = next(iter(main.get(REFERENCE, {}).values()), {}).get("parameters", {}).get("trainable")
    lines += [
        "| method | lr | seeds | trainable params | ratio to LoRA r=8 | final train loss | held-out loss | "
        "accuracy | s/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, runs in main.items():
        first = next(iter(runs.values()))
        params = first["parameters"]["trainable"]
        stats = {k: mean_std([metrics(r)[k] for r in runs.values()]) for k in metrics(first)}
        summary["methods"][method] = {
            "lr": first["cell"]["lr"],
            "seeds": sorted(runs),
            "trainable": params,
            **{k: v for k, v in stats.items()},
        }
        ratio = f"{params / ref_params:.3f}" if ref_params else "n/a"
        scored = sum(metrics(r)["accuracy"] is not None for r in runs.values())
        accuracy = fmt(stats["accuracy"], 3)
        if 0 < scored < len(runs):  # (GSM8K: generated for seed 0 only) a mean of fewer seeds, no spread
            accuracy = f"{stats['accuracy'][0]:.3f} ({scored} seed{'s' * (scored > 1)})"
        lines.append(
            f"| {method} | {first['cell']['lr']:g} | {len(runs)} | {params:,} | {ratio} | "
            f"{fmt(stats['final_train_loss'])} | {fmt(stats['heldout_loss'])} | "
            f"{accuracy} | {fmt(stats['seconds_per_step'], 2)} |"
        )
    lines.append("")
    references = [(REFERENCE, None), (MATCHED, None)]
    # the quantum-branch question: QTHA against the same MPO with a same-size classical branch, and with none
    references += [(control, set(QTHA)) for control in CONTROLS]
    if CHIP in main:  # the chip row against the same method simulated exactly: what the emulated chip costs
        references.append((CHIP_OF, {CHIP}))
    for reference, only in references:
        if reference not in main:
            continue
        lines += [
            f"Paired per seed against `{reference}` (method minus reference; relative change of the means; "
            f"t over seeds, 95 % two-sided; 'beyond spread' = |mean difference| > the larger seed-to-seed std):",
            "",
            "| method | metric | seeds | mean diff | relative | per-seed diffs | t | significant | beyond spread |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for method, runs in main.items():
            if method == reference or (only is not None and method not in only):
                continue
            for key in ("final_train_loss", "heldout_loss", "accuracy"):
                p = paired(runs, main[reference], key)
                if p is None:
                    continue
                summary["paired"].setdefault(reference, {}).setdefault(method, {})[key] = p
                rel = "n/a" if p["relative"] is None else f"{100 * p['relative']:+.1f} %"
                lines.append(
                    f"| {method} | {key} | {p['seeds']} | {p['mean_diff']:+.4f} | {rel} | "
                    f"{', '.join(f'{d:+.4f}' for d in p['diffs'])} | "
                    f"{p.get('t', float('nan')):.2f} | {p.get('significant_95', 'n/a')} | "
                    f"{p.get('exceeds_seed_spread', 'n/a')} |"
                )
        lines.append("")
    return lines


def lr_check_lines(main: dict, check: dict, summary: dict) -> list[str]:
    """Seed 0 of each method at its chosen rate (the main cell) beside the same run at the other
    chosen rates: does the ranking depend on a rate tuned on another data set?"""
    if not check:
        return []
    lines = [
        "Learning-rate check, seed 0: each method at its chosen rate (the main cell) and at the other "
        "rates the methods chose (scored on the seed's held-out examples, so it informs, it chooses nothing):",
        "",
        "| method | lr | held-out loss | accuracy | final train loss |",
        "|---|---|---|---|---|",
    ]
    summary["lr_check"] = {}
    for method, points in check.items():
        runs = {lr: seeds[0] for lr, seeds in points.items() if 0 in seeds}
        seed0 = main.get(method, {}).get(0)
        if seed0 is not None:
            runs[seed0["cell"]["lr"]] = seed0
        for lr in sorted(runs):
            m = metrics(runs[lr])
            chosen = seed0 is not None and lr == seed0["cell"]["lr"]
            acc = "n/a" if m["accuracy"] is None else f"{m['accuracy']:.3f}"
            lines.append(
                f"| {method} | {lr:g}{' (chosen)' if chosen else ''} | {m['heldout_loss']:.4f} | {acc} | "
                f"{m['final_train_loss']:.4f} |"
            )
            summary["lr_check"].setdefault(method, {})[str(lr)] = {**m, "chosen": chosen}
    lines.append("")
    for lr, at_lr in sorted(equal_rate_runs(main, check).items()):
        lines += [
            f"Every method at one shared rate, lr {lr:g} (main cells where it is the chosen rate, rate-check cells "
            "otherwise; the check ran all seeds at this rate because seed 0 did better there):",
            "",
        ]
        shared = {"methods": {}, "paired": {}}
        lines += comparison_lines(at_lr, shared)
        summary.setdefault("equal_rate", {})[str(lr)] = shared
    return lines


def equal_rate_runs(main: dict, check: dict) -> dict[float, dict]:
    """lr -> {method: {seed: record}} for every rate at which some method's check ran more than
    seed 0: each method with as many seeds at that rate as its main cells have (main cells at
    their chosen rate, check cells at another)."""
    out = {}
    for lr in sorted({lr for points in check.values() for lr, seeds in points.items() if len(seeds) > 1}):
        at_lr = {}
        for method, runs in main.items():
            first = next(iter(runs.values()))
            seeds = runs if first["cell"]["lr"] == lr else check.get(method, {}).get(lr, {})
            if seeds and set(seeds) >= set(runs):
                at_lr[method] = {seed: seeds[seed] for seed in sorted(runs)}
        if len(at_lr) > 1:
            out[lr] = at_lr
    return out


def plot_curves(main: dict, path: Path, title: str, window: int = 5) -> None:
    """Mean training loss over seeds (moving average of ``window`` steps) with a +- std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for k, (method, runs) in enumerate(main.items()):
        curves = [dict(r["losses"]) for r in runs.values()]
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        if not steps:
            continue
        smooth = []
        for c in curves:
            values = [c[s] for s in steps]
            smooth.append([statistics.mean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))])
        mean = [statistics.mean(col) for col in zip(*smooth)]
        std = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in zip(*smooth)]
        ax.plot(steps, mean, color=f"C{k}", label=f"{method} ({len(curves)} seeds)")
        ax.fill_between(
            steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=f"C{k}", alpha=0.15
        )
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss ({window}-step moving average)")
    ax.set_title(f"{title}: mean over seeds, band = +- 1 std")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: Path, settings: dict, machine: dict) -> Path:
    """Write ``summary.md``, ``summary.json`` and the loss plots of the finished cells in
    ``results`` (one study folder); returns the path of summary.md."""
    cells = load_cells(results)
    if "phases" in settings:  # a tuned study: every rate chosen per method and data set by qpeft.tune
        phases = settings["phases"].values()
        checks = sorted({m for p in phases for m in p["check"]})
        tuning = (
            f"rates tuned per method and data set by `qpeft.tune` (grid {settings['lr_grid']}, extended at an edge; "
            f"{settings['tune_steps']}-step runs with Optuna's MedianPruner; {settings['tune']['val_examples']} "
            f"validation examples carved from the training examples; seed {settings['tune']['seed']})"
        )
        if checks and settings["tune_steps"] < settings["steps"]:
            tuning += f", checked at full length for {', '.join(checks)}"
    else:
        tuning = f"lr grid {settings['lr_grid']} of {settings['tune_steps']}-step runs"
    lines = [
        "# Quality study: results so far",
        "",
        "Written by `python benchmarks/quality.py` from the finished cells in this directory; "
        "see RESULTS.md at the top of the repository for the discussion.",
        "",
        f"Machine: {machine['cpu']} ({machine['platform']}, Python {machine['python']}).  ",
        f"Settings: model `{settings['model']}`, {settings['steps']} steps per cell; {tuning}; "
        f"batch {settings['common']['batch_size']}, seeds {settings['seeds']}, "
        f"matched LoRA r = {settings['matched_lora']['r']}.",
        "",
    ]
    summary = {"settings": settings, "machine": machine, "datasets": {}}
    tuned_only = [d.name for d in sorted(results.iterdir()) if any(d.glob("tune-*")) and d.name not in cells]
    for name in [*cells, *tuned_only]:  # (a data set whose tuning finished before any main cell)
        data = cells.get(name, {"main": {}, "grid": {}, "lrcheck": {}})
        section, summary["datasets"][name] = dataset_section(name, data, results)
        lines += section
    path = results / "summary.md"
    path.write_text("\n".join(lines))
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    return path
