"""Per-method search over the learning rate (and other named fields): ``qpeft tune`` and
``qpeft compare --tune``.

Every trial is a short :func:`qpeft.train.train` run scored by its loss on a validation split
carved from the training examples only: the examples that are in the training part of
:func:`qpeft.data.run_split` for *every* seed the main runs use, so no example that any main
run holds out is ever trained on or scored by the search. The validation split is a seeded
sample of those examples, and the tuning runs train on the rest.

The search is an Optuna study: ``grid`` runs every listed value (times every value of the
other fields), ``optuna`` samples ``trials`` points with TPE in the log range of the listed
rates. Its journal (``optuna.journal`` in the search directory) records every trial, so the
same call after an interrupt runs only what is not finished; with ``prune``, Optuna's
MedianPruner stops a run whose intermediate validation loss is worse than the median of the
finished runs at the same step. A best learning rate at the edge of the values tried adds a
value one step beyond that edge (at most ``extend`` times) and says so.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from qpeft.train import TrainConfig
from qpeft.tune.search import Search
from qpeft.tune.spec import DEFAULT_LRS, NOT_SEARCHABLE, SEARCHES, TuneSpec, apply_params
from qpeft.tune.split import tuning_examples

__all__ = [
    "DEFAULT_LRS",
    "NOT_SEARCHABLE",
    "SEARCHES",
    "TuneSpec",
    "apply_params",
    "trials_table",
    "tune",
    "tuning_examples",
]

logger = logging.getLogger(__name__)


def tune(
    base: TrainConfig,
    spec: TuneSpec,
    out: str | Path,
    seeds: list[int],
    callbacks: list | None = None,
    on_trial=None,
    trials_dir: str | Path | None = None,
) -> dict:
    """Search ``base.method``'s values; write ``out/tune.json`` and return the same dict.

    ``seeds``: the seeds of the main runs (every one's held-out examples are left out of
    tuning). ``callbacks``: extra ``transformers.TrainerCallback`` objects for every run.
    ``on_trial``: called with each finished trial's dict (e.g. to commit the journal).
    ``trials_dir``: where the tuning runs' directories go (default ``out/trials``).
    Interrupted (Ctrl-C / SIGTERM): returns ``{"interrupted": run directory}``; the same call
    again runs only the trials that did not finish. Raises ``ValueError`` when ``out`` holds a
    search made with other settings, ``ImportError`` without Optuna.
    """
    out = Path(out)
    search = Search(base, spec, out, list(seeds), Path(trials_dir) if trials_dir else out / "trials")
    while True:
        for params, kind in search.pending():
            trial = search.run_trial(params, kind, list(callbacks or []))
            if trial["state"] == "interrupted":
                logger.warning("tune %s: stopped in %s; the same call again resumes", base.method, trial["run"])
                return {"interrupted": trial["run"], "method": base.method}
            if on_trial is not None:
                on_trial(trial)
        nxt = search.edge()
        if nxt is None:
            break
        if len(search.extensions) >= spec.extend:
            logger.warning(
                "tune %s: the best lr %g is still at the %s edge after %d extension(s); widen --tune-lrs",
                base.method,
                nxt["from"],
                nxt["edge"],
                len(search.extensions),
            )
            break
        logger.warning(
            "tune %s: the best lr %g is at the %s edge of the values tried; extending the range to %g",
            base.method,
            nxt["from"],
            nxt["edge"],
            nxt["params"]["lr"],
        )
        search.study.set_user_attr("extensions", [*search.extensions, nxt])
    result = search.result()
    (out / "tune.json").write_text(json.dumps(result, indent=1))
    return result


def trials_table(result: dict) -> list[str]:
    """Markdown lines: every trial of one method's search, its validation loss (or where it
    was pruned), the chosen values in bold, and the extensions of the range."""
    names = ["lr", *result["fields"]]
    lines = [
        "| trial | " + " | ".join(names) + " | validation loss | state |",
        "|---|" + "---|" * len(names) + "---|---|",
    ]
    for t in sorted(result["trials"], key=lambda t: t["params"]["lr"]):
        chosen = t["state"] == "complete" and t["params"] == result["chosen"]
        if t["state"] == "complete":
            loss = f"{t['value']:.4f}" if math.isfinite(t["value"]) else "diverged"
        elif t["state"] == "pruned" and t["intermediate"]:
            last = list(t["intermediate"].items())[-1]
            loss = f"{last[1]:.4f} at step {last[0]}"
        else:
            loss = "–"
        state = t["state"] + (" (chosen)" if chosen else "") + (f", {t['kind']}" if t["kind"] == "extension" else "")
        cells = [f"{t['params'][n]:g}" if isinstance(t["params"][n], float) else str(t["params"][n]) for n in names]
        if chosen:
            cells, loss = [f"**{c}**" for c in cells], f"**{loss}**"
        lines.append(f"| {t['number']} | " + " | ".join(cells) + f" | {loss} | {state} |")
    notes = [
        f"the best lr {e['from']:g} was at the {e['edge']} edge of the values tried: {e['params']['lr']:g} added"
        for e in result["extensions"]
    ]
    if result["at_edge"]:
        notes.append("the best lr is still at the edge of the values tried (extension limit reached): widen the rates")
    return lines + ([""] + [f"- {n}" for n in notes] if notes else [])
