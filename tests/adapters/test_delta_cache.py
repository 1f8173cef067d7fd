"""The delta cache (adapters/base.py): in no-grad forwards a mergeable adapter's factors, and
activation-mode QTHA's fixed parts (both MPO factors, the folded amplitude-encoded circuit), are
computed once and reused; the cached forward equals the uncached one, and every way the weights
change (an optimizer step, fused or not; load_state_dict; load_adapter; .to(); merge / unmerge;
a swapped QTHA backend) gives the new delta, never a stale one."""

import copy

import pytest
import torch

from qpeft.adapters import get_model, load_adapter
from qpeft.adapters.base import AdapterLayer
from qpeft.backends import get_backend
from qpeft.testing import TINY_TARGETS, tiny_causal_lm

MERGEABLE = ["lora", "mpo", "qtha-weights", "qtha-none"]
#: activation mode, not linear in x: the cache holds A, scaling * B, gamma and the folded circuit
ACTIVATION = {
    "qtha-default": {},
    "qtha-default-weighted-fusion": {"fusion": "weighted"},
    "qtha-mlp": {},
}
#: the cached path contracts the factors first: the same numbers summed in another order
CACHE_TOL = {"atol": 1e-5, "rtol": 1e-5}


def _ids(seed=0):
    return torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(seed))


def _model(preset, **overrides):
    preset = preset.removesuffix("-weighted-fusion")
    model = get_model(tiny_causal_lm("llama"), preset, r=4, target_modules=TINY_TARGETS["llama"], **overrides)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.adapter_state().values():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return model.eval()


