"""Fine-tuning on ``transformers.Trainer``.

Checkpoints hold the adapter weights, optimizer, scheduler and RNG state only (never the
base model); a run stopped after k steps then resumed reaches the same adapter weights as an
uninterrupted run. Ctrl-C / SIGTERM stops after the current step with a resumable checkpoint;
the same call again continues from it (``resume=True`` continues with changed settings; a run
directory holding a run of other settings is refused: :mod:`qpeft.rundir`). Every log line
also goes to ``metrics.jsonl`` in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from qpeft import rundir
from qpeft.adapters.config import doc
from qpeft.callbacks import MetricsFile, StopOnSignal, checkpointing_args
from qpeft.rundir import RunStart, latest_checkpoint

__all__ = ["METHOD_PRESETS", "TrainConfig", "latest_checkpoint", "make_trainer", "plan", "start", "train"]

logger = logging.getLogger(__name__)

#: --method shortcuts used by `qpeft compare`
METHOD_PRESETS = {
    "lora": "lora",
    "mpo": "mpo",
    "qtha": "qtha-default",
    "qtha-weights": "qtha-weights",
    "qtha-angle": "qtha-angle",
    "qtha-mlp": "qtha-mlp",
    "qtha-none": "qtha-none",
}


@dataclass
class TrainConfig:
    """Everything a training run needs; the CLI flags and YAML/JSON config keys are these fields."""

    model: str = doc("smollm2-135m", "model: the built-in smollm2-135m, a local directory, or a cached hub id")
    data: str = doc("arithmetic", "data: 'arithmetic[:LEVEL]', a chat/GSM8K .jsonl file, or a CPsyCounD directory")
    method: str = doc("qtha", f"adapter method or preset: {', '.join(METHOD_PRESETS)}, or any preset name")
    adapter: dict = doc({}, 'adapter config fields that override the preset, e.g. \'{"r": 4, "bond_dim": 8}\'')
    target_modules: str | None = doc(
        None, "Linear modules to adapt: comma-separated names (q_proj,v_proj) or all-linear; default: the preset's"
    )
    out: str = doc("runs/qpeft", "run directory: checkpoints, metrics.jsonl, final adapter, results.json")
    steps: int = doc(100, "optimizer steps")
    batch_size: int = doc(4, "sequences per device per step")
    grad_accum: int = doc(1, "gradient accumulation steps")
    lr: float = doc(2e-3, "peak learning rate (AdamW, linear decay)")
    warmup_steps: int = doc(0, "linear warm-up steps")
    weight_decay: float = doc(0.0, "AdamW weight decay")
    max_length: int = doc(256, "tokens per sequence; longer dialogues lose whole leading turns first")
    val_fraction: float = doc(0.1, "share of the data held out for evaluation (seeded split)")
    max_examples: int | None = doc(None, "use at most this many examples (before the split)")
    eval_examples: int = doc(64, "held-out examples used for loss / accuracy after training")
    seed: int = doc(0, "seed for the split, adapter init and data order")
    save_steps: int = doc(50, "save a resumable checkpoint every N steps")
    save_total_limit: int | None = doc(None, "keep at most K checkpoints (the oldest are deleted); None keeps all")
    eval_steps: int | None = doc(
        None, "every N steps, log the loss on the held-out examples (the first eval_examples) as eval_loss"
    )
    logging_steps: int = doc(1, "log (and append to metrics.jsonl) every N steps")
    resume: bool = doc(
        False,
        "continue the run in `out` from its newest checkpoint even where the settings changed (qpeft train: "
        "its recorded settings, with the flags given on top, e.g. more --steps); the same command again "
        "continues without it",
    )
    dtype: str = doc("float32", "base model dtype: float32 or bfloat16")
    progress: bool = doc(True, "show progress bars")
    quantum_backend: str | None = doc(
        None,
        "run the QNN circuits through the job engine on PROVIDER[:BACKEND]: local[:torch|shots|noisy[:DEVICE]|"
        "qiskit|pyqpanda3], origin[:CHIP], ibm[:BACKEND] (fake_* = IBM local testing mode); needs qtha-weights",
    )
    shots: int | None = doc(None, "shots per circuit on --quantum-backend (a QPU needs it; None: exact simulator)")
    diff_method: str = doc("parameter_shift", "QNN gradients on --quantum-backend: parameter_shift, spsa, hybrid")
    quantum_options: dict = doc(
        {}, 'provider / job-engine options for --quantum-backend, e.g. \'{"max_parallel": 4, "job_timeout": 3600}\''
    )
    report_to: str = doc(
        "none",
        "experiment trackers for the losses and the quantum values (backend, noise, shots, circuits and jobs per "
        "step, QPU spend so far): none, all (the installed ones), or comma-separated tensorboard (event files "
        "under OUT/runs), mlflow, wandb, or another transformers integration that is installed",
    )
    max_spend: dict = doc(
        {},
        "cap on what the run's jobs may spend on --quantum-backend, in any of: jobs, shots (circuits x shots), "
        'amount (estimated, provider currency, plan\'s high figure), e.g. \'{"jobs": 50, "amount": 200}\'; the engine '
        "submits no job that would pass it, and a rerun with a higher cap continues",
    )
    gradient_checkpointing: bool = doc(
        False,
        "recompute the base model's activations during backward (non-reentrant gradient "
        "checkpointing): far less activation memory for about one more forward per step",
    )

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "max_length",
            "save_steps",
            "logging_steps",
            "eval_examples",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        for name in ("save_total_limit", "eval_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"`{name}` must be a positive integer or None (off), got {value!r}")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ValueError(f"`lr` must be a positive number, got {self.lr!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"`dtype` must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.diff_method not in ("parameter_shift", "spsa", "hybrid"):
            raise ValueError(f"`diff_method` must be parameter_shift, spsa or hybrid, got {self.diff_method!r}")
        if self.shots is not None and (
            not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 1
        ):
            raise ValueError(f"`shots` must be a positive integer or None (exact), got {self.shots!r}")
        if not isinstance(self.adapter, dict):
            raise ValueError(f"`adapter` must be a mapping of config fields, got {self.adapter!r}")
        if self.report_to not in ("none", "", None):
            from qpeft.tracking import report_to_list

            report_to_list(self.report_to, check_installed=False)
        if self.max_spend:
            from qpeft.jobs.budget import SpendCap

            SpendCap.parse(self.max_spend)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """Fields from a YAML or JSON file, then ``overrides``; unknown keys are an error."""
        return cls(**{**cls.read_file(path), **overrides})

    @classmethod
    def read_file(cls, path: str | Path) -> dict:
        """The fields a YAML or JSON file sets (checked: a mapping of known fields)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of TrainConfig fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {unknown}; known: {sorted(known)}")
        return data


def adapter_config(config: TrainConfig):
    from qpeft.adapters.presets import preset

    fields = dict(config.adapter)
    if config.target_modules is not None:
        names = [n.strip() for n in config.target_modules.split(",") if n.strip()]
        fields["target_modules"] = names[0] if names == ["all-linear"] else names
    return preset(METHOD_PRESETS.get(config.method, config.method), **fields)


def prepare(config: TrainConfig, examples: tuple[list, list] | None = None):
    """(model with adapters, tokenizer, train dataset, held-out examples).

    ``examples``: (training, held-out) examples to use instead of the run's split of
    ``config.data`` (the tuner's: a validation split carved from the training part).
    """
    from qpeft.adapters import get_model
    from qpeft.data import EncodedDataset, run_split
    from qpeft.models import load_model

    torch.manual_seed(config.seed)
    if examples is None:
        examples = run_split(config.data, config.seed, config.val_fraction, config.max_examples)
    train_examples, held_out = examples
    base, tokenizer = load_model(config.model, getattr(torch, config.dtype))
    model = get_model(base, adapter_config(config))
    dataset = EncodedDataset(tokenizer, train_examples, config.max_length)
    return model, tokenizer, dataset, held_out[: config.eval_examples]


def make_trainer(config: TrainConfig, model, tokenizer, dataset, callbacks: list | None = None, eval_dataset=None):
    """The Trainer of a run; ``eval_dataset`` (the held-out examples, encoded) is evaluated
    every ``config.eval_steps`` steps."""
    from transformers import Trainer, TrainingArguments

    from qpeft.data import Collator
    from qpeft.tracking import add_quantum_metrics, report_to_list

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1

    class QPeftTrainer(Trainer):
        """Checkpoints also record the run's TrainConfig (the model saves and resumes its
        adapter through the plain Trainer)."""

        def _save(self, output_dir=None, state_dict=None):
            super()._save(output_dir, state_dict)
            if self.args.should_save:
                path = Path(output_dir or self.args.output_dir) / "train_config.json"
                path.write_text(json.dumps(dataclasses.asdict(config), indent=2))

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if config.eval_steps else "no",
        eval_steps=config.eval_steps,
        per_device_eval_batch_size=config.batch_size,
        prediction_loss_only=True,
        label_names=["labels"],
        seed=config.seed,
        data_seed=config.seed,
        report_to=report_to_list(config.report_to),
        remove_unused_columns=False,
        disable_tqdm=not config.progress,
        use_cpu=not torch.cuda.is_available(),
        # torchrun sets WORLD_SIZE; on CPU the processes talk through gloo
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
        dataloader_num_workers=0,
        bf16=config.dtype == "bfloat16" and torch.cuda.is_available(),
        **checkpointing_args(config.gradient_checkpointing, TrainingArguments),
    )
    if config.gradient_checkpointing:
        # the frozen embeddings give no grad-requiring input to the first checkpointed layer
        model.enable_input_require_grads()
    metrics, stop = MetricsFile(out), StopOnSignal()
    trainer = QPeftTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=Collator(tokenizer.pad_token_id),
        callbacks=[metrics, *(callbacks or []), stop],
    )
    add_quantum_metrics(trainer, finish_runs=True)  # first: its values reach the trackers and metrics.jsonl
    return trainer


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


