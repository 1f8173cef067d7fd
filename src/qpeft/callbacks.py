"""What a qpeft training run adds to ``transformers.Trainer``: every log record appended to
``metrics.jsonl``, Ctrl-C / SIGTERM turned into "finish the step, save a checkpoint, stop", and
the arguments that switch on activation checkpointing."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class MetricsFile(TrainerCallback):
    """Append every log record to ``out/metrics.jsonl`` (main process only)."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": state.global_step, "time": time.time(), **logs}) + "\n")


class LoadBestAdapter(TrainerCallback):
    """At the end of training, load the adapter of the best checkpoint into the model: what
    ``load_best_model_at_end=True`` does for a PEFT model, which transformers' ``Trainer`` does
    only for ``peft.PeftModel`` (for any other model it looks for full weights, and fails on a
    qpeft checkpoint after the whole run).

    Use it with ``metric_for_best_model`` (``Trainer`` then tracks the best checkpoint and
    keeps it through ``save_total_limit``), evaluation and saving at the same steps, and
    ``load_best_model_at_end=False``::

        args = TrainingArguments(..., eval_strategy="steps", save_strategy="steps",
                                 metric_for_best_model="eval_loss", load_best_model_at_end=False)
        Trainer(model=qpeft_model, args=args, callbacks=[LoadBestAdapter()], ...)

    The loaded checkpoint is in ``self.loaded`` (None when no checkpoint was best: no
    evaluation ran, or none was saved).
    """

    def __init__(self):
        self.loaded: str | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not hasattr(model, "load_weights"):
            raise TypeError(
                f"LoadBestAdapter loads qpeft adapters; the Trainer's model is a {type(model).__name__} "
                "(wrap the base model with qpeft.get_model first)"
            )
        if args.load_best_model_at_end:
            raise ValueError(
                "load_best_model_at_end=True: transformers' Trainer loads a best adapter only for a peft.PeftModel "
                "and would fail on this qpeft model after training; set load_best_model_at_end=False and keep "
                "LoadBestAdapter, which loads the best checkpoint's adapter at the end"
            )
        if args.metric_for_best_model is None:
            raise ValueError(
                "LoadBestAdapter needs metric_for_best_model (e.g. 'eval_loss') in the TrainingArguments: "
                "without it Trainer does not track which checkpoint is best"
            )

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.best_model_checkpoint is None:
            logger.warning("LoadBestAdapter: no best checkpoint was recorded; the model keeps its last weights")
            return
        model.load_weights(state.best_model_checkpoint)
        self.loaded = state.best_model_checkpoint
        logger.info(
            "LoadBestAdapter: loaded the adapter of %s (%s %s)",
            state.best_model_checkpoint,
            args.metric_for_best_model,
            state.best_metric,
        )


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
                "qpeft: %s: saving a checkpoint at step %d and stopping",
                signal.Signals(self.received).name,
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


def checkpointing_args(enabled: bool, arguments: type) -> dict:
    """The ``arguments`` (``TrainingArguments``) keywords that switch on non-reentrant activation
    checkpointing, only when ``enabled`` (passing the flag at all makes transformers 5.25+ warn
    about its old name): ``activation_checkpointing`` where the installed transformers has it,
    else its older name ``gradient_checkpointing``. Returns {} when not enabled."""
    if not enabled:
        return {}
    fields = getattr(arguments, "__dataclass_fields__", {})
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}
