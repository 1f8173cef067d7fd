"""Presets, sized on the real SmolLM2-135M architecture (built on the meta device: shapes
only, no weights), and the parameter accounting of print_trainable_parameters."""

import pytest
import torch

from qpeft.adapters import PRESETS, get_model, preset
from qpeft.adapters.qtha.layer import QTHALayer


def smollm2_shapes():
    """SmolLM2-135M's Llama config; build it under ``torch.device("meta")`` for shapes only."""
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


# Trainable parameters per preset on SmolLM2-135M, derived by hand. Targets: q_proj 576 -> 576
# and v_proj 576 -> 192 in each of 30 layers (60 modules). MPO with 2 cores, D = 6, r = 8:
# 576 = 24 x 24, 192 = 16 x 12, r = 4 x 2; a core is (D_prev, i, j, D_next), D = min(6, ...) = 6.
_A = 24 * 4 * 6 + 6 * 24 * 2  # 576 -> 8: 864
_B_Q = 4 * 24 * 6 + 6 * 2 * 24  # 8 -> 576: 864
_B_V = 4 * 16 * 6 + 6 * 2 * 12  # 8 -> 192: 528
_MPO = 30 * (2 * _A + _B_Q + _B_V)  # 93,600
_MODULES = 60
EXPECTED = {
    "lora": 30 * 8 * ((576 + 576) + (576 + 192)),
    "mpo": _MPO,
    # hardware_efficient: 2 angles per qubit per layer, 2 layers; gamma: r = 8 per module
    "qtha-default": _MPO + _MODULES * (2 * 3 * 2 + 8),  # 3 qubits (amplitude-encoded r = 8)
    "qtha-angle": _MPO + _MODULES * (2 * 8 * 2 + 8),  # 8 qubits
    "qtha-weights": _MPO + _MODULES * (2 * 6 * 2),  # 6 qubits (r^2 = 64 probabilities), no gamma
    # MLP r -> hidden -> r with hidden = round(12 / (8 + 8)) = 1, plus gamma
    "qtha-mlp": _MPO + _MODULES * (8 * 1 + 1 * 8 + 8),
    "qtha-none": _MPO,
}


def test_the_expected_counts_cover_every_preset():
    assert set(EXPECTED) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_on_smollm2_shapes(name):
    with torch.device("meta"):
        model = get_model(smollm2_shapes(), name)
    method = PRESETS[name][0]
    assert len(model.adapter_layers) == _MODULES
    assert all(layer.config.method == method for layer in model.adapter_layers.values())
    assert model.trainable_parameter_count() == EXPECTED[name]
