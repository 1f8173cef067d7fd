"""Model specs: the bundled SmolLM2 (GGUF -> cached safetensors), local directories, and the
errors for specs that cannot be resolved offline."""

import pytest
import torch

from qpeft import models
from qpeft.models import BUILTIN, BuiltinModel, load_model


def test_bundled_smollm2_loads_from_the_cache():
    pytest.importorskip("gguf")
    model, tokenizer = load_model("smollm2-135m")  # first use dequantises the GGUF and caches it
    cached = models.cache_dir() / "smollm2-135m"
    assert (cached / "config.json").is_file() and (cached / "model.safetensors").is_file()
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert model.config.num_key_value_heads == 3 and model.dtype == torch.float32
    assert tokenizer.chat_template and tokenizer.pad_token is not None
    again, _ = load_model("smollm2-135m")  # from the safetensors cache, no GGUF parsing
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        a = model(**ids).logits
        b = again(**ids).logits
    assert torch.equal(a, b)
    answer = tokenizer.decode(again.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1] :])
    assert "5" in answer  # the dequantised weights are the real model, not noise


def test_local_directory(tmp_path):
    from qpeft.testing import tiny_model_dir

    tiny_model_dir(tmp_path / "m")
    model, tokenizer = load_model(str(tmp_path / "m"))
    assert model.config.vocab_size == 128 and tokenizer.pad_token == "<pad>"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_model(str(tmp_path / "empty"))


def test_specs_that_cannot_be_resolved_offline(monkeypatch):
    with pytest.raises(FileNotFoundError, match="could not load model 'no-such-org/no-such-model' offline"):
        load_model("no-such-org/no-such-model")
    with pytest.raises(FileNotFoundError, match="model path ./nowhere.gguf does not exist"):
        load_model("./nowhere.gguf")
    monkeypatch.setitem(BUILTIN, "fake-model", BuiltinModel("qpeft_no_such_package", "x.gguf", "pip install fake"))
    with pytest.raises(FileNotFoundError, match="needs the package qpeft_no_such_package: pip install fake"):
        load_model("fake-model")