def _cached(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _uncached(model, ids):
    """With gradients on, every forward computes the delta anew (the training path)."""
    with torch.enable_grad():
        return model(input_ids=ids).logits.detach()


@pytest.fixture
def factor_calls(monkeypatch):
    """How often each layer class computes its factors (the real method runs)."""
    calls = []
    for cls in {type(layer) for preset in MERGEABLE for layer in _model(preset).adapter_layers.values()}:
        real = cls.delta_factors

        def counted(self, real=real):
            calls.append(self)
            return real(self)

        monkeypatch.setattr(cls, "delta_factors", counted)
    return calls


@pytest.mark.parametrize("preset", MERGEABLE)
def test_cached_forward_equals_uncached_and_computes_factors_once(preset, factor_calls):
    model, ids = _model(preset), _ids()
    expected = _uncached(model, ids)
    assert not factor_calls  # the training path never builds the factors
    torch.testing.assert_close(_cached(model, ids), expected, **CACHE_TOL)
    torch.testing.assert_close(_cached(model, _ids(1)), _uncached(model, _ids(1)), **CACHE_TOL)
    with torch.no_grad():
        model.generate(input_ids=ids[:1], max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert len(factor_calls) == len(model.adapter_layers)  # once per module, for all these forwards
    with model.disable_adapter():
        assert not torch.allclose(expected, _cached(model, ids), **CACHE_TOL)  # the adapter does something


def _logits_after(model, change, ids):
    """(cached logits after ``change(model)``, uncached logits after it)."""
    _cached(model, ids)  # fill the cache
    change(model)
    return _cached(model, ids), _uncached(model, ids)


def _adam_step(fused):
    def step(model):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=0.05, fused=fused, foreach=None if fused else False)
        model(input_ids=_ids(2), labels=_ids(2)).loss.backward()
        optimizer.step()
        model.eval()

    return step


def _load_state(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.adapter_state().values():
            p.mul_(-1.5)
    model.load_state_dict(other.state_dict())


def _to_double_and_back(model):
    model.double()
    _cached(model, _ids())  # cache the float64 factors
    model.float()


def _merge_unmerge_then_step(model):
    model.merge()
    _cached(model, _ids())
    model.unmerge()
    _adam_step(fused=False)(model)


CHANGES = {
    "adamw": _adam_step(fused=False),
    "fused-adamw": _adam_step(fused=True),  # updates in place without bumping version counters
    "load_state_dict": _load_state,
    "to-double-and-back": _to_double_and_back,
    "merge-unmerge-step": _merge_unmerge_then_step,
}


@pytest.mark.parametrize(
    "change, preset",
    [(c, "qtha-weights") for c in CHANGES] + [(c, "qtha-default") for c in CHANGES if "merge" not in c],
)
def test_a_weight_change_invalidates_the_cache(change, preset):
    model, ids = _model(preset), _ids()
    before = _cached(model, ids)
    cached, fresh = _logits_after(model, CHANGES[change], ids)
    torch.testing.assert_close(cached, fresh, **CACHE_TOL)
    if change != "to-double-and-back":
        assert not torch.allclose(before, fresh, **CACHE_TOL)  # the change did change the delta


def test_load_adapter_and_a_copy_use_their_own_weights(tmp_path):
    model, ids = _model("mpo"), _ids()
    _cached(model, ids)
    model.save_pretrained(tmp_path / "a")
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for p in copied.adapter_state().values():
            p.mul_(2.0)
    torch.testing.assert_close(_cached(copied, ids), _uncached(copied, ids), **CACHE_TOL)
    restored = load_adapter(tiny_causal_lm("llama"), tmp_path / "a").eval()
    torch.testing.assert_close(_cached(restored, ids), _cached(model, ids), **CACHE_TOL)


@pytest.mark.parametrize("preset", ["qtha-weights", "qtha-default"])
def test_a_swapped_qtha_backend_gives_its_own_delta(preset):
    model, ids = _model(preset), _ids()
    exact = _cached(model, ids)
    layers = list(model.adapter_layers.values())
    noisy = get_backend("noisy", noise={"depolarizing": 0.2})  # as emulate.evaluate_on_device swaps them
    for layer in layers:
        layer.qnn.backend = noisy
    cached, fresh = _cached(model, ids), _uncached(model, ids)
    torch.testing.assert_close(cached, fresh, **CACHE_TOL)
    assert not torch.allclose(cached, exact, **CACHE_TOL)


@pytest.mark.parametrize("name", ACTIVATION)
def test_activation_qtha_caches_its_fixed_parts(name, monkeypatch):
    model, ids = _model(name, **ACTIVATION[name]), _ids()
    layers = list(model.adapter_layers.values())
    calls = []
    real = type(layers[0]).cache_contents
    monkeypatch.setattr(type(layers[0]), "cache_contents", lambda self: calls.append(self) or real(self))
    expected = _uncached(model, ids)
    assert not calls
    torch.testing.assert_close(_cached(model, ids), expected, **CACHE_TOL)
    torch.testing.assert_close(_cached(model, _ids(1)), _uncached(model, _ids(1)), **CACHE_TOL)
    with torch.no_grad():
        assert all(layer.uses_delta_cache() for layer in layers)
        cached = model.generate(input_ids=ids[:1], max_new_tokens=6, do_sample=False, pad_token_id=0)
        with _no_cache(layers):
            fresh = model.generate(input_ids=ids[:1], max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(cached, fresh)
    assert len(calls) == len(layers)  # once per module, for all these forwards
    with model.disable_adapter():
        assert not torch.allclose(expected, _cached(model, ids), **CACHE_TOL)  # the adapter does something


class _no_cache:
    """Within: every forward computes the delta anew (as benchmarks/generation.py's uncached rows)."""

    def __init__(self, layers):
        self.layers = layers

    def __enter__(self):
        for layer in self.layers:
            layer.uses_delta_cache = lambda: False

    def __exit__(self, *exc):
        for layer in self.layers:
            del layer.uses_delta_cache


@pytest.mark.parametrize(
    "backend",
    [None, get_backend("shots", shots=100, seed=0), get_backend("noisy", noise={"depolarizing": 0.1})],
    ids=["angle-encoded", "shots", "noisy"],
)
def test_activation_qtha_circuits_that_do_not_fold_are_run_per_token(backend):
    """An angle-encoded circuit reads each token's features in its gates; a sampling or noisy
    backend is not the exact statevector: these run the circuit per token, as before."""
    model = _model("qtha-angle") if backend is None else _model("qtha-default")
    for layer in model.adapter_layers.values():
        if backend is not None:
            layer.qnn.backend = backend
    with torch.no_grad():
        assert not any(layer.uses_delta_cache() for layer in model.adapter_layers.values())
    if backend is None:
        torch.testing.assert_close(_cached(model, _ids()), _uncached(model, _ids()), **CACHE_TOL)


def test_sampling_backends_and_dropout_in_training_are_not_cached():
    model = _model("qtha-weights")
    for layer in model.adapter_layers.values():
        layer.qnn.backend = get_backend("shots", shots=100, seed=0)
    with torch.no_grad():
        assert not any(layer.uses_delta_cache() for layer in model.adapter_layers.values())
    lora = get_model(tiny_causal_lm("llama"), "lora", r=4, dropout=0.1, target_modules=TINY_TARGETS["llama"])
    layer = next(iter(lora.adapter_layers.values()))
    assert isinstance(layer, AdapterLayer)
    with torch.no_grad():
        assert layer.train().uses_delta_cache() is False and layer.eval().uses_delta_cache() is True


#: tolerances below the rounding the cached path used to add (one extra rounding per layer in
#: half precision; float32 features on a complex128 simulator), above zero
EXACT_PATH_TOL = {
    torch.bfloat16: {"atol": 1e-3, "rtol": 0},
    torch.float16: {"atol": 1e-4, "rtol": 0},
    torch.float64: {"atol": 1e-12, "rtol": 0},
}


@pytest.mark.parametrize(
    "name, dtype, options",
    [
        ("qtha-default", torch.bfloat16, {}),
        ("qtha-default", torch.float16, {}),
        ("qtha-default-weighted-fusion", torch.bfloat16, {}),
        ("qtha-mlp", torch.bfloat16, {}),
        ("qtha-default", torch.float64, {"dtype": "complex128"}),
    ],
)
def test_activation_qtha_cache_rounds_as_the_uncached_forward(name, dtype, options):
    """Half-precision models round h + gamma q as the uncached forward does (no fused addcmul),
    and the circuit reads the float32 features the uncached forward gives it, also on a
    complex128 simulator: the cached logits are the uncached ones, not one rounding apart."""
    overrides = dict(ACTIVATION[name], backend_options=options) if options else ACTIVATION[name]
    model, ids = _model(name, **overrides).to(dtype), _ids()
    with torch.no_grad():
        assert all(layer.uses_delta_cache() for layer in model.adapter_layers.values())
    torch.testing.assert_close(_cached(model, ids), _uncached(model, ids), **EXACT_PATH_TOL[dtype])


def test_a_swapped_exact_backend_of_another_precision_gives_its_own_delta():
    """Activation mode keys its folded circuit by the backend too: an exact simulator of
    another precision swapped in (as emulate.evaluate_on_device does) is folded anew."""
    model, ids = _model("qtha-default").double(), _ids()
    _cached(model, ids)  # the complex64 readouts
    precise = get_backend("torch", dtype="complex128")
    for layer in model.adapter_layers.values():
        layer.qnn.backend = precise
    torch.testing.assert_close(_cached(model, ids), _uncached(model, ids), **EXACT_PATH_TOL[torch.float64])


@pytest.mark.parametrize("preset", ["qtha-default", "qtha-mlp", "qtha-weights", "mpo"])
def test_a_cache_filled_under_autocast_serves_a_full_precision_forward(preset):
    """An evaluation under torch.autocast (a Trainer with bf16=True on a float32 model) fills
    the cache; a later plain forward (generate) uses it: the cached contents are computed in the
    weights' own precision, not in autocast's (which crashed activation mode on mixed dtypes
    and left the mergeable factors rounded to bfloat16)."""
    model, ids = _model(preset), _ids()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids)
    torch.testing.assert_close(_cached(model, ids), _uncached(model, ids), **CACHE_TOL)


def test_a_step_runner_keeps_no_grad_forwards_on_its_jobs(tmp_path):
    """A weights-mode module routed through a job-engine step runner runs its circuit there in
    evaluation too: the in-process delta cache must not stand in for the runner's results."""
    from torch import nn

    from qpeft.adapters.presets import preset
    from qpeft.adapters.qtha.layer import QTHALayer
    from qpeft.jobs import JobEngine, LocalProvider
    from qpeft.jobs.step import StepRunner
    from qpeft.jobs.summary import totals

    layer = QTHALayer(nn.Linear(16, 16), preset("qtha-weights", r=4, diff_method="parameter_shift")).eval()
    engine = JobEngine(LocalProvider("torch"), tmp_path, poll_interval=0.001, max_poll_interval=0.004, progress=False)
    with StepRunner(engine, 1000, "parameter_shift") as runner:
        assert runner.attach(nn.ModuleList([layer])) == 1
        with torch.no_grad():
            assert not layer.uses_delta_cache()
            layer(torch.randn(2, 16))
    assert totals(engine.ledger.records)["circuits"] == 1
    assert layer._delta_cache is None
