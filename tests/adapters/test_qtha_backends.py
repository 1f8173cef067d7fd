"""QTHA adapters whose circuits run on other backends than the exact simulator."""

import pytest
import torch

from qpeft.adapters import QTHAConfig, get_model
from qpeft.testing import tiny_causal_lm


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
        {"encoding": "amplitude", "backend": "noisy", "diff_method": "backprop"},
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
