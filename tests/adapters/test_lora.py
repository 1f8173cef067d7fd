"""Our LoRA against PEFT's LoRA with the same weights."""

import pytest
import torch

from qpeft.adapters import LoraConfig, get_model
from qpeft.testing import TINY_TARGETS, tiny_causal_lm

peft = pytest.importorskip("peft")


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_lora_equals_peft_lora(kind):
    targets = TINY_TARGETS[kind]
    theirs = peft.get_peft_model(
        tiny_causal_lm(kind),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, fan_in_fan_out=kind == "gpt2"),
    ).eval()
    ours = get_model(tiny_causal_lm(kind), LoraConfig(r=4, alpha=8, target_modules=targets)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, layer in ours.adapter_layers.items():
            peft_layer = theirs.base_model.model.get_submodule(name)
            b = torch.randn(layer.lora_B.shape, generator=g) * 0.1
            layer.lora_B.copy_(b)
            peft_layer.lora_B["default"].weight.copy_(b)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
    ids = torch.randint(0, 96, (2, 10), generator=g)
    with torch.no_grad():
        expected = theirs(input_ids=ids).logits
        got = ours(input_ids=ids).logits
    assert not torch.equal(got, tiny_causal_lm(kind)(input_ids=ids).logits)  # the adapter is active
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    assert ours.trainable_parameter_count() == sum(p.numel() for p in theirs.parameters() if p.requires_grad)


def test_lora_init_matches_peft_distribution():
    """A is Kaiming-uniform(a=sqrt(5)) like PEFT: bound 1/sqrt(d_in); B is zero."""
    model = get_model(tiny_causal_lm("llama"), LoraConfig(r=4, target_modules=["q_proj"]))
    layer = next(iter(model.adapter_layers.values()))
    assert layer.lora_A.abs().max() <= 1 / layer.d_in**0.5
    assert torch.count_nonzero(layer.lora_B) == 0
