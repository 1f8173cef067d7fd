"""QTHA adapters whose circuits run on other backends than the exact simulator."""

import pytest
import torch

from qpeft.adapters import QTHAConfig, get_model
from qpeft.quantum import probabilities, simulate
from qpeft.testing import tiny_causal_lm

NOISE = {"depolarizing": 0.02, "depolarizing_2q": 0.05, "readout_p01": 0.03}


def _steps(model, n=2):
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(0))
    for _ in range(n):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss


@pytest.mark.parametrize(
    "fields",
    [
        {"qnn_mode": "weights", "backend": "shots", "shots": 512, "diff_method": "parameter_shift"},
        {"qnn_mode": "weights", "backend": "shots", "shots": 512, "diff_method": "hybrid"},
        {"encoding": "amplitude", "backend": "noisy", "noise": NOISE, "diff_method": "backprop"},
        {"qnn_mode": "weights", "backend": "qiskit", "shots": 256, "diff_method": "parameter_shift"},
    ],
    ids=["shots-shift", "shots-hybrid", "noisy-backprop", "aer-shift"],
)
def test_qtha_trains_on_other_backends(fields):
    if fields["backend"] == "qiskit":
        pytest.importorskip("qiskit_aer")
    model = get_model(tiny_causal_lm("llama"), QTHAConfig(r=4, bond_dim=2, target_modules=["q_proj"], **fields))
    qnn = next(iter(model.adapter_layers.values())).qnn
    start = qnn.weights.detach().clone()
    loss = _steps(model, 3)
    assert torch.isfinite(loss)
    assert not torch.equal(qnn.weights, start)  # the circuit's angles were trained through that backend
    if fields["backend"] == "noisy":  # and the circuit that trained was the noisy one
        h = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            exact = probabilities(simulate(qnn.circuit, h, qnn.weights))
            assert (qnn(h) - exact).abs().max() > 1e-2
