"""Presets, sized on the real SmolLM2-135M architecture (built on the meta device: shapes
only, no weights), and the parameter accounting of print_trainable_parameters."""

import pytest
import torch

from qpeft.adapters import PRESETS, get_model, preset
from qpeft.adapters.qtha.layer import QTHALayer


def smollm2_shapes():
    import transformers as tf

    cfg = tf.LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        return tf.LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def lora_count():
    return get_model(smollm2_shapes(), "lora").trainable_parameter_count()


def test_lora_reference_count(lora_count):
    # q_proj 576 -> 576 and v_proj 576 -> 192 (3 KV heads x 64), r = 8, 30 layers
    assert lora_count == 30 * 8 * ((576 + 576) + (576 + 192)) == 460_800


@pytest.mark.parametrize("name", ["qtha-default", "qtha-weights", "qtha-mlp", "mpo"])
def test_qtha_presets_use_at_most_24_percent_of_lora(name, lora_count):
    model = get_model(smollm2_shapes(), name)
    summary = model.parameter_summary()
    assert summary["lora_equivalent"] == lora_count
    assert summary["trainable"] <= 0.24 * lora_count, summary
    assert summary["reduction_vs_lora"] >= 0.76


def test_mlp_control_matches_qnn_parameter_count():
    qnn = get_model(smollm2_shapes(), "qtha-default").trainable_parameter_count()
    mlp = get_model(smollm2_shapes(), "qtha-mlp").trainable_parameter_count()
    n_modules = 60
    r = preset("qtha-mlp").r
    assert abs(qnn - mlp) <= n_modules * 2 * r  # within one hidden unit's rounding per module


def test_weights_preset_is_mergeable_and_default_is_not():
    assert preset("qtha-weights").mergeable and not preset("qtha-default").mergeable
    assert preset("qtha-weights").n_qubits == 6  # r^2 = 64 probabilities


def test_print_trainable_parameters(capsys):
    model = get_model(smollm2_shapes(), "qtha-default")
    summary = model.print_trainable_parameters()
    out = capsys.readouterr().out
    assert f"trainable params: {summary['trainable']:,}" in out
    assert "LoRA (r=8, same targets): 460,800" in out and "reduction vs LoRA" in out
    assert all(isinstance(m, QTHALayer) for m in model.adapter_layers.values())


def test_every_preset_builds():
    for name in PRESETS:
        assert preset(name, r=4).r == 4
