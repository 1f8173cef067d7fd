"""QTHA's own formulas, pinned: each mode's output rebuilt independently from the dense MPO
factors, the circuit simulated by ``qpeft.quantum.simulate`` in complex128 (or the control
MLP recomputed by hand), and the formulas of DESIGN.md section 3, on perturbed parameters.

    y = W0 x + b + (alpha / r) * B z,    h = A x
    angle + linear:        z = h + gamma * <Z>(QNN(h))
    amplitude + weighted:  z = h * (1 + gamma * (r * p(QNN(h)) - 1))
    weights mode:          z = (I + M) h,  M = (r^2 p(QNN()) - 1) / r  as an (r, r) matrix
    branch="mlp":          the QNN replaced by tanh(W2 tanh(W1 h)) (weights mode: softmax(W2 tanh(W1 1)))
    branch="none":         z = h

Gradients too: autograd through the float64 reference (gate-by-gate simulation) gives every
trainable tensor's gradient, the MPO down-projection's included (in activation mode the
circuit's gradient reaches it through h), for every mode and circuit differentiation method.
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


# ---- gradients: autograd through the reference, against the layer's own backward ------------

#: every QTHA mode and, in activation mode, every way its circuit is differentiated
GRADIENT_MODES = {
    "angle-linear": dict(encoding="angle", fusion="linear"),
    "angle-weighted": dict(encoding="angle", fusion="weighted"),
    "amplitude-linear": dict(encoding="amplitude", fusion="linear"),
    "amplitude-weighted": dict(encoding="amplitude", fusion="weighted"),
    "angle-parameter-shift": dict(encoding="angle", diff_method="parameter_shift"),
    "angle-hybrid": dict(encoding="angle", fusion="weighted", diff_method="hybrid"),
    "amplitude-hybrid": dict(encoding="amplitude", diff_method="hybrid"),
    "weights": dict(qnn_mode="weights"),
    "weights-parameter-shift": dict(qnn_mode="weights", diff_method="parameter_shift"),
    "mlp": dict(branch="mlp"),
    "weights-mlp": dict(qnn_mode="weights", branch="mlp"),
    "none": dict(branch="none"),
}
GRAD_VS_FP64 = {"atol": 1e-4, "rtol": 1e-4}  # float32 gradients (magnitudes ~50) against float64 ones


def _z_of_h(layer: QTHALayer, h: torch.Tensor, detach_qnn_input: bool = False) -> torch.Tensor:
    """The reference bottleneck z(h) in float64, differentiable in h and in every parameter;
    ``detach_qnn_input`` cuts the gradient from the branch back into h (the bug to catch)."""
    config, eye = layer.config, torch.eye(R, dtype=torch.float64)
    if config.branch == "none":
        return h
    if config.branch == "mlp":
        w1, w2 = layer.mlp.hidden.weight.double(), layer.mlp.out.weight.double()
        if config.qnn_mode == "weights":
            p = torch.softmax(torch.tanh(w1[:, 0]) @ w2.T, dim=-1)
            return h @ (eye + ((R * R * p - 1) / R).reshape(R, R)).T
        q = torch.tanh(torch.tanh((h.detach() if detach_qnn_input else h) @ w1.T) @ w2.T)
    else:
        circuit, w = _circuit(config), layer.qnn.weights.double()
        if config.qnn_mode == "weights":
            p = probabilities(simulate(circuit, None, w, method="gates", dtype=torch.complex128)).reshape(-1)
            return h @ (eye + ((R * R * p - 1) / R).reshape(R, R)).T
        state = simulate(circuit, h.detach() if detach_qnn_input else h, w, method="gates", dtype=torch.complex128)
        q = expval_z(state) if config.encoding == "angle" else R * probabilities(state) - 1
    gamma = layer.gamma.double()
    return h + gamma * q if config.fusion == "linear" else h * (1 + gamma * q)


def _grads(layer: QTHALayer, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    trainable = {n: p for n, p in layer.named_parameters() if p.requires_grad and not n.startswith("base_layer.")}
    return dict(zip(trainable, torch.autograd.grad(loss, list(trainable.values()))))


@pytest.mark.parametrize("mode", GRADIENT_MODES)
def test_gradients_match_autograd_through_the_reference(mode):
    """Every trainable tensor's gradient, the MPO down-projection's included (in activation
    mode it gets one from the circuit's input), equals autograd through the float64 reference."""
    layer = _perturbed_layer(5, **GRADIENT_MODES[mode])
    layer.base_layer.requires_grad_(False)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(7, D_IN, generator=g)
    v = torch.randn(7, D_OUT, generator=g, dtype=torch.float64)  # a random direction to project on

    def reference(detach_qnn_input=False):
        return (_reference(layer, x.double(), lambda h: _z_of_h(layer, h, detach_qnn_input)) * v).sum()

    ours, expected = _grads(layer, (layer(x).double() * v).sum()), _grads(layer, reference())
    assert ours.keys() == expected.keys() and any(n.startswith("mpo_A.") for n in ours)
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], **GRAD_VS_FP64, msg=name)
    if layer.config.qnn_mode == "activation" and layer.config.branch != "none":
        # the check can fail: without the branch's gradient into h, mpo_A's gradient is far off
        cut = _grads(layer, reference(detach_qnn_input=True))
        gap = max((cut[n] - expected[n]).abs().max() for n in expected if n.startswith("mpo_A."))
        assert gap > 100 * GRAD_VS_FP64["atol"]
