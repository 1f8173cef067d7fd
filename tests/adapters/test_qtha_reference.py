"""QTHA's own formulas, pinned: each mode's output rebuilt independently from the dense MPO
factors, the circuit simulated by ``qpeft.quantum.simulate`` in complex128 (or the control
MLP recomputed by hand), and the formulas of DESIGN.md section 3, on perturbed parameters.

    y = W0 x + b + (alpha / r) * B z,    h = A x
    angle + linear:        z = h + gamma * <Z>(QNN(h))
    amplitude + weighted:  z = h * (1 + gamma * (r * p(QNN(h)) - 1))
    weights mode:          z = (I + M) h,  M = (r^2 p(QNN()) - 1) / r  as an (r, r) matrix
    branch="mlp":          the QNN replaced by tanh(W2 tanh(W1 h)) (weights mode: softmax(W2 tanh(W1 1)))
    branch="none":         z = h
"""

import pytest
import torch
from torch import nn

from qpeft.adapters import QTHAConfig
from qpeft.adapters.qtha.layer import QTHALayer
from qpeft.quantum import build_ansatz, expval_z, probabilities, simulate
from qpeft.testing import TOL

D_IN, D_OUT, R = 16, 12, 4
FP32_VS_FP64 = TOL[torch.complex64]  # the layer simulates in complex64, the reference in complex128


def _perturbed_layer(seed: int, **fields) -> QTHALayer:
    """A QTHA layer whose every trainable parameter is moved off its init (seeded)."""
    torch.manual_seed(seed)
    layer = QTHALayer(nn.Linear(D_IN, D_OUT), QTHAConfig(r=R, alpha=6.0, bond_dim=3, **fields))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("base_layer."):
                continue
            if name == "gamma":
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
            elif name.startswith("qnn."):
                p.uniform_(-3, 3, generator=g)
            else:
                p.copy_(0.7 * torch.randn(p.shape, generator=g))
    return layer.eval()


def _circuit(config: QTHAConfig):
    encoding = None if config.qnn_mode == "weights" else config.encoding
    return build_ansatz(config.ansatz, config.n_qubits, config.qnn_layers, encoding=encoding)


def _reference(layer: QTHALayer, x: torch.Tensor, z_of_h) -> torch.Tensor:
    """W0 x + b + scaling * B z(h) in float64, from the dense factors."""
    a = layer.mpo_A.dense().double()  # (r, d_in)
    b = layer.mpo_B.dense().double()  # (d_out, r)
    assert a.shape == (R, D_IN) and b.shape == (D_OUT, R)
    base = layer.base_layer
    h = x @ a.T  # (batch, r)
    return x @ base.weight.double().T + base.bias.double() + layer.config.alpha / R * (z_of_h(h) @ b.T)


def _check(layer: QTHALayer, z_of_h, seed: int = 0) -> None:
    x = torch.randn(7, D_IN, generator=torch.Generator().manual_seed(seed + 100))
    with torch.no_grad():
        ours = layer(x).double()
        expected = _reference(layer, x.double(), z_of_h)
    assert (expected - x.double() @ layer.base_layer.weight.double().T).abs().max() > 0.1  # a real delta
    torch.testing.assert_close(ours, expected, **FP32_VS_FP64)


def _weights(layer: QTHALayer) -> torch.Tensor:
    return layer.qnn.weights.detach().double()


@pytest.mark.parametrize("seed", [0, 1])
def test_angle_encoding_with_linear_fusion(seed):
    layer = _perturbed_layer(seed, encoding="angle", fusion="linear")
    circuit, gamma = _circuit(layer.config), layer.gamma.detach().double()

    def z_of_h(h):
        q = expval_z(simulate(circuit, h, _weights(layer), dtype=torch.complex128))  # (batch, r)
        return h + gamma * q

    _check(layer, z_of_h, seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_amplitude_encoding_with_weighted_fusion(seed):
    layer = _perturbed_layer(seed, encoding="amplitude", fusion="weighted")
    circuit, gamma = _circuit(layer.config), layer.gamma.detach().double()
    assert circuit.n_qubits == 2  # log2 r

    def z_of_h(h):
        p = probabilities(simulate(circuit, h, _weights(layer), dtype=torch.complex128))  # (batch, r)
        return h * (1 + gamma * (R * p - 1))  # centred: a uniform distribution gives q = 0

    _check(layer, z_of_h, seed)


@pytest.mark.parametrize("seed", [0, 1])
def test_weights_mode_mixing_matrix(seed):
    layer = _perturbed_layer(seed, qnn_mode="weights")
    circuit = _circuit(layer.config)
    assert circuit.n_qubits == 4 and circuit.n_inputs == 0  # r^2 = 2^4 probabilities, no input
    p = probabilities(simulate(circuit, None, _weights(layer), dtype=torch.complex128)).reshape(-1)
    m = ((R * R * p - 1) / R).reshape(R, R)
    _check(layer, lambda h: h @ (torch.eye(R, dtype=torch.float64) + m).T, seed)
    # and the merged weight is the same linear map
    a, b = layer.mpo_A.dense().double(), layer.mpo_B.dense().double()
    torch.testing.assert_close(
        layer.delta_weight().double(), b @ (torch.eye(R, dtype=torch.float64) + m) @ a, **FP32_VS_FP64
    )


@pytest.mark.parametrize("qnn_mode", ["activation", "weights"])
def test_mlp_branch(qnn_mode):
    layer = _perturbed_layer(3, qnn_mode=qnn_mode, branch="mlp")
    w1 = layer.mlp.hidden.weight.detach().double()  # (hidden, r) or (hidden, 1)
    w2 = layer.mlp.out.weight.detach().double()  # (r, hidden) or (r^2, hidden)
    n_qnn = _circuit(layer.config).n_weights  # the control matches the QNN's size
    assert abs(w1.numel() + w2.numel() - n_qnn) <= w1.shape[1] + w2.shape[0]
    if qnn_mode == "weights":
        p = torch.softmax(torch.tanh(w1[:, 0]) @ w2.T, dim=-1)  # (r^2,)
        m = ((R * R * p - 1) / R).reshape(R, R)
        _check(layer, lambda h: h @ (torch.eye(R, dtype=torch.float64) + m).T)
    else:
        gamma = layer.gamma.detach().double()
        _check(layer, lambda h: h + gamma * torch.tanh(torch.tanh(h @ w1.T) @ w2.T))


def test_none_branch_is_the_pure_mpo():
    layer = _perturbed_layer(4, branch="none")
    assert layer.qnn is None and layer.mlp is None
    _check(layer, lambda h: h)
