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
