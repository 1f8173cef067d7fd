"""Fine-tuning on ``transformers.Trainer``.

Checkpoints hold the adapter weights, optimizer, scheduler and RNG state only (never the
base model); a run stopped after k steps then resumed reaches the same adapter weights as an
uninterrupted run. Ctrl-C / SIGTERM stops after the current step with a resumable checkpoint;
the same call again continues from it (``resume=True`` continues with changed settings; a run
directory holding a run of other settings is refused: :mod:`qpeft.rundir`). Every log line
also goes to ``metrics.jsonl`` in the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch

from qpeft import rundir
from qpeft.callbacks import MetricsFile, StopOnSignal, checkpointing_args
from qpeft.config import METHOD_PRESETS, TrainConfig, adapter_config
from qpeft.jobs.distributed import world
from qpeft.qpu import plan, quantum_provider, quantum_runner
from qpeft.rundir import RunStart, latest_checkpoint
from qpeft.sysinfo import machine

# TrainConfig, METHOD_PRESETS, adapter_config (qpeft.config) and plan (qpeft.qpu) are
# importable from here too, where the training entry points are
__all__ = [
    "METHOD_PRESETS",
    "TrainConfig",
    "adapter_config",
    "latest_checkpoint",
    "make_trainer",
    "plan",
    "prepare",
    "start",
    "train",
]

logger = logging.getLogger(__name__)


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
    distributed = world()[1] > 1

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
    if world()[0] == 0:
        out.mkdir(parents=True, exist_ok=True)
        rundir.prepare(out, begin)
    resume_from = begin.checkpoint
    provider = quantum_provider(config, out)  # credentials and the service are checked before the model loads
    model, tokenizer, dataset, held_out = prepare(config, examples)
    eval_dataset = EncodedDataset(tokenizer, held_out, config.max_length) if config.eval_steps else None
    runner, scope = quantum_runner(config, model, out, provider)
    with runner if runner is not None else contextlib.nullcontext():  # (the job engine's files let go at the end)
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
            "machine": machine(),  # (a resumed run: the machine of its last part, which seconds_per_step times)
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
