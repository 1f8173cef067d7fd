"""Fine-tuning on ``transformers.Trainer``.

Checkpoints hold the adapter weights, optimizer, scheduler and RNG state only (never the
base model); ``resume=True`` continues from the newest one, and a run stopped after k
steps then resumed reaches the same adapter weights as an uninterrupted run. Ctrl-C /
SIGTERM stops after the current step with a resumable checkpoint. Every log line also
goes to ``metrics.jsonl`` in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from qpeft.adapters.config import doc

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
    resume: bool = doc(False, "continue from the newest checkpoint in `out`")
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
        {}, "provider / job-engine options for --quantum-backend, e.g. {'max_parallel': 4, 'job_timeout': 3600}"
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

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """Fields from a YAML or JSON file, then ``overrides``; unknown keys are an error."""
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
        return cls(**{**data, **overrides})


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


def latest_checkpoint(out: str | Path) -> Path | None:
    checkpoints = [p for p in Path(out).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _callbacks(out: Path):
    from transformers import TrainerCallback

    class MetricsFile(TrainerCallback):
        """Append every log record to metrics.jsonl (main process only)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"step": state.global_step, "time": time.time(), **logs}) + "\n")

    class StopOnSignal(TrainerCallback):
        """SIGINT / SIGTERM: finish the step, save a checkpoint, stop."""

        def __init__(self):
            self.received = None
            self.previous: dict = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

        def _handle(self, signum, frame):
            self.received = signum

        def on_step_end(self, args, state, control, **kwargs):
            if self.received is not None:
                logger.warning(
                    "qpeft: signal %s: saving a checkpoint at step %d and stopping",
                    self.received,
                    state.global_step,
                )
                control.should_save = True
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kwargs):
            self.restore_signals()

        def restore_signals(self) -> None:
            """The handlers from before training; also after a training step raised (the Trainer
            then never calls on_train_end, and Ctrl-C would stay caught in this process)."""
            previous, self.previous = self.previous, {}
            for s, handler in previous.items():
                signal.signal(s, handler)

    return MetricsFile(), StopOnSignal()


def make_trainer(config: TrainConfig, model, tokenizer, dataset, callbacks: list | None = None, eval_dataset=None):
    """The Trainer of a run; ``eval_dataset`` (the held-out examples, encoded) is evaluated
    every ``config.eval_steps`` steps."""
    from transformers import Trainer, TrainingArguments

    from qpeft.data import Collator

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
        report_to=[],
        remove_unused_columns=False,
        disable_tqdm=not config.progress,
        use_cpu=not torch.cuda.is_available(),
        # torchrun sets WORLD_SIZE; on CPU the processes talk through gloo
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
        dataloader_num_workers=0,
        bf16=config.dtype == "bfloat16" and torch.cuda.is_available(),
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
    )
    if config.gradient_checkpointing:
        # the frozen embeddings give no grad-requiring input to the first checkpointed layer
        model.enable_input_require_grads()
    metrics, stop = _callbacks(out)
    return QPeftTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=Collator(tokenizer.pad_token_id),
        callbacks=[metrics, *(callbacks or []), stop],
    )


def quantum_runner(config: TrainConfig, model, out: Path):
    """With ``--quantum-backend``: the step runner that sends every step's circuits through the job
    engine (ledger and results under ``out/jobs``), and the callback naming each step for it."""
    if config.quantum_backend is None:
        return None, []
    from transformers import TrainerCallback

    from qpeft.jobs.step import build_runner

    runner = build_runner(
        model, config.quantum_backend, config.shots, config.diff_method, out, config.quantum_options, config.progress
    )

    class StepScope(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            runner.scope = f"train-{state.global_step}"

    return runner, [StepScope()]


def plan(config: TrainConfig) -> dict:
    """What ``config`` would submit to its quantum backend (see :mod:`qpeft.jobs.plan`)."""
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
        provider_options=provider_options,
        tokens_per_step=config.batch_size * config.grad_accum * config.max_length,
        activation_modules=len(quantum) - len(weights_mode),
    )
    return {**result.as_dict(), "text": format_plan(result)}


def train(
    config: TrainConfig,
    callbacks: list | None = None,
    examples: tuple[list, list] | None = None,
    samples: int = 8,
) -> dict:
    """Train, save the final adapter to ``out/adapter``, evaluate, write ``results.json``.

    ``callbacks``: extra ``transformers.TrainerCallback`` objects. ``examples``: (training,
    held-out) examples instead of the run's split of ``config.data`` (see :func:`prepare`).
    ``samples``: how many generated answers go to ``samples.jsonl`` (0: none; a tuning run is
    scored by its loss alone).
    """
    from qpeft.data import EncodedDataset
    from qpeft.evaluate import evaluate

    out = Path(config.out)
    resume_from = None
    if config.resume:
        resume_from = latest_checkpoint(out)
        if resume_from is None:
            raise FileNotFoundError(f"--resume: no checkpoint-* directory in {out}; start the run without --resume")
    model, tokenizer, dataset, held_out = prepare(config, examples)
    eval_dataset = EncodedDataset(tokenizer, held_out, config.max_length) if config.eval_steps else None
    runner, scope = quantum_runner(config, model, out)
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
        (out / "results.json").write_text(json.dumps(summary, indent=2))
        return summary
    model.save_adapter(out / "adapter")
    if runner is not None:
        runner.scope = "eval"
    summary["eval"] = evaluate(
        model, tokenizer, held_out, config.max_length, samples_path=out / "samples.jsonl", n_samples=samples
    )
    losses = [loss for _, loss in summary["losses"]]
    tail = max(1, math.ceil(0.1 * len(losses)))
    summary["final_train_loss"] = sum(losses[-tail:]) / tail if losses else None
    first_step = int(resume_from.name.split("-")[-1]) if resume_from else 0
    summary["seconds_per_step"] = seconds / max(1, state.global_step - first_step)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary
