"""Experiment tracking: ``--report-to`` and the quantum values logged beside the losses.

Training hands ``report_to`` to ``transformers.Trainer``, so the trackers are transformers'
own integrations (TensorBoard, MLflow, Weights & Biases, ...). :class:`QuantumMetrics` adds
what is specific to a quantum run to every training log record, where those trackers (and
``metrics.jsonl``) pick it up next to ``loss`` and ``learning_rate``:

* where the circuits run: ``quantum/backend`` (``origin:WK_C180``, ``local:noisy:wukong72``, or
  the adapter's in-process backend) and ``quantum/noise`` (the adapter's noise setting), as
  text in the first record;
* ``quantum/shots_per_circuit`` (absent when the circuits are exact);
* with ``--quantum-backend`` (read from the run's job ledger): circuits, jobs and shots per
  step (averaged over the steps since the previous record) and in total so far, retries and
  failures, and the estimated QPU seconds and spend so far (``quantum/spend_usd_low`` /
  ``_high``; the currency is the provider's) from the same published rates as ``qpeft plan``.
"""

from __future__ import annotations

import json

from transformers import TrainerCallback

from qpeft.jobs.plan import RATES
from qpeft.jobs.summary import totals

#: the trackers tested with qpeft (any other name transformers integrates is accepted too)
TRACKERS = ("tensorboard", "mlflow", "wandb")
#: what each tracker needs installed (the pip package; `pip install qpeft[tracking]` has them all)
INSTALL = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def report_to_list(value: str | list[str] | None, check_installed: bool = True) -> list[str]:
    """The trackers named by a ``report_to`` setting.

    Args:
        value: ``"none"`` (or None, or empty) for no tracker, ``"all"`` for every installed one, a
            comma-separated string such as ``"tensorboard,mlflow"``, or a list of names; every name
            is one of transformers' reporting integrations (``INTEGRATION_TO_CALLBACK``).
        check_installed: also check that each named tracker's package is importable.

    Returns:
        The tracker names, in the given order (``"all"``: the installed ones), without ``"none"``.

    Raises:
        ValueError: a name transformers does not integrate, ``"none"`` combined with a tracker,
            or (``check_installed``) a tracker whose package is not installed.
    """
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    if value is None:
        return []
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, list | tuple) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value]
    else:
        raise ValueError(f"`report_to` must be a comma-separated string or a list of names, got {value!r}")
    if names in ([], ["none"]):
        return []
    if names == ["all"]:  # as transformers reads it: every installed integration
        from transformers.integrations import get_available_reporting_integrations

        return get_available_reporting_integrations() if check_installed else names
    unknown = [n for n in names if n not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise ValueError(
            f"`report_to`: unknown tracker(s) {unknown} in {value!r}; use none or comma-separated names from "
            f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}"
        )
    if check_installed:
        from transformers.integrations import get_available_reporting_integrations

        available = get_available_reporting_integrations()
        missing = [n for n in names if n not in available]
        if missing:
            packages = " ".join(INSTALL.get(n, n.replace("_", "-")) for n in missing)
            raise ValueError(
                f"`report_to`: {', '.join(missing)} not installed; pip install {packages} (or qpeft[tracking]), "
                f"or drop it from --report-to (installed trackers: {', '.join(available) or 'none'})"
            )
    return names


def quantum_modules(model) -> list:
    """The adapter layers of ``model`` that run a quantum circuit (QTHA with ``branch="qnn"``)."""
    return [m for m in model.modules() if getattr(m, "qnn", None) is not None and hasattr(m, "step_runner")]


def ledger_values(records: list[dict]) -> dict[str, float]:
    """Totals so far of a job ledger's records, as tracker scalars.

    Args:
        records: the ledger's records (``runner.engine.ledger.records``, or
            :func:`qpeft.jobs.ledger.read_ledger` of ``RUN_DIR/jobs/ledger.jsonl``).

    Returns:
        ``quantum/circuits``, ``quantum/jobs``, ``quantum/shots``, ``quantum/retries``,
        ``quantum/failures`` and, when the provider has published rates (:data:`qpeft.jobs.plan.RATES`),
        ``quantum/qpu_seconds_low`` / ``_high`` and ``quantum/spend_<currency>_low`` / ``_high``:
        QPU time and money estimated from the jobs, circuits and shots submitted so far by the
        formula ``qpeft plan`` uses.
    """
    total = totals(records)
    values = {
        "quantum/circuits": total["circuits"],
        "quantum/jobs": total["jobs"],
        "quantum/shots": total["shots"],
        "quantum/retries": total["retries"],
        "quantum/failures": total["failures"],
    }
    providers = {p.split(":", 1)[0] for p in total["providers"]}
    rates = [RATES[p] for p in providers if p in RATES and RATES[p].price_per_qpu_s is not None]
    if len(rates) == 1 and len(providers) == 1:
        rate = rates[0]
        # QPU time = jobs x per-job overhead + circuits x per-circuit time + shots x per-shot time (as qpeft plan)
        for i, bound in enumerate(("low", "high")):
            seconds = (
                total["jobs"] * rate.per_job_s[i]
                + total["circuits"] * rate.per_circuit_s[i]
                + total["shots"] * rate.per_shot_s[i]
            )
            values[f"quantum/qpu_seconds_{bound}"] = seconds
            values[f"quantum/spend_{rate.currency.lower()}_{bound}"] = seconds * rate.price_per_qpu_s[i]
    return values


