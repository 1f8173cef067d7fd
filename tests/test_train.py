"""Training on a tiny model: checkpoints, interruption by SIGTERM and resume, metrics,
evaluation, config files."""

import json
import os
import signal
import warnings

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from qpeft.adapters import load_adapter
from qpeft.data import run_split
from qpeft.evaluate import evaluate_loss
from qpeft.models import load_model
from qpeft.testing import tiny_model_dir
from qpeft.train import TrainConfig, latest_checkpoint, train


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-llama")))


def _config(tiny_dir, out, **kw):
    fields = dict(
        model=tiny_dir,
        data="arithmetic:1",
        method="qtha",
        adapter={"r": 4, "bond_dim": 2},
        out=str(out),
        steps=6,
        batch_size=2,
        max_examples=40,
        max_length=96,
        save_steps=3,
        eval_examples=4,
        lr=5e-3,
        progress=False,
    )
    return TrainConfig(**{**fields, **kw})


class SigtermAt(TrainerCallback):
    """Sends this process SIGTERM after step ``k`` (what `kill` or a scheduler would do)."""

    def __init__(self, k):
        self.k = k

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.k:
            os.kill(os.getpid(), signal.SIGTERM)


def test_interrupted_then_resumed_equals_uninterrupted(tiny_dir, tmp_path):
    straight = train(_config(tiny_dir, tmp_path / "straight"))
    assert straight["finished"] and straight["global_step"] == 6

    stopped = train(_config(tiny_dir, tmp_path / "resumed"), callbacks=[SigtermAt(2)])
    assert not stopped["finished"] and stopped["global_step"] == 2 and stopped["interrupted"]
    checkpoint = latest_checkpoint(tmp_path / "resumed")
    assert checkpoint.name == "checkpoint-2"
    files = {p.name for p in checkpoint.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt"} <= files
    # adapter weights only, never the base model (the index lists the adapter's tensors for Trainer's resume)
    assert not any(name.startswith("model") and not name.endswith(".index.json") for name in files)
    weights = load_file(checkpoint / "adapter_model.safetensors")
    assert weights and all(".base_layer." not in k for k in weights)

    resumed = train(_config(tiny_dir, tmp_path / "resumed", resume=True))
    assert resumed["finished"] and resumed["global_step"] == 6
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    assert not all(torch.equal(a[k], v) for k, v in load_file(checkpoint / "adapter_model.safetensors").items())

    lines = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, 7))
    results = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert results["eval"]["eval_loss"] > 0 and 0 <= results["eval"]["accuracy"] <= 1
    assert (tmp_path / "straight" / "samples.jsonl").is_file()


class FailAt(TrainerCallback):
    """A training step that raises (e.g. a QPU job that failed for good)."""

    def on_step_end(self, args, state, control, **kwargs):
        raise RuntimeError("step failed")


def test_a_failed_run_gives_back_ctrl_c(tiny_dir, tmp_path):
    # training catches SIGINT / SIGTERM to stop after a checkpoint; a run that raises must hand
    # them back, or Ctrl-C does nothing for the rest of the process (a notebook, a sweep)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # (ignored in a background job)
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        with pytest.raises(RuntimeError, match="step failed"):
            train(_config(tiny_dir, tmp_path / "run", steps=2), callbacks=[FailAt()])
        assert {s: signal.getsignal(s) for s in before} == before
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_eval_steps_log_held_out_loss_and_checkpoints_are_capped(tiny_dir, tmp_path):
    out = tmp_path / "run"
    config = _config(tiny_dir, out, steps=4, batch_size=1, save_steps=1, save_total_limit=2, eval_steps=2)
    assert train(config)["finished"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    assert [step for step, _ in evals] == [2, 4]
    # the step-4 eval_loss is the loss on the final evaluation's held-out examples (one per
    # batch: the mean of the per-example losses) under the final adapter
    held_out = run_split(config.data, config.seed, config.val_fraction, config.max_examples)[1]
    base, tokenizer = load_model(tiny_dir)
    model = load_adapter(base, out / "adapter")
    losses = [evaluate_loss(model, tokenizer, [e], config.max_length)["eval_loss"] for e in held_out[:4]]
    assert evals[-1][1] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_resume_without_checkpoint_is_an_error(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint-\\* directory in"):
        train(_config(tiny_dir, tmp_path / "empty", resume=True))


def test_config_files(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("method: lora\nsteps: 7\nadapter:\n  r: 2\n")
    cfg = TrainConfig.from_file(yaml_file, steps=9)
    assert (cfg.method, cfg.steps, cfg.adapter) == ("lora", 9, {"r": 2})
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['stepz'\]"):
        TrainConfig.from_file(json_file)
    with pytest.raises(ValueError, match="`steps` must be a positive integer, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="`eval_steps` must be a positive integer or None \\(off\\), got 0"):
        TrainConfig(eval_steps=0)
    with pytest.raises(ValueError, match="`save_total_limit` must be a positive integer or None \\(off\\), got -1"):
        TrainConfig(save_total_limit=-1)
    with pytest.raises(FileNotFoundError, match="config file .* does not exist"):
        TrainConfig.from_file(tmp_path / "missing.yaml")


class CheckpointingSeen(TrainerCallback):
    def __init__(self):
        self.seen = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        layers = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
        self.seen.append(any(m.gradient_checkpointing for m in layers))


@pytest.mark.parametrize("method", ["qtha", "qtha-weights", "lora"])
def test_gradient_checkpointing_trains_the_same_adapter(tiny_dir, tmp_path, method):
    """Recomputing the base model's activations changes memory, not the arithmetic: the
    adapter after 3 steps equals the one trained without checkpointing."""
    adapters = []
    for flag in (False, True):
        seen = CheckpointingSeen()
        out = tmp_path / f"gc-{flag}"
        adapter = {"r": 4} if method == "lora" else {"r": 4, "bond_dim": 2}
        config = _config(
            tiny_dir, out, method=method, adapter=adapter, steps=3, save_steps=100, gradient_checkpointing=flag
        )
        train(config, callbacks=[seen])
        assert seen.seen == [flag] * 3
        adapters.append(load_file(out / "adapter" / "adapter_model.safetensors"))
    plain, checkpointed = adapters
    assert plain.keys() == checkpointed.keys()
    for key in plain:
        torch.testing.assert_close(plain[key], checkpointed[key], atol=1e-6, rtol=1e-5)


def test_a_short_run_causes_no_warning(tiny_dir, tmp_path):
    # transformers 5.25 warns (FutureWarning) about `gradient_checkpointing` whenever it is passed,
    # even as False: a run without the flag must not pass it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(_config(tiny_dir, tmp_path / "run", steps=1, save_steps=100))
    assert summary["finished"]
    assert [f"{w.category.__name__}: {w.message} ({w.filename})" for w in caught] == []
