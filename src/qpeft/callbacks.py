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
