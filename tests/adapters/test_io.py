"""Adapter files on disk: written with the user's umask like every other file (a serving
account in the same group reads them), and no temporary file left behind."""

import os
import stat

import pytest
import torch

from qpeft.adapters import get_model
from qpeft.testing import TINY_TARGETS, tiny_causal_lm


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_adapter_and_exported_lora_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    model = get_model(tiny_causal_lm("llama"), "qtha-weights", r=4, target_modules=TINY_TARGETS["llama"])
    with torch.no_grad():
        for p in model.adapter_state().values():
            p.add_(0.01)
    saved = model.save_pretrained(tmp_path / "adapter")
    exported = model.export_peft_lora(tmp_path / "peft")
    files = sorted([*saved.iterdir(), *exported.iterdir()])
    assert {f.name for f in files} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "model.safetensors.index.json",
    }  # nothing else: no temporary file left
    assert len(files) == 5
    expected = 0o666 & ~mask
    modes = {str(f.relative_to(tmp_path)): oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert modes == dict.fromkeys(modes, oct(expected))


def _adapted(preset: str, seed: int, **overrides):
    torch.manual_seed(seed)
    model = get_model(tiny_causal_lm("llama"), preset, target_modules=TINY_TARGETS["llama"], **overrides)
    with torch.no_grad():
        for p in model.adapter_state().values():
            p.normal_()
    return model


def test_load_weights_copies_a_saved_adapter_in_place(tmp_path):
    source, target = _adapted("qtha-default", 0), _adapted("qtha-default", 1)
    source.save_pretrained(tmp_path / "a")
    target.load_weights(tmp_path / "a")
    mine, theirs = target.adapter_state(), source.adapter_state()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    ids = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(target(input_ids=ids).logits, source(input_ids=ids).logits)


@pytest.mark.parametrize(
    ("other", "what"),
    [(dict(preset="qtha-default", bond_dim=4), "config"), (dict(preset="lora"), "config")],
)
def test_load_weights_refuses_another_adapter_and_changes_nothing(tmp_path, other, what):
    preset = other.pop("preset")
    _adapted(preset, 0, **other).save_pretrained(tmp_path / "other")
    target = _adapted("qtha-default", 1)
    before = {k: v.detach().clone() for k, v in target.adapter_state().items()}
    with pytest.raises(ValueError, match=f"holds another adapter than this model's \\(its {what} differ\\)"):
        target.load_weights(tmp_path / "other")
    assert all(torch.equal(before[k], v) for k, v in target.adapter_state().items())


def test_load_weights_refuses_other_targets_and_a_merged_model(tmp_path):
    narrow = _adapted("lora", 0, r=2)
    get_model(tiny_causal_lm("llama"), "lora", r=2, target_modules=["q_proj"]).save_pretrained(tmp_path / "q-only")
    with pytest.raises(ValueError, match="holds another adapter than this model's \\(its config differ\\)"):
        narrow.load_weights(tmp_path / "q-only")
    narrow.save_pretrained(tmp_path / "same")
    narrow.merge()
    with pytest.raises(ValueError, match="is merged; unmerge\\(\\) before loading"):
        narrow.load_weights(tmp_path / "same")
