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

import dataclasses
import itertools
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

from qpeft.adapters.config import doc
from qpeft.data import Example, example_key, run_split
from qpeft.train import TrainConfig, train

logger = logging.getLogger(__name__)

SEARCHES = ("grid", "optuna")
DEFAULT_LRS = (5e-4, 2e-3, 8e-3, 3.2e-2)
#: TrainConfig fields a search may not vary: they define the run, its data or its bookkeeping
NOT_SEARCHABLE = {
    "lr",
    "steps",
    "seed",
    "out",
    "model",
    "data",
    "method",
    "resume",
    "progress",
    "max_examples",
    "val_fraction",
    "eval_examples",
    "eval_steps",
    "save_steps",
}
#: what a finished search's settings do not depend on (more trials or extensions may follow)
_NOT_SETTINGS = ("trials", "extend", "prune")


@dataclass
class TuneSpec:
    """How each method's values are searched; the ``--tune-*`` flags are these fields."""

    search: str = doc(
        "grid",
        "grid: every --tune-lrs value (times every --tune-field value); optuna: TPE samples --tune-trials "
        "points in the log range of --tune-lrs",
    )
    lrs: list = doc(list(DEFAULT_LRS), "learning rates: the grid, or the ends of optuna's log-uniform range")
    fields: dict = doc(
        {}, "other fields searched with lr: a TrainConfig field (weight_decay) or adapter.NAME -> list of values"
    )
    trials: int = doc(8, "optuna: sampled trials per method (the grid runs every point)")
    steps: int | None = doc(None, "optimizer steps of each tuning run (default: the main runs' steps)")
    val_examples: int = doc(64, "validation examples carved from the training examples (never the held-out ones)")
    seed: int | None = doc(None, "seed of the tuning runs and their validation split (default: the first main seed)")
    extend: int = doc(2, "a best lr at the edge of the values tried adds one a step beyond it, at most this often")
    lr_step: float | None = doc(None, "factor of one extension step (default: the rates' spacing, 4 for the default)")
    prune: bool = doc(True, "stop a run whose validation loss is worse than the finished runs' median (MedianPruner)")
    reports: int = doc(4, "validation evaluations per tuning run: the points where a run can be pruned")

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise ValueError(f"`search` must be one of {SEARCHES}, got {self.search!r}")
        lrs = list(self.lrs)
        if len(lrs) < 2 or any(isinstance(v, bool) or not isinstance(v, int | float) or v <= 0 for v in lrs):
            raise ValueError(f"`lrs` must be two or more positive learning rates (e.g. 5e-4,2e-3,8e-3), got {lrs!r}")
        self.lrs = sorted(float(v) for v in lrs)
        if len(set(self.lrs)) < len(self.lrs):
            raise ValueError(f"`lrs` has a repeated value: {self.lrs}")
        for name in ("trials", "val_examples", "reports"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        steps = self.steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
            raise ValueError(f"`steps` must be a positive integer or None (the main runs' steps), got {self.steps!r}")
        if isinstance(self.extend, bool) or not isinstance(self.extend, int) or self.extend < 0:
            raise ValueError(f"`extend` must be a non-negative integer (0: never extend), got {self.extend!r}")
        if self.lr_step is not None and not (isinstance(self.lr_step, int | float) and self.lr_step > 1):
            raise ValueError(f"`lr_step` must be a factor > 1 (e.g. 4), got {self.lr_step!r}")
        for name, values in self.fields.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"tuned field {name!r} needs a non-empty list of values, got {values!r}")
            if name.startswith("adapter."):
                continue
            if name in NOT_SEARCHABLE or name not in {f.name for f in dataclasses.fields(TrainConfig)}:
                raise ValueError(
                    f"cannot search field {name!r}: name a TrainConfig field other than {sorted(NOT_SEARCHABLE)} "
                    "(lr has its own --tune-lrs) or an adapter field as adapter.NAME"
                )

    @property
    def step(self) -> float:
        """The factor of one extension step beyond an edge."""
        if self.lr_step is not None:
            return float(self.lr_step)
        return (self.lrs[-1] / self.lrs[0]) ** (1 / (len(self.lrs) - 1))


