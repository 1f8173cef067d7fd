"""QuantumLayer as an nn.Module: shapes, training, state dict."""

import pytest
import torch

from qpeft.qnn import QuantumLayer
from qpeft.quantum import Circuit, Weight, build_ansatz, hardware_efficient


def test_shapes_follow_leading_dimensions():
    torch.manual_seed(0)  # the layers' initial angles
    g = torch.Generator().manual_seed(0)
    layer = QuantumLayer(hardware_efficient(4, 2))
    assert layer(torch.randn(2, 5, 4, generator=g)).shape == (2, 5, 4)
    probs = QuantumLayer(hardware_efficient(3, 1), observable="probs")
    out = probs(torch.randn(7, 3, generator=g))
    assert out.shape == (7, 8)
    torch.testing.assert_close(out.sum(-1), torch.ones(7))
    no_inputs = QuantumLayer(hardware_efficient(3, 1, encoding=None))
    assert no_inputs().shape == (3,)
    with pytest.raises(ValueError, match="reads no inputs"):
        no_inputs(torch.zeros(1, 3))


def test_layer_trains_to_a_target():
    torch.manual_seed(0)
    layer = QuantumLayer(build_ansatz("strongly_entangling", 3, 2))
    x = torch.rand(16, 3, generator=torch.Generator().manual_seed(1)) * 3
    target = torch.tanh(x.flip(-1))
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    losses = []
    for _ in range(60):
        loss = (layer(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_state_dict_round_trip_and_init():
    c = Circuit(2).add("RX", [0], Weight(0)).add("RY", [1], Weight(1))
    torch.manual_seed(0)  # the initial angles
    a = QuantumLayer(c, init_std=0.01)
    assert a.weights.abs().max() < 0.1
    b = QuantumLayer(c)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(), b())


def test_unknown_observable():
    with pytest.raises(ValueError, match="unknown observable 'x'"):
        QuantumLayer(hardware_efficient(2, 1), observable="x")


def test_final_diagonal_gates_are_dropped_without_changing_readouts():
    from qpeft.quantum import simulate
    from qpeft.quantum.statevector import expval_z, probabilities

    c = hardware_efficient(4, 2)  # ends with RZ layer + CZ ring: all diagonal
    stripped = c.without_final_diagonal()
    assert len(stripped) == len(c) - 8 and stripped.n_weights == c.n_weights
    assert stripped.ops[-1].gate == "RY"  # the last layer keeps only what Z can see
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, 4, dtype=torch.float64, generator=g)
    w = torch.rand(c.n_weights, dtype=torch.float64, generator=g)
    full = simulate(c, x, w, dtype=torch.complex128)
    short = simulate(stripped, x, w, dtype=torch.complex128)
    torch.testing.assert_close(probabilities(full), probabilities(short))
    torch.testing.assert_close(expval_z(full), expval_z(short))
    layer = QuantumLayer(c)
    assert layer.executed_circuit.ops == stripped.ops
