"""A training run's settings: :class:`TrainConfig`, whose fields are the ``qpeft train`` flags
and the YAML/JSON config keys (each field documented once, :func:`qpeft.adapters.config.doc`),
and the adapter config a run's method and overrides make."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from qpeft.adapters.config import doc

__all__ = ["METHOD_PRESETS", "TrainConfig", "adapter_config"]

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
        "qiskit|pyqpanda3], origin[:CHIP], ibm[:BACKEND] (fake_* = IBM local testing mode), braket:DEVICE "
        "(local, local_dm = its offline LocalSimulator), or a plugin's provider (`qpeft providers`); needs "
        "qtha-weights",
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
    """The adapter config of a run: its method's preset with ``adapter`` and ``target_modules`` on top."""
    from qpeft.adapters.presets import preset

    fields = dict(config.adapter)
    if config.target_modules is not None:
        names = [n.strip() for n in config.target_modules.split(",") if n.strip()]
        fields["target_modules"] = names[0] if names == ["all-linear"] else names
    return preset(METHOD_PRESETS.get(config.method, config.method), **fields)
