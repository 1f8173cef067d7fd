"""TRL's SFTTrainer and a plain transformers.Trainer take a qpeft model as they take a PeftModel:
they train it, their checkpoints hold the adapter (not the base model), qpeft loads what they
saved, and resume_from_checkpoint continues the run exactly."""

import logging

import pytest
import torch

from qpeft.adapters import QPeftModel, get_model, load_adapter
from qpeft.testing import TINY_TARGETS, tiny_causal_lm, tiny_tokenizer

datasets = pytest.importorskip("datasets")
trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")

PRESETS = ["lora", "qtha-default", "qtha-weights"]


def chat_dataset():
    """Sixteen one-turn additions in the chat ``messages`` format."""
    rows = [
        {"messages": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]}
        for a in range(4)
        for b in range(4)
    ]
    return datasets.Dataset.from_list(rows)


def adapted(preset: str) -> QPeftModel:
    return get_model(tiny_causal_lm("llama"), preset, r=4, target_modules=TINY_TARGETS["llama"])


def sft_trainer(model, out, steps: int, save_steps: int = 100) -> "trl.SFTTrainer":
    args = trl.SFTConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        logging_steps=1,
        save_steps=save_steps,
        max_length=32,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return trl.SFTTrainer(model=model, args=args, train_dataset=chat_dataset(), processing_class=tiny_tokenizer())


class Tokens(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        ids = torch.randint(0, 96, (12,), generator=torch.Generator().manual_seed(i))
        return {"input_ids": ids, "labels": ids}


def plain_trainer(model, out, steps: int, save_steps: int = 100) -> "transformers.Trainer":
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_steps=save_steps,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=Tokens())


TRAINERS = {"sft": sft_trainer, "trainer": plain_trainer}


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("preset", PRESETS)
def test_sft_trainer_trains_the_adapter_only(preset, tmp_path):
    model = adapted(preset)
    adapter = {n: p.detach().clone() for n, p in model.adapter_state().items()}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in adapter}
    trainer = sft_trainer(model, tmp_path, steps=6)
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert len(logs) == 6 and logs[-1]["loss"] < logs[0]["loss"]
    assert all(0.0 <= r["mean_token_accuracy"] <= 1.0 for r in logs)  # TRL's own metric
    for n, p in model.adapter_state().items():
        assert not torch.equal(p, adapter[n]), n
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