def start(config: TrainConfig, overwrite: bool = False) -> RunStart:
    """How :func:`train` would start ``config`` in ``config.out``, without starting it: from a
    checkpoint, at step 0, or not at all (the same run finished). Raises ValueError where the
    directory holds a run of other settings (see :func:`qpeft.rundir.start_point`)."""
    return rundir.start_point(config.out, dataclasses.asdict(config), config.resume, overwrite)


def train(
    config: TrainConfig,
    callbacks: list | None = None,
    overwrite: bool = False,
    examples: tuple[list, list] | None = None,
    samples: int = 8,
) -> dict:
    """Train, save the final adapter to ``out/adapter``, evaluate, write ``results.json``.

    In a directory that holds a run already: continues the same settings' run from its newest
    checkpoint (or returns its ``results.json`` when it finished), continues from the newest
    checkpoint with ``config.resume``, deletes the earlier run with ``overwrite``, and raises
    ValueError for a run of other settings (:mod:`qpeft.rundir`). ``callbacks``: extra
    ``transformers.TrainerCallback`` objects. ``examples``: (training, held-out) examples instead
    of the run's split of ``config.data`` (see :func:`prepare`). ``samples``: how many generated
    answers go to ``samples.jsonl`` (0: none; a tuning run is scored by its loss alone).
    """
    from qpeft.data import EncodedDataset
    from qpeft.evaluate import evaluate

    out = Path(config.out)
    begin = start(config, overwrite)
    if begin.finished is not None:
        return {**begin.finished, "reused": True}
    if int(os.environ.get("RANK", "0")) == 0:
        out.mkdir(parents=True, exist_ok=True)
        rundir.prepare(out, begin)
    resume_from = begin.checkpoint
    provider = quantum_provider(config, out)  # credentials and the service are checked before the model loads
    model, tokenizer, dataset, held_out = prepare(config, examples)
    eval_dataset = EncodedDataset(tokenizer, held_out, config.max_length) if config.eval_steps else None
    runner, scope = quantum_runner(config, model, out, provider)
    trainer = make_trainer(config, model, tokenizer, dataset, [*(callbacks or []), *scope], eval_dataset)
    if trainer.is_world_process_zero():
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    started = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        for callback in trainer.callback_handler.callbacks:
            if hasattr(callback, "restore_signals"):
                callback.restore_signals()
    seconds = time.time() - started
    state = trainer.state
    finished = state.global_step >= config.steps
    summary = {
        "config": dataclasses.asdict(config),
        "finished": finished,
        "global_step": state.global_step,
        "train_seconds": seconds,
        "train_loss_mean": result.training_loss,
        "losses": [(r["step"], r["loss"]) for r in state.log_history if "loss" in r],
        "parameters": model.parameter_summary(),
    }
    if not trainer.is_world_process_zero():
        return summary
    if not finished:
        summary["interrupted"] = True
        summary["checkpoint"] = str(latest_checkpoint(out))
        (out / "results.json").write_text(json.dumps(summary, indent=2))
        return summary
    model.save_adapter(out / "adapter")
    if runner is not None:
        runner.scope = "eval"
        runner.alone()  # (under torchrun only rank 0 evaluates: no more circuits shared by broadcast)
    summary["eval"] = evaluate(
        model,
        tokenizer,
        held_out,
        config.max_length,
        samples_path=out / "samples.jsonl",
        progress=None if config.progress else False,
        label=f"final adapter, {len(held_out)} held-out examples",
        n_samples=samples,
    )
    losses = [loss for _, loss in summary["losses"]]
    tail = max(1, math.ceil(0.1 * len(losses)))
    summary["final_train_loss"] = sum(losses[-tail:]) / tail if losses else None
    summary["seconds_per_step"] = seconds / max(1, state.global_step - begin.step)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary
