"""The quality report's sections for the tuned phases (``quality_report.py`` puts them in each
data set's section): every method's tuning trace and chosen rate, the full-length check of a
short tuning, the same data set at the original study's budget and rates beside this one, and
the capacity check of the quantum branch."""

from __future__ import annotations

import json
import math
from pathlib import Path

from quality_stats import fmt, mean_std, metrics, paired

#: the capacity check: each circuit and the classical MLP branch of its parameter count
CAPACITY_PAIRS = (("qtha-default", "qtha-mlp"), ("qtha-angle", "qtha-mlp-angle"), ("qtha-deep", "qtha-mlp-deep"))
METRICS = ("heldout_loss", "accuracy", "final_train_loss")


def searches(folder: Path) -> dict[str, dict | None]:
    """{method: its finished search (tune.json), or None while it runs} in ``folder``."""
    out = {}
    for method in sorted(p for p in folder.iterdir() if p.is_dir()):
        done = method / "tune.json"
        out[method.name] = json.loads(done.read_text()) if done.is_file() else None
    return out


def _trial_text(trial: dict) -> str:
    if trial["state"] == "complete":
        return f"{trial['value']:.4f}" if math.isfinite(trial["value"]) else "diverged"
    if trial["state"] == "pruned" and trial["intermediate"]:
        step, value = list(trial["intermediate"].items())[-1]
        return f"pruned at {step}: {value:.4f}"
    return "interrupted"


def tuning_lines(results: Path, dataset: str, summary: dict) -> list[str]:
    """Per tuning folder (``tune-N``: N-step runs; ``tune-check-N``: the full-length check):
    each method's validation loss at every rate tried, the chosen rate in bold, extensions."""
    lines: list[str] = []
    folders = sorted((results / dataset).glob("tune-*"), key=lambda p: ("check" in p.name, p.name))
    chosen_short: dict[str, float] = {}
    for folder in folders:
        found = searches(folder)
        if not found:
            continue
        check = folder.name.startswith("tune-check-")
        steps = folder.name.rsplit("-", 1)[1]
        finished = {m: r for m, r in found.items() if r is not None}
        lrs = sorted({t["params"]["lr"] for r in finished.values() for t in r["trials"]})
        if check:
            lines += [
                f"Full-length check of the short tuning: the same search with {steps}-step runs at the chosen rate "
                "and its grid neighbours (does the longer budget choose the same rate?):",
                "",
            ]
        else:
            first = next(iter(finished.values()), None)
            val = f"{first['val_examples']} validation examples" if first else "validation examples"
            lines += [
                f"Learning rates tuned per method (`qpeft.tune`, grid, {steps}-step runs, seed "
                f"{first['seed'] if first else '?'}): loss on {val} carved from the training examples every seed "
                "trains on (no seed's held-out example is used); pruned = stopped by the MedianPruner at the step "
                "shown; chosen rate in bold:",
                "",
            ]
        head = "| method | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |"
        lines += [head + (" agrees |" if check else ""), "|---" * (len(lrs) + 2 + check) + "|"]
        for method, result in found.items():
            if result is None:
                lines.append(
                    f"| {method} | " + " | ".join("…" for _ in lrs) + " | (running) |" + (" |" if check else "")
                )
                continue
            by_lr = {t["params"]["lr"]: t for t in result["trials"] if t["state"] != "interrupted"}
            best = result["chosen"]["lr"]
            cells = []
            for lr in lrs:
                text = _trial_text(by_lr[lr]) if lr in by_lr else "–"
                cells.append(f"**{text}**" if lr == best else text)
            row = f"| {method} | " + " | ".join(cells) + f" | {best:g} |"
            record = {
                "chosen": best,
                "best_value": result["best_value"],
                "trials": {str(lr): by_lr[lr].get("value") for lr in by_lr},
                "pruned": {str(lr): by_lr[lr]["pruned_at"] for lr in by_lr if by_lr[lr]["state"] == "pruned"},
                "extensions": result["extensions"],
                "at_edge": result["at_edge"],
                "steps": result["steps"],
            }
            if check:
                agrees = method in chosen_short and math.isclose(best, chosen_short[method])
                row += (
                    f" {'yes' if agrees else 'NO'} ({chosen_short.get(method, float('nan')):g} at the short budget) |"
                )
                record["agrees"] = agrees
            else:
                chosen_short[method] = best
            lines.append(row)
            summary.setdefault("tuning", {}).setdefault(folder.name, {})[method] = record
        notes = [
            f"- {method}: the best rate {e['from']:g} was at the {e['edge']} edge; {e['params']['lr']:g} was added"
            for method, result in finished.items()
            for e in result["extensions"]
        ]
        notes += [
            f"- {method}: the best rate is still at the edge after {len(result['extensions'])} extension(s)"
            for method, result in finished.items()
            if result["at_edge"] and not check
        ]
        lines += ["", *notes, *([""] if notes else [])]
    return lines


