"""``qpeft compare``: train several methods x seeds on the same data, then write one
report (``report.md``: a table of mean +- std over seeds) and a loss-curve plot."""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from qpeft.rundir import differences
from qpeft.sysinfo import describe
from qpeft.train import TrainConfig, latest_checkpoint, train
from qpeft.tune import TuneSpec, apply_params, trials_table, tune

logger = logging.getLogger(__name__)


def _same_run(recorded: dict | None, config: TrainConfig) -> bool:
    """Whether a recorded config is ``config`` (the fields that do not change what a run computes,
    :data:`qpeft.rundir.NOT_SETTINGS`, aside)."""
    return isinstance(recorded, dict) and not differences(recorded, dataclasses.asdict(config))


def _run(config: TrainConfig, callbacks: list | None = None) -> dict:
    """Train; reuse a finished run of the identical config in the same directory, or resume
    its newest checkpoint when the identical config saved it (an interrupted comparison)."""
    out = Path(config.out)
    results = out / "results.json"
    if results.is_file():
        previous = json.loads(results.read_text())
        if previous.get("finished") and _same_run(previous.get("config"), config):
            return previous
    checkpoint = latest_checkpoint(out)
    saved = checkpoint / "train_config.json" if checkpoint is not None else None
    resume = saved is not None and saved.is_file() and _same_run(json.loads(saved.read_text()), config)
    if resume:
        logger.info("qpeft compare: resuming %s from %s", out, checkpoint.name)
    return train(dataclasses.replace(config, resume=resume), callbacks)


def _known_fields(method: str) -> set[str]:
    """The adapter config fields of ``method`` (a --method shortcut or a preset name)."""
    from qpeft.adapters.presets import PRESETS
    from qpeft.adapters.registry import config_class
    from qpeft.train import METHOD_PRESETS

    name = METHOD_PRESETS.get(method, method)
    if name not in PRESETS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_PRESETS)} or a preset name")
    return {f.name for f in dataclasses.fields(config_class(PRESETS[name][0]))}


def _fields_of(method: str, overrides: dict) -> dict:
    """The adapter overrides that ``method`` has (e.g. bond_dim applies to mpo and qtha, not lora)."""
    known = _known_fields(method)
    dropped = sorted(set(overrides) - known)
    if dropped:
        logger.info("qpeft compare: %s has no field(s) %s; not applied to it", method, dropped)
    return {k: v for k, v in overrides.items() if k in known}


def _spec_of(method: str, spec: TuneSpec) -> TuneSpec:
    """``spec`` without the searched adapter fields that ``method`` does not have."""
    known = _known_fields(method)
    fields = {k: v for k, v in spec.fields.items() if not k.startswith("adapter.") or k[8:] in known}
    if fields != spec.fields:
        dropped = sorted(set(spec.fields) - set(fields))
        logger.info("qpeft compare: %s has no field(s) %s; not searched for it", method, dropped)
    return dataclasses.replace(spec, fields=fields)


def _mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} +- {statistics.stdev(values):.2g}"


def table(results: dict[str, list[dict]]) -> str:
    """The Markdown table of a comparison: per method, the learning rate its runs used, its
    trainable parameters and mean +- std over seeds of each metric."""
    head = (
        "| method | lr | trainable params | ratio to LoRA | final train loss | eval loss | accuracy | s/step |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for method, runs in results.items():
        p = runs[0]["parameters"]
        accuracy = [r["eval"].get("accuracy") for r in runs]
        rows.append(
            f"| {method} | {runs[0]['config']['lr']:g} | {p['trainable']:,} | "
            f"{p['trainable'] / p['lora_equivalent']:.3f} | "
            f"{_mean_std([r['final_train_loss'] for r in runs])} | "
            f"{_mean_std([r['eval']['eval_loss'] for r in runs])} | "
            f"{_mean_std(accuracy) if any(a is not None for a in accuracy) else 'n/a'} | "
            f"{_mean_std([r['seconds_per_step'] for r in runs])} |"
        )
    return "\n".join(rows)


def machine_lines(results: dict[str, list[dict]]) -> list[str]:
    """The report's machine line(s), from what each run recorded (its ``machine``): one line when
    every run trained on the same machine; else one line per machine with its runs, since a run
    reused from an earlier comparison may have trained elsewhere and s/step then compares machines."""
    unrecorded = "not recorded (a run from a qpeft that did not record its machine)"
    where: dict[str, list[str]] = {}
    for method, runs in results.items():
        for run in runs:
            described = describe(run["machine"]) if run.get("machine") else unrecorded
            where.setdefault(described, []).append(f"{method} seed {run['config']['seed']}")
    date = time.strftime("%Y-%m-%d %H:%M")
    if len(where) == 1:
        return [f"Machine: {next(iter(where))}; report written {date}"]
    lines = [
        f"Machines: the runs trained on {len(where)} different machines (their s/step compare the machines "
        f"as well as the methods); report written {date}:",
        "",
    ]
    return lines + [f"- {described}: {', '.join(runs)}" for described, runs in where.items()]


def tuning_lines(tuned: dict[str, dict]) -> list[str]:
    """The report's section on per-method tuning: every method's trials and chosen values."""
    if not tuned:
        return []
    first = next(iter(tuned.values()))
    lines = [
        "## Learning rates, tuned per method",
        "",
        f"{first['search']} search, {first['steps']}-step runs (seed {first['seed']}) scored by the loss on "
        f"{first['val_examples']} validation examples carved from the training examples "
        f"({first['train_examples']} left to train on; no example any seed holds out is used). "
        "Pruned: stopped early, worse than the median of finished runs at the same step.",
        "",
    ]
    for method, result in tuned.items():
        chosen = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in result["chosen"].items())
        lines += [f"### {method}: {chosen}", "", *trials_table(result), ""]
    return lines


