"""Bad input gets a clear error, and a failed load leaves the base model untouched."""

import json

import pytest
import torch

from qpeft.adapters import LoraConfig, MPOConfig, QTHAConfig, get_model, load_adapter, preset
from qpeft.adapters.base import AdapterLayer
from qpeft.testing import tiny_causal_lm


def test_target_that_matches_nothing_lists_the_linear_modules():
    with pytest.raises(
        ValueError,
        match=r"matched no Linear module; this model's Linear modules are named: "
        r"down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj",
    ):
        get_model(tiny_causal_lm("llama"), LoraConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="c_attn, c_fc, c_proj"):
        get_model(tiny_causal_lm("gpt2"), LoraConfig(target_modules=["q_proj"]))


def test_regex_targets():
    model = get_model(tiny_causal_lm("llama"), LoraConfig(target_modules=r".*layers\.1\.self_attn\.(q|k)_proj"))
    assert sorted(model.adapter_layers) == [
        "model.layers.1.self_attn.k_proj",
        "model.layers.1.self_attn.q_proj",
    ]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: LoraConfig(r=0), r"`r` must be a positive integer, got 0"),
        (lambda: LoraConfig(r=-2), r"`r` must be a positive integer, got -2"),
        (lambda: LoraConfig(alpha=0), r"`alpha` must be a positive number"),
        (lambda: LoraConfig(dropout=1.0), r"`dropout` must be in \[0, 1\)"),
        (lambda: LoraConfig(target_modules=[]), r"`target_modules` must be a non-empty list"),
        (lambda: LoraConfig(target_modules="(unclosed"), r"`target_modules` is not a valid regex"),
        (lambda: MPOConfig(bond_dim=0), r"`bond_dim` must be a positive integer, got 0"),
        (lambda: MPOConfig(r=8, rank_factors=[3, 3]), r"multiply to 9, not r = 8"),
        (
            lambda: QTHAConfig(r=6, encoding="amplitude"),
            r"amplitude encoding needs r to be a power of two.*r = 8",
        ),
        (lambda: QTHAConfig(r=6, qnn_mode="weights"), r"qnn_mode='weights' needs r to be a power of two"),
        (lambda: QTHAConfig(r=48), r"needs a 48-qubit circuit, beyond the simulator's memory; lower r"),
        (lambda: QTHAConfig(r=8, n_qubits=4), r"`n_qubits` = 4 does not fit r = 8.*must be 8"),
        (lambda: QTHAConfig(fusion="sum"), r"`fusion` must be one of \('linear', 'weighted'\), got 'sum'"),
        (lambda: QTHAConfig(ansatz="qaoa"), r"`ansatz` must be one of"),
        (lambda: preset("qtha-huge"), r"unknown preset 'qtha-huge'; choose one of lora, mpo, qtha-default"),
        (lambda: QTHAConfig(backend="ibmq"), r"`backend` must be one of \('torch', 'shots'"),
        (lambda: QTHAConfig(shots=100), r"`shots` = 100 needs a sampling backend.*backend 'torch' is exact"),
        (lambda: QTHAConfig(backend="shots"), r"backend 'shots' needs `shots`"),
        (lambda: QTHAConfig(backend="shots", shots=64), r"not differentiable by autograd; use diff_method="),
    ],
)
def test_config_validation(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_double_injection_is_refused():
    model = get_model(tiny_causal_lm("llama"), LoraConfig(r=2))
    with pytest.raises(ValueError, match="already carries adapters"):
        get_model(model.get_base_model(), LoraConfig(r=2))


def _saved(tmp_path, kind="llama", **kw):
    model = get_model(tiny_causal_lm(kind), QTHAConfig(r=4, bond_dim=2, **kw))
    model.save_adapter(tmp_path)
    return tmp_path


def _has_adapters(model):
    return any(isinstance(m, AdapterLayer) for m in model.modules())


def test_loading_onto_other_shapes_names_module_and_shapes(tmp_path):
    import transformers as tf

    _saved(tmp_path)
    other = tf.LlamaForCausalLM(
        tf.LlamaConfig(
            hidden_size=48,
            intermediate_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_hidden_layers=2,
            vocab_size=96,
        )
    )
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(
        ValueError,
        match=r"module model\.layers\.0\.self_attn\.q_proj: the adapter was saved for "
        r"shape \(d_in=32, d_out=32\) but the base model has \(d_in=48, d_out=48\)",
    ):
        load_adapter(other, tmp_path)
    assert not _has_adapters(other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_tensor_shape_mismatch_loads_nothing(tmp_path):
    from safetensors.torch import load_file, save_file

    _saved(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    key = next(k for k in tensors if "mpo_A.cores.0" in k)
    tensors[key] = torch.zeros(1, 2, 3, 4)
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    base = tiny_causal_lm("llama")
    with pytest.raises(ValueError, match=r"saved shape \(1, 2, 3, 4\), expected"):
        load_adapter(base, tmp_path)
    assert not _has_adapters(base)


def test_truncated_or_corrupt_files(tmp_path):
    _saved(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    base = tiny_causal_lm("llama")
    with pytest.raises(ValueError, match="adapter_model.safetensors could not be read.*corrupt or truncated"):
        load_adapter(base, tmp_path)
    assert not _has_adapters(base)
    weights.write_bytes(data)
    cfg = tmp_path / "adapter_config.json"
    text = cfg.read_text()
    cfg.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="adapter_config.json is not valid JSON.*corrupt or truncated"):
        load_adapter(tiny_causal_lm("llama"), tmp_path)
    cfg.write_text(json.dumps({"config": {"method": "lora", "r": 0}, "modules": {}}))
    with pytest.raises(ValueError, match="`r` must be a positive integer"):
        load_adapter(tiny_causal_lm("llama"), tmp_path)
    cfg.unlink()
    with pytest.raises(FileNotFoundError, match="no adapter_config.json in"):
        load_adapter(tiny_causal_lm("llama"), tmp_path)


def test_unknown_method_and_fields_in_saved_config(tmp_path):
    _saved(tmp_path)
    cfg = tmp_path / "adapter_config.json"
    meta = json.loads(cfg.read_text())
    meta["config"]["method"] = "dora"
    cfg.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown adapter method 'dora'; choose one of lora, mpo, qtha"):
        load_adapter(tiny_causal_lm("llama"), tmp_path)
    meta["config"]["method"] = "qtha"
    meta["config"]["wormholes"] = 3
    cfg.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"unknown qtha config field\(s\) \['wormholes'\]"):
        load_adapter(tiny_causal_lm("llama"), tmp_path)


def test_a_peft_directory_or_a_newer_format_is_named(tmp_path):
    model = get_model(tiny_causal_lm("llama"), LoraConfig(r=2))
    model.export_peft_lora(tmp_path / "peft")
    base = tiny_causal_lm("llama")
    with pytest.raises(ValueError, match=r"is a PEFT adapter \(LORA\), not a qpeft one; .*PeftModel.from_pretrained"):
        load_adapter(base, tmp_path / "peft")
    assert not _has_adapters(base)
    _saved(tmp_path / "new")
    cfg = tmp_path / "new" / "adapter_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99, newer than this qpeft reads.*upgrade qpeft"):
        load_adapter(base, tmp_path / "new")


def test_format_1_adapters_still_load(tmp_path):
    """Format 1 named tensors after the base model's modules, without the wrapper's prefix."""
    from safetensors.torch import load_file, save_file

    model = get_model(tiny_causal_lm("llama"), LoraConfig(r=2))
    with torch.no_grad():
        for p in model.adapter_state().values():
            p.add_(0.05)
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    save_file({k.removeprefix("model."): v for k, v in tensors.items()}, tmp_path / "adapter_model.safetensors")
    cfg = tmp_path / "adapter_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "format_version": 1}))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(
            load_adapter(tiny_causal_lm("llama"), tmp_path)(input_ids=ids).logits, model(input_ids=ids).logits
        )


def test_train_target_modules_flag():
    import argparse

    from qpeft.cli import add_train_flags, config_from_args
    from qpeft.train import TrainConfig, adapter_config

    parser = argparse.ArgumentParser()
    add_train_flags(parser)
    config = config_from_args(parser.parse_args(["--method", "lora", "--target-modules", "all-linear"]))
    assert adapter_config(config).target_modules == "all-linear"

    assert adapter_config(TrainConfig(method="lora", target_modules="q_proj, k_proj")).target_modules == [
        "q_proj",
        "k_proj",
    ]
    assert adapter_config(TrainConfig(method="lora", target_modules="all-linear")).target_modules == "all-linear"
    assert adapter_config(TrainConfig(method="lora")).target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="`target_modules` must be a non-empty list"):
        adapter_config(TrainConfig(method="lora", target_modules=" , "))
