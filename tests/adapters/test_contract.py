"""One contract for every adapter method and mode, on tiny random Llama, Qwen2 and GPT-2."""

import copy

import pytest
import torch

from qpeft.adapters import LoraConfig, MPOConfig, QPeftModel, QTHAConfig, get_model, load_adapter
from qpeft.adapters.base import AdapterLayer
from qpeft.testing import TINY_TARGETS, tiny_causal_lm

METHODS = {
    "lora": lambda t: LoraConfig(r=4, alpha=8, target_modules=t),
    "mpo": lambda t: MPOConfig(r=4, alpha=8, bond_dim=3, target_modules=t),
    "qtha-linear": lambda t: QTHAConfig(r=4, alpha=8, bond_dim=3, target_modules=t),
    "qtha-weighted": lambda t: QTHAConfig(r=4, alpha=8, bond_dim=3, fusion="weighted", target_modules=t),
    "qtha-amplitude": lambda t: QTHAConfig(r=4, alpha=8, bond_dim=3, encoding="amplitude", target_modules=t),
    "qtha-weights": lambda t: QTHAConfig(r=4, alpha=8, bond_dim=3, qnn_mode="weights", target_modules=t),
    "qtha-mlp": lambda t: QTHAConfig(r=4, alpha=8, bond_dim=3, branch="mlp", target_modules=t),
    "qtha-weights-mlp": lambda t: QTHAConfig(
        r=4, alpha=8, bond_dim=3, qnn_mode="weights", branch="mlp", target_modules=t
    ),
    "qtha-none": lambda t: QTHAConfig(r=4, alpha=8, bond_dim=3, branch="none", target_modules=t),
}
#: the linear adapters (merge, merge_and_unload and the PEFT export take them); the others apply
#: a circuit or an MLP to each token's features
MERGEABLE = {"lora", "mpo", "qtha-weights", "qtha-weights-mlp", "qtha-none"}
MODELS = ["llama", "qwen2", "gpt2"]
CASES = [(m, k) for m in METHODS for k in MODELS]
IDS = [f"{m}-{k}" for m, k in CASES]


def _tokens(seed=0):
    return torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(seed))


def _adapted(method, kind, dtype=torch.float32, seed=0):
    base = tiny_causal_lm(kind, seed=seed, dtype=dtype)
    return get_model(base, METHODS[method](TINY_TARGETS[kind]))


def _train(model, steps=2, lr=1e-2, optimizer=torch.optim.Adam, device="cpu"):
    """A few optimizer steps (Adam unless told) on the LM loss (moves every factor off its init)."""
    model.train()
    opt = optimizer([p for p in model.parameters() if p.requires_grad], lr=lr)
    ids = _tokens(1).to(device)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


@pytest.mark.parametrize("method,kind", CASES, ids=IDS)
def test_fresh_adapter_is_exact_noop_and_only_adapters_train(method, kind):
    ids = _tokens()
    base = tiny_causal_lm(kind)
    with torch.no_grad():
        before = base(input_ids=ids).logits
    model = get_model(base, METHODS[method](TINY_TARGETS[kind]))
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".base_layer." not in n for n in trainable)
    adapter_names = {
        f"model.{name}.{p}" for name, layer in model.adapter_layers.items() for p in layer.adapter_parameters()
    }
    assert set(trainable) == adapter_names


@pytest.mark.parametrize("method,kind", CASES, ids=IDS)
def test_every_trainable_tensor_changes(method, kind):
    model = _adapted(method, kind)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    # The zero-initialised last factor gives every other factor a zero gradient in step 1,
    # so "every tensor moves" needs two steps.
    _train(model, steps=2)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, start[n]), f"{n} did not change"


@pytest.mark.parametrize("method,kind", CASES, ids=IDS)
def test_save_load_round_trip_is_exact(method, kind, tmp_path):
    model = _train(_adapted(method, kind))
    ids = _tokens(2)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    model.save_adapter(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "model.safetensors.index.json",
    }
    from safetensors.torch import load_file

    assert all(".base_layer." not in k for k in load_file(tmp_path / "adapter_model.safetensors"))
    restored = load_adapter(tiny_causal_lm(kind), tmp_path)
    with torch.no_grad():
        assert torch.equal(restored(input_ids=ids).logits, expected)


DEEP_LAYERS = 12  # module names sort lexically as layers.0, layers.1, layers.10, layers.11, layers.2, ...


