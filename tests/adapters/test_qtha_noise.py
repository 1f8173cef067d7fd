"""QTHA on the noisy backend: the configured noise reaches the circuit (by the amount its
closed form predicts), a noiseless 'noisy' backend is refused, backend options are checked,
and both fields survive a save / load."""

import json

import pytest
import torch
from torch import nn

from qpeft.adapters import QTHAConfig, get_model, load_adapter, save_adapter
from qpeft.adapters.qtha.layer import QTHALayer
from qpeft.adapters.registry import config_from_dict
from qpeft.quantum import probabilities, simulate
from qpeft.testing import TOL, tiny_causal_lm

P01, P10 = 0.1, 0.05  # readout: 0 read as 1, 1 read as 0


def _layer(seed=0, **fields) -> QTHALayer:
    torch.manual_seed(seed)
    config = QTHAConfig(r=4, bond_dim=2, backend="noisy", noise={"readout_p01": P01, "readout_p10": P10}, **fields)
    layer = QTHALayer(nn.Linear(16, 12), config)
    with torch.no_grad():  # angles far from the init, so every basis state has weight
        layer.qnn.weights.uniform_(-3, 3, generator=torch.Generator().manual_seed(seed))
    return layer


def _readout_confusion(probs: torch.Tensor, n: int) -> torch.Tensor:
    """Closed form: each wire's bit flips independently, P(read b | true a) = R[b, a]."""
    r = torch.tensor([[1 - P01, P10], [P01, 1 - P10]], dtype=probs.dtype)
    p = probs.reshape((-1,) + (2,) * n)
    for w in range(n):
        p = (p.movedim(w + 1, -1) @ r.T).movedim(-1, w + 1)  # sum_a R[b, a] p[..., a, ...]
    return p.reshape(probs.shape)


def test_readout_noise_changes_the_weights_mode_probabilities_by_its_closed_form():
    layer = _layer(qnn_mode="weights")
    qnn = layer.qnn
    n = qnn.circuit.n_qubits
    with torch.no_grad():
        noisy = qnn()  # (2^n,) probabilities
        ideal = probabilities(simulate(qnn.circuit, None, qnn.weights)).reshape(-1)
    expected = _readout_confusion(ideal, n)
    torch.testing.assert_close(noisy, expected, **TOL[torch.complex64])
    assert (noisy - ideal).abs().max() > 0.01  # the noise is not negligible here


def test_readout_noise_changes_the_angle_mode_z_by_its_closed_form():
    layer = _layer(encoding="angle")
    qnn = layer.qnn
    h = torch.rand(5, 4, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        noisy = qnn(h)  # (5, 4) <Z> per wire
        probs = probabilities(simulate(qnn.circuit, h, qnn.weights))  # (5, 16), noiseless
    bits = (torch.arange(16).unsqueeze(1) >> torch.arange(3, -1, -1)) & 1  # (16, 4), wire 0 most significant
    z = probs @ (1 - 2 * bits).to(probs.dtype)  # noiseless <Z> per wire
    # P'(0) - P'(1) with P'(1) = p01 P(0) + (1 - p10) P(1): z' = (p10 - p01) + (1 - p01 - p10) z
    torch.testing.assert_close(noisy, (P10 - P01) + (1 - P01 - P10) * z, **TOL[torch.complex64])


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"backend": "noisy"}, "backend 'noisy' needs a non-zero `noise`.*depolarizing"),
        ({"backend": "noisy", "noise": {"depolarizing": 0.0}}, "needs a non-zero `noise`"),
        ({"backend": "noisy", "noise": {"depolarising": 0.1}}, r"unknown field\(s\) \['depolarising'\]"),
        ({"backend": "noisy", "noise": {"depolarizing": 1.5}}, r"must be a probability in \[0, 1\]"),
        ({"backend": "noisy", "noise": {"depolarizing": "high"}}, r"must be a probability in \[0, 1\], got high"),
        ({"backend": "noisy", "noise": "wukong73"}, "not a known device; choose one of wukong72.*readout_p01"),
        ({"backend": "torch", "noise": {"depolarizing": 0.1}}, "only by backend 'noisy', not 'torch'"),
        ({"backend": "torch", "backend_options": {"seed": 0}}, r"takes no option\(s\) \['seed'\].*'method', 'dtype'"),
        ({"backend": "pyqpanda3", "diff_method": "hybrid", "backend_options": {"seed": 0}}, "options are none"),
        ({"backend": "shots", "shots": 8, "backend_options": {"shots": 4}}, r"\['shots'\] through the config field"),
        ({"backend": "torch", "backend_options": {"dtype": torch.complex128}}, "JSON values.*'complex128'"),
    ],
)
def test_noise_and_backend_options_are_checked(fields, match):
    with pytest.raises(ValueError, match=match):
        QTHAConfig(r=4, **fields)


def test_backend_options_reach_the_backend():
    layer = QTHALayer(nn.Linear(8, 8), QTHAConfig(r=4, backend_options={"dtype": "complex128", "method": "gates"}))
    assert layer.qnn.backend.dtype == torch.complex128 and layer.qnn.backend.method == "gates"


def test_noise_and_backend_options_survive_save_and_load(tmp_path):
    config = QTHAConfig(
        r=4,
        bond_dim=2,
        qnn_mode="weights",
        backend="noisy",
        noise={"depolarizing": 0.02, "readout_p10": 0.03},
        backend_options={"dtype": "complex128"},
        target_modules=["q_proj"],
    )
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    model = get_model(tiny_causal_lm("llama"), config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    save_adapter(model, tmp_path)
    loaded = load_adapter(tiny_causal_lm("llama"), tmp_path)
    assert loaded.adapter_config == config
    qnn = next(iter(loaded.adapter_layers.values())).qnn
    assert qnn.backend.noise.depolarizing == 0.02 and qnn.backend.dtype == torch.complex128
    ids = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