def budget_lines(main: dict, other: dict, label: str, other_label: str, summary: dict) -> list[str]:
    """This data set's main cells beside another run of it (``other``: the original study, at
    its budget and rates): per metric, each method's mean +- std, its lr and its relative change
    against LoRA r = 8 under each, and how the ranking moves."""
    methods = [m for m in main if m in other]
    if not methods:
        return []
    lines = [f"The same data set in the original study ({other_label}) beside this one ({label}):", ""]
    out = summary.setdefault("budgets", {"this": label, "other": other_label, "methods": {}})
    for key in METRICS:
        rows = []
        for method in methods:
            a = mean_std([metrics(r)[key] for r in other[method].values()])
            b = mean_std([metrics(r)[key] for r in main[method].values()])
            if a is None or b is None:
                continue
            rows.append((method, a, b))
        if not rows:
            continue
        ref = next(((a, b) for method, a, b in rows if method == "lora-r8"), None)
        rank_a = {m: k for k, (m, _, _) in enumerate(sorted(rows, key=lambda r: _order(key, r[1][0])), 1)}
        rank_b = {m: k for k, (m, _, _) in enumerate(sorted(rows, key=lambda r: _order(key, r[2][0])), 1)}
        lines += [
            f"{key} (mean +- std over seeds; 'vs LoRA r=8': relative change of the means; rank 1 = best):",
            "",
            f"| method | lr, {other_label} | {other_label} | vs LoRA r=8 | rank | lr, {label} | {label} | vs LoRA r=8 "
            "| rank |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for method, a, b in rows:
            rel_a = _relative(a[0], ref[0][0]) if ref else "n/a"
            rel_b = _relative(b[0], ref[1][0]) if ref else "n/a"
            lr_a = next(iter(other[method].values()))["cell"]["lr"]
            lr_b = next(iter(main[method].values()))["cell"]["lr"]
            digits = 3 if key == "accuracy" else 4
            lines.append(
                f"| {method} | {lr_a:g} | {fmt(a, digits)} | {rel_a} | {rank_a[method]} | "
                f"{lr_b:g} | {fmt(b, digits)} | {rel_b} | {rank_b[method]} |"
            )
            out["methods"].setdefault(method, {})[key] = {
                "other": {"lr": lr_a, "mean": a[0], "std": a[1], "rank": rank_a[method]},
                "this": {"lr": lr_b, "mean": b[0], "std": b[1], "rank": rank_b[method]},
            }
        lines.append("")
    return lines


def _order(key: str, value: float) -> float:
    return -value if key == "accuracy" else value  # rank 1: lowest loss, highest accuracy


def _relative(value: float, reference: float) -> str:
    return f"{100 * (value - reference) / abs(reference):+.1f} %" if reference else "n/a"


def capacity_lines(main: dict, summary: dict) -> list[str]:
    """Each circuit against the classical MLP branch of its own parameter count, paired per seed
    (does a larger circuit close the gap or widen it?), and the larger circuits against the
    default one."""
    pairs = [(c, m) for c, m in CAPACITY_PAIRS if c in main and m in main]
    if len(pairs) < 2:
        return []
    lines = [
        "Capacity check of the quantum branch: each circuit minus the MLP branch of its size (same MPO, same "
        "trainable-parameter count), paired per seed; a negative loss difference favours the circuit:",
        "",
        "| circuit | params | MLP control | params | metric | seeds | mean diff | per-seed diffs | t | significant "
        "| beyond spread |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    out = summary.setdefault("capacity", {})
    for circuit, mlp in pairs:
        for key in METRICS:
            p = paired(main[circuit], main[mlp], key)
            if p is None:
                continue
            out.setdefault(f"{circuit} - {mlp}", {})[key] = p
            lines.append(
                f"| {circuit} | {_params(main[circuit])} | {mlp} | {_params(main[mlp])} | {key} | {p['seeds']} | "
                f"{p['mean_diff']:+.4f} | {', '.join(f'{d:+.4f}' for d in p['diffs'])} | "
                f"{p.get('t', float('nan')):.2f} | {p.get('significant_95', 'n/a')} | "
                f"{p.get('exceeds_seed_spread', 'n/a')} |"
            )
    lines += ["", "The larger circuits against `qtha-default` (same layout as above):", ""]
    lines += [
        "| circuit | metric | seeds | mean diff | per-seed diffs | t | significant |",
        "|---|---|---|---|---|---|---|",
    ]
    for circuit, _ in pairs[1:]:
        for key in METRICS:
            p = paired(main[circuit], main["qtha-default"], key) if "qtha-default" in main else None
            if p is None:
                continue
            out.setdefault(f"{circuit} - qtha-default", {})[key] = p
            lines.append(
                f"| {circuit} | {key} | {p['seeds']} | {p['mean_diff']:+.4f} | "
                f"{', '.join(f'{d:+.4f}' for d in p['diffs'])} | {p.get('t', float('nan')):.2f} | "
                f"{p.get('significant_95', 'n/a')} |"
            )
    return lines + [""]


def _params(runs: dict) -> str:
    return f"{next(iter(runs.values()))['parameters']['trainable']:,}"