def plot_losses(results: dict[str, list[dict]], path: Path) -> None:
    """Draw every run's training loss against its step (one colour per method, one line per
    seed) and save the figure as a PNG.

    Args:
        results: {method: [run summary with ``"losses"``: [(step, loss), ...]], ...}.
        path: the PNG to write (overwritten).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, runs in results.items():
        for k, run in enumerate(runs):
            steps, losses = zip(*run["losses"]) if run["losses"] else ((), ())
            ax.plot(
                steps,
                losses,
                alpha=0.35 if len(runs) > 1 else 0.9,
                color=f"C{list(results).index(method)}",
                label=method if k == 0 else None,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss (each line one seed)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(
    base: TrainConfig,
    methods: list[str],
    seeds: list[int],
    out: Path,
    callbacks: list | None = None,
    tune_spec: TuneSpec | None = None,
) -> dict:
    """Train every method x seed (one run directory each under ``out``), then write the report.

    ``tune_spec``: first search each method's learning rate (and the spec's other fields) with
    :func:`qpeft.tune.tune` in ``out/tune/METHOD``, then run its main runs at the chosen values;
    without it every method uses ``base.lr`` (the report says the rate is shared).
    Ctrl-C / SIGTERM stops the running cell with a resumable checkpoint and the comparison with
    it: the result then has ``interrupted`` (that cell's directory) and no report. The same call
    again reuses the finished cells and resumes the interrupted one. ``callbacks``: extra
    ``transformers.TrainerCallback`` objects for every run.
    """
    if not methods or not seeds:
        raise ValueError("compare needs at least one method (--methods) and one seed (--seeds)")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    tuned: dict[str, dict] = {}
    for method in methods:
        method_base = dataclasses.replace(base, method=method, adapter=_fields_of(method, base.adapter))
        if tune_spec is not None:
            search = tune(method_base, _spec_of(method, tune_spec), out / "tune" / method, seeds, callbacks)
            if "interrupted" in search:
                return {"interrupted": Path(search["interrupted"]), "results": results, "tuned": tuned}
            tuned[method] = search
            method_base = apply_params(method_base, search["chosen"])
        for seed in seeds:
            config = dataclasses.replace(method_base, seed=seed, out=str(out / f"{method}-seed{seed}"))
            summary = _run(config, callbacks)
            if not summary["finished"]:  # the caller says so (the command line: one line)
                return {"interrupted": Path(config.out), "results": results}
            results.setdefault(method, []).append(summary)
    text = table(results)
    plot = out / "loss.png"
    plot_losses(results, plot)
    rate = (
        "lr tuned per method (the lr column; see below)"
        if tuned
        else f"lr {base.lr} shared by every method (--lr; `--tune` searches one per method)"
    )
    lines = [
        "# qpeft compare",
        "",
        f"Model `{base.model}`, data `{base.data}`, {base.steps} steps, batch {base.batch_size} x "
        f"{base.grad_accum}, {rate}, max length {base.max_length}; seeds {seeds}.  ",
        f"Command: `qpeft {' '.join(sys.argv[1:]) if sys.argv[1:] else 'compare'}`  ",
        *machine_lines(results),
        "",
        "Final train loss = mean of the last 10 % of logged steps; eval loss and accuracy on the held-out "
        "split (same for every method); mean +- std over seeds.",
        "",
        text,
        "",
        *tuning_lines(tuned),
        "![training loss](loss.png)",
        "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    (out / "compare.json").write_text(
        json.dumps(
            {
                m: [{**{k: r[k] for k in r if k != "config"}, "lr": r["config"]["lr"]} for r in runs]
                for m, runs in results.items()
            },
            indent=2,
        )
    )
    if tuned:
        (out / "tune.json").write_text(json.dumps(tuned, indent=1))
    return {"table": text, "report": report, "plot": plot, "results": results, "tuned": tuned}
