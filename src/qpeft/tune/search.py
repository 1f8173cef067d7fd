"""One method's search as an Optuna study: its journal on disk (a search resumes), the
trials it has left, one trial (a short :func:`qpeft.train.train` run reporting its validation
loss to the pruner), the edge rule, and the finished search as a dict."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from pathlib import Path

from qpeft.rundir import NOT_SETTINGS
from qpeft.train import TrainConfig, train
from qpeft.tune.spec import TuneSpec, apply_params
from qpeft.tune.split import tuning_examples

logger = logging.getLogger(__name__)
#: what a finished search's settings do not depend on (more trials or extensions may follow)
_NOT_SETTINGS = ("trials", "extend", "prune")


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
    skip = ("out", "lr", "seed", "steps", *NOT_SETTINGS, "eval_steps", "eval_examples", "save_steps")
    config = {k: v for k, v in dataclasses.asdict(base).items() if k not in skip}
    search = {k: v for k, v in dataclasses.asdict(spec).items() if k not in (*_NOT_SETTINGS, "steps", "seed")}
    return json.loads(json.dumps({"config": config, "search": search, "steps": steps, "seed": seed, "seeds": seeds}))


def _with_new_fields(recorded: dict | None, settings: dict) -> dict | None:
    """Recorded settings with the TrainConfig fields added since they were recorded, at their
    defaults (a field a later qpeft adds does not make an earlier search "other settings" unless
    this search sets it to something else)."""
    if recorded is None or "config" not in recorded:
        return recorded
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
    added = {k: defaults[k] for k in settings["config"] if k not in recorded["config"] and k in defaults}
    return {**recorded, "config": {**recorded["config"], **added}}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        math.isclose(a[k], b[k], rel_tol=1e-9) if isinstance(a[k], float) else a[k] == b[k] for k in a
    )


class Search:
    """One method's Optuna study in ``out``: ``pending`` points, ``run_trial``, ``edge``, ``result``."""

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
        try:  # a search already there is loaded: create_study would log another "create" in its journal
            self.study = optuna.load_study(study_name="tune", storage=storage, pruner=pruner)
        except KeyError:  # a new search (optuna raises KeyError for a study name its storage lacks)
            try:
                self.study = optuna.create_study(
                    study_name="tune", storage=storage, direction="minimize", pruner=pruner
                )
            except optuna.exceptions.DuplicatedStudyError:  # another process created it just now
                self.study = optuna.load_study(study_name="tune", storage=storage, pruner=pruner)
        n = len(self.study.trials)  # a resumed TPE must not replay the draws of its first run
        startup = min(10, spec.trials // 2 + 1)
        self.study.sampler = optuna.samplers.TPESampler(seed=self.seed * 1000 + n, n_startup_trials=startup)
        settings = _settings(base, spec, seeds, self.steps, self.seed)
        recorded = _with_new_fields(self.study.user_attrs.get("settings"), settings)
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
        """The extension points added so far (``edge``, ``from``, ``params``), in order."""
        return self.study.user_attrs.get("extensions", [])

    def finished(self) -> list:
        """The trials that ran to the end or were pruned (an interrupted one runs again)."""
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
        # scored by loss alone: no generated samples (the validation examples carry no answers either)
        summary = train(config, [*callbacks, report], examples=(train_part, val), samples=0)
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
        trials with the best trial's other values) and lies within one step of the searched
        range's end (always so for a grid: its ends are tried), else None."""
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
        side, step = ("high" if lr == lrs[-1] else "low"), self.spec.step
        low, high = min(self.spec.lrs[0], lrs[0]), max(self.spec.lrs[-1], lrs[-1])  # (extensions widen it)
        if (side == "high" and lr * step < high * (1 - 1e-9)) or (side == "low" and lr / step > low * (1 + 1e-9)):
            return None  # optuna: the extreme of the points sampled, but well inside the range
        target = lr * step if side == "high" else lr / step
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