def tuning_examples(
    config: TrainConfig, seeds: list[int], val_examples: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """(tuning-run training examples, validation examples) for runs of ``config`` with ``seeds``.

    Both come from the examples in the training part of ``run_split`` for every seed in
    ``seeds``; ``val_examples`` of them (at most a quarter) form the validation split, drawn
    with ``seed``. Validation examples lose their reference answers (they are scored by loss).
    Raises ``ValueError`` when too few examples are left to split.
    """
    if not seeds:
        raise ValueError("tuning needs the seeds of the main runs (their held-out examples are left out)")
    parts = [run_split(config.data, s, config.val_fraction, config.max_examples)[0] for s in seeds]
    common = set.intersection(*({example_key(e) for e in part} for part in parts))
    pool = [e for e in parts[0] if example_key(e) in common]
    n_val = min(val_examples, len(pool) // 4)
    if n_val < 1:
        raise ValueError(
            f"data {config.data!r}: {len(pool)} example(s) are in the training part of every seed {seeds}; "
            "tuning needs at least 4 (use more data or fewer seeds)"
        )
    picked = set(random.Random(f"qpeft-tune-{seed}").sample(range(len(pool)), n_val))
    train_part = [e for i, e in enumerate(pool) if i not in picked]
    seen = {example_key(e) for e in train_part}
    val = [
        dataclasses.replace(pool[i], answer=None)
        for i in sorted(picked)
        if example_key(pool[i]) not in seen  # a duplicate of a tuning-run example scores nothing
    ]
    if not val:
        raise ValueError(f"data {config.data!r}: every validation example duplicates a training example")
    return train_part, val


def apply_params(config: TrainConfig, params: dict) -> TrainConfig:
    """``config`` with searched values set: ``lr``, TrainConfig fields, ``adapter.NAME`` fields."""
    adapter = dict(config.adapter)
    fields = {}
    for name, value in params.items():
        if name.startswith("adapter."):
            adapter[name.removeprefix("adapter.")] = value
        else:
            fields[name] = value
    return dataclasses.replace(config, adapter=adapter, **fields)


def _optuna():
    try:
        import optuna
    except ImportError as err:
        raise ImportError("the tuner needs Optuna: pip install 'qpeft[tune]'") from err
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _finite(value) -> float:
    """A loss as Optuna can rank it: a diverged run (NaN or inf) is worse than any other."""
    return float(value) if value is not None and math.isfinite(value) else math.inf


def _reporter(trial):
    """The callback that reports each intermediate validation loss to ``trial`` and stops the
    run when Optuna's pruner says so (``pruned`` then holds the step)."""
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        pruned: int | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = False  # the final score is train()'s own evaluation

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            trial.report(_finite((metrics or {}).get("eval_loss")), state.global_step)
            if trial.should_prune():
                self.pruned = state.global_step
                control.should_training_stop = True

    return Report()


def _settings(base: TrainConfig, spec: TuneSpec, seeds: list[int], steps: int, seed: int) -> dict:
    """What a search's trials depend on: a journal made with other settings is refused."""
    skip = ("out", "lr", "seed", "steps", "resume", "progress", "eval_steps", "eval_examples", "save_steps")
    config = {k: v for k, v in dataclasses.asdict(base).items() if k not in skip}
    search = {k: v for k, v in dataclasses.asdict(spec).items() if k not in (*_NOT_SETTINGS, "steps", "seed")}
    return json.loads(json.dumps({"config": config, "search": search, "steps": steps, "seed": seed, "seeds": seeds}))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        math.isclose(a[k], b[k], rel_tol=1e-9) if isinstance(a[k], float) else a[k] == b[k] for k in a
    )


class _Search:
    """One method's Optuna study in ``out`` (see the module docstring)."""

    def __init__(self, base: TrainConfig, spec: TuneSpec, out: Path, seeds: list[int], trials_dir: Path):
        optuna = self.optuna = _optuna()
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        self.base, self.spec, self.out, self.trials_dir = base, spec, out, trials_dir
        self.steps = spec.steps or base.steps
        self.seed = spec.seed if spec.seed is not None else seeds[0]
        out.mkdir(parents=True, exist_ok=True)
        self.examples = tuning_examples(base, seeds, spec.val_examples, self.seed)
        storage = JournalStorage(JournalFileBackend(str(out / "optuna.journal")))
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=self.steps // 2)
            if spec.prune
            else optuna.pruners.NopPruner()
        )
        self.study = optuna.create_study(
            study_name="tune", storage=storage, direction="minimize", pruner=pruner, load_if_exists=True
        )
        n = len(self.study.trials)  # a resumed TPE must not replay the draws of its first run
        startup = min(10, spec.trials // 2 + 1)
        self.study.sampler = optuna.samplers.TPESampler(seed=self.seed * 1000 + n, n_startup_trials=startup)
        settings = _settings(base, spec, seeds, self.steps, self.seed)
        recorded = self.study.user_attrs.get("settings")
        if recorded is None:
            self.study.set_user_attr("settings", settings)
        elif recorded != settings:
            changed = sorted(k for k in settings if recorded.get(k) != settings[k])
            raise ValueError(
                f"{out} holds a search made with other settings ({', '.join(changed)} differ: recorded "
                f"{ {k: recorded.get(k) for k in changed} }); use another directory, or the same settings to resume it"
            )
        waiting = self.optuna.trial.TrialState.WAITING
        while self.study.get_trials(states=(waiting,)):  # enqueued by a run that died before asking
            self.study.tell(self.study.ask(), state=self.optuna.trial.TrialState.FAIL)

    @property
    def extensions(self) -> list[dict]:
        return self.study.user_attrs.get("extensions", [])

    def finished(self) -> list:
        states = self.optuna.trial.TrialState
        return self.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))

    def pending(self) -> list[tuple[dict | None, str]]:
        """The points not finished yet: (params, kind); params None: a point TPE samples."""
        done = self.finished()
        planned = [(params, "extension") for params in (e["params"] for e in self.extensions)]
        if self.spec.search == "grid":
            # the middle rates first: the pruner compares later runs with finished ones, and the
            # extremes are the likeliest to be pruned
            centre = sum(math.log(v) for v in self.spec.lrs) / len(self.spec.lrs)
            lrs = sorted(self.spec.lrs, key=lambda v: (round(abs(math.log(v) - centre), 9), v))
            names = list(self.spec.fields)
            grid = itertools.product(lrs, *(self.spec.fields[n] for n in names))
            planned = [({"lr": lr, **dict(zip(names, rest))}, "grid") for lr, *rest in grid] + planned
        else:
            sampled = sum(t.user_attrs.get("kind") == "sampled" for t in done)
            planned = [(None, "sampled")] * max(0, self.spec.trials - sampled) + planned
        return [(p, kind) for p, kind in planned if p is None or not any(_same(p, t.params) for t in done)]

    def suggest(self, trial, params: dict | None) -> dict:
        """The trial's values (fixed ones were enqueued; the rest TPE samples)."""
        low, high = self.spec.lrs[0], self.spec.lrs[-1]
        if params is not None:  # an extension point lies outside the rates' range
            low, high = min(low, params["lr"]), max(high, params["lr"])
        values = {"lr": trial.suggest_float("lr", low, high, log=True)}
        for name, choices in self.spec.fields.items():
            values[name] = trial.suggest_categorical(name, choices)
        return values

    def run_trial(self, params: dict | None, kind: str, callbacks: list) -> dict:
        """Train one point; tell Optuna its validation loss (or that it was pruned)."""
        states = self.optuna.trial.TrialState
        if params is not None:
            self.study.enqueue_trial(params)
        trial = self.study.ask()
        values = self.suggest(trial, params)
        run = self.trials_dir / f"trial-{trial.number:03d}"
        train_part, val = self.examples
        config = apply_params(self.base, values)
        config = dataclasses.replace(
            config,
            seed=self.seed,
            steps=self.steps,
            out=str(run),
            eval_steps=max(1, self.steps // self.spec.reports),
            eval_examples=len(val),
            save_steps=self.steps + 1,  # no checkpoints: an interrupted trial runs again
            resume=False,
        )
        trial.set_user_attr("kind", kind)
        trial.set_user_attr("run", str(run))
        logger.info("tune %s: trial %d (%s) %s, %d steps", self.base.method, trial.number, kind, values, self.steps)
        report = _reporter(trial)
        summary = train(config, [*callbacks, report], examples=(train_part, val))
        if report.pruned is not None:
            trial.set_user_attr("pruned_at", report.pruned)
            self.study.tell(trial, state=states.PRUNED)
            logger.info("tune %s: trial %d pruned at step %d", self.base.method, trial.number, report.pruned)
            return {"number": trial.number, "params": values, "state": "pruned", "pruned_at": report.pruned}
        if not summary.get("finished"):
            self.study.tell(trial, state=states.FAIL)
            return {"number": trial.number, "params": values, "state": "interrupted", "run": run}
        value = _finite(summary["eval"]["eval_loss"])
        trial.set_user_attr("final_train_loss", summary.get("final_train_loss"))
        trial.set_user_attr("seconds_per_step", summary.get("seconds_per_step"))
        self.study.tell(trial, value)
        logger.info("tune %s: trial %d: validation loss %.4f", self.base.method, trial.number, value)
        return {"number": trial.number, "params": values, "state": "complete", "value": value}

    def edge(self) -> dict | None:
        """The next extension point when the best lr is the lowest or highest tried (among
        trials with the best trial's other values), else None."""
        done = self.finished()
        complete = [t for t in done if t.value is not None and math.isfinite(t.value)]
        if not complete:
            return None
        best = min(complete, key=lambda t: t.value)
        others = {k: v for k, v in best.params.items() if k != "lr"}
        lrs = sorted({t.params["lr"] for t in done if {k: v for k, v in t.params.items() if k != "lr"} == others})
        lr = best.params["lr"]
        if len(lrs) < 2 or lrs[0] < lr < lrs[-1]:
            return None
        side = "high" if lr == lrs[-1] else "low"
        target = lr * self.spec.step if side == "high" else lr / self.spec.step
        return {"edge": side, "from": lr, "params": {**best.params, "lr": target}}

    def result(self) -> dict:
        """The search as a dict: every trial, the chosen values, the extensions."""
        trials = []
        for t in self.study.trials:
            if not t.params:
                continue
            state = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(t.state.name, "interrupted")
            trials.append(
                {
                    "number": t.number,
                    "kind": t.user_attrs.get("kind"),
                    "params": t.params,
                    "state": state,
                    "value": t.value if state == "complete" else None,
                    "pruned_at": t.user_attrs.get("pruned_at"),
                    "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                    "final_train_loss": t.user_attrs.get("final_train_loss"),
                    "seconds_per_step": t.user_attrs.get("seconds_per_step"),
                }
            )
        complete = [t for t in trials if t["state"] == "complete" and math.isfinite(t["value"])]
        if not complete:
            raise RuntimeError(
                f"tune {self.base.method}: no tuning run finished with a finite validation loss "
                f"(all diverged or were pruned); try lower --tune-lrs. Trials: {self.trials_dir}"
            )
        best = min(complete, key=lambda t: t["value"])
        return {
            "method": self.base.method,
            "search": self.spec.search,
            "steps": self.steps,
            "seed": self.seed,
            "val_examples": len(self.examples[1]),
            "train_examples": len(self.examples[0]),
            "lrs": self.spec.lrs,
            "fields": self.spec.fields,
            "trials": trials,
            "chosen": best["params"],
            "best_value": best["value"],
            "extensions": self.extensions,
            "at_edge": self.edge() is not None,
            "finished": True,
        }


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
    search = _Search(base, spec, out, list(seeds), Path(trials_dir) if trials_dir else out / "trials")
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