class QuantumMetrics(TrainerCallback):
    """Adds the run's quantum values (module docstring) to every training log record.

    The Trainer hands one ``logs`` dict to its callbacks in order, and the trackers are among
    the first, so this callback has to run before them: add it with :func:`add_quantum_metrics`.
    A model without quantum modules gets nothing added. The step runner (``--quantum-backend``)
    is found on the model's quantum modules (``module.step_runner``), so the callback works for
    any Trainer that trains such a model.
    """

    def __init__(self) -> None:
        self._last: tuple[int, dict] | None = None  # (global step, ledger totals) at the previous record
        self._described = False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Remember the ledger's totals at the start (a resumed run's earlier jobs are not this step's)."""
        ledger = _ledger(_runner(model))
        if ledger is not None:
            self._last = (state.global_step, ledger_values(list(ledger.records)))

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        """Add the quantum values to a training record (one with ``loss``); other records are left alone."""
        if logs is None or "loss" not in logs or model is None:
            return
        modules = quantum_modules(model)
        if not modules:
            return
        logs.update(self.values(model, modules, state.global_step))

    def values(self, model, modules: list, step: int) -> dict:
        """The quantum values of ``model`` at ``step`` (see the module docstring)."""
        runner = modules[0].step_runner
        config = getattr(model, "adapter_config", None)
        out: dict = {}
        if not self._described:
            self._described = True
            if runner is not None:
                provider = runner.engine.provider  # (None on the ranks > 0 of torchrun: rank 0 submits)
                if provider is not None:
                    name = provider.name
                    out["quantum/backend"] = f"{name}:{provider.backend}" if provider.backend else name
            elif config is not None:
                out["quantum/backend"] = config.backend
            noise = getattr(config, "noise", None)
            if noise is not None and runner is None:
                out["quantum/noise"] = noise if isinstance(noise, str) else json.dumps(noise, sort_keys=True)
        shots = runner.shots if runner is not None else getattr(config, "shots", None)
        if shots is not None:
            out["quantum/shots_per_circuit"] = shots
        ledger = _ledger(runner)
        if ledger is None:
            return out
        now = ledger_values(list(ledger.records))
        last_step, last = self._last if self._last is not None else (0, dict.fromkeys(now, 0))
        steps = max(1, step - last_step)
        for name in ("circuits", "jobs", "shots"):
            out[f"quantum/{name}_per_step"] = (now[f"quantum/{name}"] - last.get(f"quantum/{name}", 0)) / steps
        out.update(now)
        self._last = (step, now)
        return out


def _ledger(runner):
    """The job ledger of ``runner``'s engine; None without a runner, and on the ranks > 0 of
    torchrun (rank 0 alone runs the engine and writes the ledger)."""
    return runner.engine.ledger if runner is not None else None


def _runner(model):
    """The step runner attached to ``model``'s quantum modules, or None."""
    modules = quantum_modules(model) if model is not None else []
    return modules[0].step_runner if modules else None


class FinishRuns(TrainerCallback):
    """Ends the tracker runs that outlive a ``Trainer`` at the end of its training.

    Weights & Biases keeps its run open after training, so the next training in the same process
    (the next cell of ``qpeft compare``) would log into it; every other integration ends its own
    run. Placed last among the callbacks, so the trackers have logged everything first.
    """

    def on_train_end(self, args, state, control, **kwargs):
        """Finish the open W&B run (when ``report_to`` names wandb)."""
        if "wandb" in (args.report_to or []):
            import wandb

            if wandb.run is not None:
                wandb.finish()


def add_quantum_metrics(trainer, finish_runs: bool = False) -> QuantumMetrics:
    """Log the quantum values of ``trainer``'s model beside its losses (to every ``report_to`` tracker).

    Args:
        trainer: a ``transformers.Trainer`` (or TRL trainer) whose model holds qpeft adapters.
        finish_runs: also end the tracker runs when training ends (:class:`FinishRuns`), so that
            each training in a process is its own run (``qpeft train`` / ``compare`` do).

    Returns:
        The :class:`QuantumMetrics` callback, placed first among the trainer's callbacks so that
        the values it adds reach the trackers in the same record.
    """
    callback = QuantumMetrics()
    trainer.callback_handler.callbacks.insert(0, callback)
    if finish_runs:
        trainer.add_callback(FinishRuns())
    return callback