def _perturbed(model, seed):
    """Every adapter tensor moved off its init to seeded random values, different in every module."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_state().values():
            p.copy_(p + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


@pytest.mark.parametrize("method", list(METHODS))
def test_deep_model_loads_every_tensor_into_its_own_module(method, tmp_path):
    """On a 12-layer model with all-linear targets, model order and sorted names disagree and
    many modules share a shape: a loader that pairs them by position fills the wrong modules."""
    model = _perturbed(get_model(tiny_causal_lm("llama", n_layers=DEEP_LAYERS), METHODS[method]("all-linear")), 7)
    names = list(model.adapter_layers)
    assert len(names) == 7 * DEEP_LAYERS and names != sorted(names)
    ids = _tokens(4)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    for load in (load_adapter, QPeftModel.from_pretrained):
        restored = load(tiny_causal_lm("llama", n_layers=DEEP_LAYERS), tmp_path).eval()
        assert list(restored.adapter_layers) == names
        for name, layer in model.adapter_layers.items():
            own = restored.adapter_layers[name].adapter_parameters()
            for pname, p in layer.adapter_parameters().items():
                assert torch.equal(own[pname], p), f"{load.__name__}: {name}.{pname} differs"
        with torch.no_grad():
            assert torch.equal(restored(input_ids=ids).logits, expected)


@pytest.mark.parametrize("method,kind", CASES, ids=IDS)
def test_merge_unmerge_and_peft_export(method, kind, tmp_path):
    model = _train(_adapted(method, kind))
    ids = _tokens(3)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    assert model.adapter_config.mergeable == (method in MERGEABLE)
    if not model.adapter_config.mergeable:
        with pytest.raises(ValueError, match="not linear in x"):
            model.merge()
        with pytest.raises(ValueError, match="cannot export as LoRA"):
            model.export_peft_lora(tmp_path)
        return
    model.merge()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)
    model.unmerge()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)

    peft = pytest.importorskip("peft")
    model.export_peft_lora(tmp_path)
    served = peft.PeftModel.from_pretrained(tiny_causal_lm(kind), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(served(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)

    merged = model.merge_and_unload()
    assert not any(isinstance(m, AdapterLayer) for m in merged.modules())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", list(METHODS))
def test_bf16(method):
    ids = _tokens()
    base = tiny_causal_lm("llama", dtype=torch.bfloat16)
    with torch.no_grad():
        before = base(input_ids=ids).logits
    model = get_model(base, METHODS[method](TINY_TARGETS["llama"]))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    _train(model, steps=2)
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all() and not torch.equal(out, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("method", list(METHODS))
def test_cuda(method, tmp_path):
    """On the GPU every method trains, evaluates (the cached no-grad path and the uncached one),
    saves, loads, merges and generates like on the CPU: the same logits within fp32 rounding."""
    cpu_model = _adapted(method, "llama")
    gpu_model = copy.deepcopy(cpu_model).cuda()
    assert all(p.device.type == "cuda" for p in gpu_model.parameters())
    # plain SGD: an update proportional to the gradient, so a CPU and a CUDA run that agree on the
    # gradient agree on the weights (Adam's first steps amplify rounding)
    _train(cpu_model, lr=0.1, optimizer=torch.optim.SGD)
    _train(gpu_model, lr=0.1, optimizer=torch.optim.SGD, device="cuda")
    ids = _tokens()
    with torch.no_grad():
        expected = cpu_model(input_ids=ids).logits
        cached = gpu_model(input_ids=ids.cuda()).logits
        again = gpu_model(input_ids=ids.cuda()).logits
    uncached = gpu_model(input_ids=ids.cuda()).logits.detach()  # gradients on: no delta cache
    assert cached.device.type == "cuda" and torch.isfinite(cached).all()
    torch.testing.assert_close(cached.cpu(), expected, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(again, cached, atol=0, rtol=0)
    torch.testing.assert_close(uncached, cached, atol=1e-5, rtol=1e-5)

    gpu_model.save_adapter(tmp_path)
    restored = load_adapter(tiny_causal_lm("llama").cuda(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(restored(input_ids=ids.cuda()).logits, cached, atol=1e-5, rtol=1e-5)
        out = gpu_model.generate(input_ids=ids[:1].cuda(), max_new_tokens=4, do_sample=False)
    assert out.device.type == "cuda" and out.shape == (1, ids.shape[1] + 4)

    # bf16 autocast, as Trainer(bf16=True) runs it on a GPU: a step and a forward stay finite
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu_model.train()
        loss = gpu_model(input_ids=ids.cuda(), labels=ids.cuda()).loss
        loss.backward()
        gpu_model.eval()
        with torch.no_grad():
            assert torch.isfinite(gpu_model(input_ids=ids.cuda()).logits).all()
    assert torch.isfinite(loss)

    if method in MERGEABLE:
        gpu_model.zero_grad()
        with torch.no_grad():
            before = gpu_model(input_ids=ids.cuda()).logits
            gpu_model.merge()
            torch.testing.assert_close(gpu_model(input_ids=ids.cuda()).logits, before, atol=1e-4, rtol=1e-4)
