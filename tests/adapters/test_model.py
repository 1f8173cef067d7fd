"""QPeftModel keeps PEFT habits: deepcopy / pickle, save_pretrained / from_pretrained (adapter
only), a config that PEFT refuses with a pointer to qpeft, disable_adapter(), all-linear targets."""

import copy
import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from qpeft.adapters import QPeftModel, get_model, load_adapter
from qpeft.testing import TINY_TARGETS, TOL, tiny_causal_lm

PRESETS = ["lora", "qtha-default", "qtha-weights"]


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(seed))


def _perturbed(preset: str) -> QPeftModel:
    """An adapted tiny Llama whose adapter is not a no-op (every adapter tensor perturbed)."""
    model = get_model(tiny_causal_lm("llama"), preset, r=4, target_modules=TINY_TARGETS["llama"])
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.adapter_state().values():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _step(model) -> None:
    """One SGD step on the adapter."""
    model.train()
    ids = _ids(5)
    model(input_ids=ids, labels=ids).loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
                p.grad = None
    model.eval()


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("clone", ["deepcopy", "pickle"])
def test_copies_are_independent_and_equal(preset, clone):
    model = _perturbed(preset)
    ids = _ids()
    before = _logits(model, ids)
    copied = copy.deepcopy(model) if clone == "deepcopy" else pickle.loads(pickle.dumps(model))
    assert torch.equal(_logits(copied, ids), before)
    originals = {id(p) for p in model.parameters()}
    assert not any(id(p) in originals for p in copied.parameters())
    # the copy's layers are the ones inside the copy's base model, not the original's
    for name, layer in copied.adapter_layers.items():
        assert copied.get_base_model().get_submodule(name) is layer
    _step(copied)
    assert torch.equal(_logits(model, ids), before)  # training the copy leaves the original alone
    assert not torch.equal(_logits(copied, ids), before)


@pytest.mark.parametrize("preset", PRESETS)
def test_save_pretrained_writes_the_adapter_only_and_reloads_equal(preset, tmp_path):
    model = _perturbed(preset)
    ids = _ids()
    expected = _logits(model, ids)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert set(saved) == set(model.adapter_state())
    base_names = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert base_names and not base_names & set(saved)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == dict.fromkeys(saved, "adapter_model.safetensors")

    trainable = QPeftModel.from_pretrained(tiny_causal_lm("llama"), tmp_path, is_trainable=True)
    assert all(p.requires_grad for p in trainable.adapter_state().values())
    assert torch.equal(_logits(trainable, ids), expected)
    assert torch.equal(_logits(load_adapter(tiny_causal_lm("llama"), tmp_path), ids), expected)
    # as with PEFT, from_pretrained loads for inference unless is_trainable (a frozen QNN may take
    # another simulation path: equal to float error)
    restored = QPeftModel.from_pretrained(tiny_causal_lm("llama"), tmp_path)
    assert not any(p.requires_grad for p in restored.parameters())
    torch.testing.assert_close(_logits(restored, ids), expected, **TOL[torch.complex64])


def test_adapter_config_is_marked_and_peft_refuses_it_with_a_pointer_to_qpeft(tmp_path):
    peft = pytest.importorskip("peft")
    _perturbed("lora").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["format"] == "qpeft" and config["format_version"] == 2
    with pytest.raises(KeyError, match=r"qpeft\.load_adapter.*qpeft export"):
        peft.PeftModel.from_pretrained(tiny_causal_lm("llama"), str(tmp_path))


@pytest.mark.parametrize("preset", PRESETS)
def test_disable_adapter_gives_the_base_model_then_restores(preset):
    ids = _ids()
    plain = _logits(tiny_causal_lm("llama"), ids)
    model = _perturbed(preset)
    adapted = _logits(model, ids)
    assert not torch.equal(adapted, plain)
    with model.disable_adapter():
        assert torch.equal(_logits(model, ids), plain)
    assert torch.equal(_logits(model, ids), adapted)
    with pytest.raises(RuntimeError), model.disable_adapter():  # restored after an error too
        raise RuntimeError
    assert torch.equal(_logits(model, ids), adapted)


def test_disable_adapter_refuses_a_merged_adapter():
    model = _perturbed("lora")
    model.merge()
    with pytest.raises(ValueError, match="unmerge"), model.disable_adapter():
        pass


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_all_linear_targets_every_linear_layer_but_the_output_layer(kind):
    base = tiny_causal_lm(kind)
    linear = {n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"}
    model = get_model(base, "lora", r=2, target_modules="all-linear")
    assert "lm_head" in linear and set(model.adapter_layers) == linear - {"lm_head"}


def test_forward_signature_keeps_the_columns_trainer_needs(tmp_path):
    """Trainer drops dataset columns that the model's forward does not name."""
    datasets = pytest.importorskip("datasets")
    import transformers as tf

    rows = [{"input_ids": ids, "attention_mask": [1] * 10, "labels": ids, "text": "x"} for ids in _ids().tolist()]
    model = get_model(tiny_causal_lm("llama"), "lora", r=2, target_modules=TINY_TARGETS["llama"])
    args = tf.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = tf.Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows))
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}


def test_save_pretrained_takes_the_tensors_trainer_passes_and_writes_on_the_main_process_only(tmp_path):
    """Trainer passes a gathered ``state_dict`` (sharded models) and ``is_main_process``."""
    model = _perturbed("lora")
    state = {k: v + 1 for k, v in model.state_dict().items()}
    model.save_pretrained(tmp_path / "other", state_dict=state, is_main_process=False)
    assert not (tmp_path / "other").exists()
    model.save_pretrained(tmp_path / "main", state_dict=state)
    saved = load_file(tmp_path / "main" / "adapter_model.safetensors")
    assert set(saved) == set(model.adapter_state())
    assert all(torch.equal(saved[k], state[k]) for k in saved)
