"""A training run's circuits on a quantum backend (``--quantum-backend``: a QPU, or a simulator
through the same job engine): the provider, made and checked before the model loads; the step
runner that sends every step's circuits through the job engine (:mod:`qpeft.jobs.step`); and
:func:`plan`, what such a run would submit."""

from __future__ import annotations

from pathlib import Path

from qpeft.config import TrainConfig, adapter_config

__all__ = ["plan", "quantum_provider", "quantum_runner"]


def _quantum_options(config: TrainConfig) -> dict:
    """--quantum-options with the spending cap (--max-spend) among the engine options."""
    return {**config.quantum_options, **({"max_spend": config.max_spend} if config.max_spend else {})}


def quantum_provider(config: TrainConfig, out: Path):
    """With ``--quantum-backend``: its provider, made before the model loads, so a bad key, an
    unknown backend or an unreachable service fails at once (None without a quantum backend, and
    on the ranks > 0 of torchrun, where rank 0 submits for all)."""
    if config.quantum_backend is None:
        return None
    from qpeft.jobs.step import connect_provider

    return connect_provider(config.quantum_backend, config.shots, _quantum_options(config), out)


def quantum_runner(config: TrainConfig, model, out: Path, provider=None):
    """With ``--quantum-backend``: the step runner that sends every step's circuits through the job
    engine (ledger and results under ``out/jobs``; ``provider`` from :func:`quantum_provider`),
    and the callback naming each step for it."""
    if config.quantum_backend is None:
        return None, []
    from transformers import TrainerCallback

    from qpeft.jobs.step import build_runner

    runner = build_runner(
        model,
        config.quantum_backend,
        config.shots,
        config.diff_method,
        out,
        _quantum_options(config),
        config.progress,
        provider,
    )

    class StepScope(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            runner.scope = f"train-{state.global_step}"

        def on_step_end(self, args, state, control, **kwargs):
            runner.scope = f"eval-step-{state.global_step}"  # (what runs before the next step: an evaluation)

    return runner, [StepScope()]


def plan(config: TrainConfig) -> dict:
    """What ``config`` would submit to its quantum backend (see :mod:`qpeft.jobs.plan`): every
    training step, every periodic evaluation (``eval_steps``) and the final evaluation."""
    from qpeft.adapters import get_model
    from qpeft.jobs.plan import format_plan, plan_run
    from qpeft.jobs.step import split_options
    from qpeft.models import load_model

    if config.quantum_backend is None:
        raise ValueError("`qpeft plan` needs --quantum-backend PROVIDER[:BACKEND] (e.g. origin, ibm:fake_torino)")
    provider_options, _, _ = split_options(config.quantum_options)
    base, _ = load_model(config.model)
    model = get_model(base, adapter_config(config))
    quantum = [m for m in model.modules() if hasattr(m, "step_runner") and getattr(m, "qnn", None) is not None]
    weights_mode = [m.qnn.executed_circuit for m in quantum if m.weights_mode]
    result = plan_run(
        weights_mode,
        config.quantum_backend,
        config.shots,
        config.steps,
        config.diff_method,
        eval_passes=1 + (config.steps // config.eval_steps if config.eval_steps else 0),
        provider_options=provider_options,
        tokens_per_step=config.batch_size * config.grad_accum * config.max_length,
        activation_modules=len(quantum) - len(weights_mode),
        max_spend=config.max_spend,
    )
    return {**result.as_dict(), "text": format_plan(result)}