@pytest.mark.parametrize("kind", list(TRAINERS))
def test_checkpoint_holds_the_adapter_and_optimizer_not_the_base_model(kind, tmp_path):
    model = adapted("qtha-default")
    TRAINERS[kind](model, tmp_path, steps=2, save_steps=2).train()
    checkpoint = tmp_path / "checkpoint-2"
    files = {p.name for p in checkpoint.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt"} <= files
    assert not {"model.safetensors", "pytorch_model.bin", "config.json"} & files
    from safetensors.torch import load_file

    assert set(load_file(checkpoint / "adapter_model.safetensors")) == set(model.adapter_state())
    # SFTTrainer sets the tokenizer's pad id (0) in the model config: an explicit mask keeps the
    # comparison about the weights. The trainer's model forward now runs under accelerate's
    # autocast (SFTConfig's bf16 default), so the reference is the wrapped LM's own forward.
    batch = {"input_ids": torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(3))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    model.eval()
    with torch.no_grad():
        expected = model.get_base_model()(**batch).logits
        for restored in (
            load_adapter(tiny_causal_lm("llama"), checkpoint),
            QPeftModel.from_pretrained(tiny_causal_lm("llama"), checkpoint, is_trainable=True),
        ):
            assert torch.equal(restored(**batch).logits, expected)


@pytest.mark.parametrize("kind", list(TRAINERS))
def test_resume_from_checkpoint_continues_the_run_exactly(kind, tmp_path):
    straight = adapted("qtha-default")
    TRAINERS[kind](straight, tmp_path / "a", steps=4, save_steps=2).train()
    resumed = adapted("qtha-default")  # a fresh adapter: the checkpoint must replace it
    trainer = TRAINERS[kind](resumed, tmp_path / "b", steps=4)
    warnings = Records()
    logging.getLogger("transformers.trainer").addHandler(warnings)
    try:
        trainer.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    finally:
        logging.getLogger("transformers.trainer").removeHandler(warnings)
    # the base weights are not in the checkpoint by design: no "missing keys" warning about them
    assert not [m for m in warnings.messages if "missing keys" in m]
    assert trainer.state.global_step == 4
    for n, p in straight.adapter_state().items():
        assert torch.equal(resumed.adapter_state()[n], p), n


def test_guide_example(tmp_path, monkeypatch):
    """The TRL guide's example (docs/guides/trl.md, the README's before it), run as written on the
    tiny model: resumed == uninterrupted, and every way of loading gives the trained adapter."""
    from pathlib import Path

    guide = (Path(__file__).parents[1] / "docs" / "guides" / "trl.md").read_text()
    code = guide.split("```python\n", 1)[1].split("```", 1)[0]
    assert "resume_from_checkpoint=" in code and "QPeftModel.from_pretrained" in code
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code, scope)
    files = {p.name for p in (tmp_path / "runs/sft/checkpoint-2").iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    model, fresh, restored, trainable = (scope[k] for k in ("model", "fresh", "restored", "trainable"))
    for name, p in model.adapter_state().items():  # resumed == uninterrupted; saved == loaded
        assert torch.equal(fresh.adapter_state()[name], p), name
        assert torch.equal(restored.adapter_state()[name], p), name
        assert torch.equal(trainable.adapter_state()[name], p), name


def _with_best(trainer, greater_is_better: bool = True):
    """The trainer evaluating and saving every step, the best checkpoint tracked by eval_loss."""
    trainer.args.eval_strategy = transformers.IntervalStrategy.STEPS
    trainer.args.eval_steps = 1
    trainer.args.metric_for_best_model = "eval_loss"
    trainer.args.greater_is_better = greater_is_better
    trainer.eval_dataset = trainer.train_dataset
    return trainer


@pytest.mark.parametrize("kind", list(TRAINERS))
def test_load_best_adapter_loads_the_best_checkpoint_not_the_last(kind, tmp_path):
    from qpeft.callbacks import LoadBestAdapter

    model = adapted("qtha-default")
    # greater_is_better: the *highest* eval loss is "best", so that (the loss falling) the best
    # checkpoint is an early one and differs from the last weights
    trainer = _with_best(TRAINERS[kind](model, tmp_path / "run", steps=4, save_steps=1))
    best = LoadBestAdapter()
    trainer.add_callback(best)
    trainer.train()
    losses = {r["step"]: r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r}
    step = max(losses, key=losses.get)
    assert step != 4, f"the eval loss rose to the end ({losses}): the test cannot tell best from last"
    assert best.loaded == trainer.state.best_model_checkpoint == str(tmp_path / "run" / f"checkpoint-{step}")
    saved = load_adapter(tiny_causal_lm("llama"), best.loaded).adapter_state()
    last = load_adapter(tiny_causal_lm("llama"), tmp_path / "run" / "checkpoint-4").adapter_state()
    now = model.adapter_state()
    assert all(torch.equal(now[k], saved[k]) for k in now)
    assert any(not torch.equal(now[k], last[k]) for k in now)


def test_load_best_adapter_stops_at_the_start_on_settings_that_cannot_work(tmp_path):
    from qpeft.callbacks import LoadBestAdapter

    trainer = plain_trainer(adapted("lora"), tmp_path / "run", steps=2)
    trainer.add_callback(LoadBestAdapter())
    with pytest.raises(ValueError, match="needs metric_for_best_model"):
        trainer.train()
    trainer = _with_best(plain_trainer(adapted("lora"), tmp_path / "run2", steps=2, save_steps=1))
    trainer.args.load_best_model_at_end = True
    trainer.add_callback(LoadBestAdapter())
    with pytest.raises(ValueError, match="set load_best_model_at_end=False and keep"):
        trainer.train()
    assert not (tmp_path / "run2" / "checkpoint-1").exists()  # stopped before the first step
    trainer = _with_best(plain_trainer(tiny_causal_lm("llama"), tmp_path / "run3", steps=2, save_steps=1))
    trainer.add_callback(LoadBestAdapter())
    with pytest.raises(TypeError, match="wrap the base model with qpeft.get_model"):
        trainer.train()
