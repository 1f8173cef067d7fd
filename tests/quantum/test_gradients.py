"""Gradients: backprop == parameter shift == hybrid == central finite differences."""

import pytest
import torch

from qpeft.backends import get_backend
from qpeft.qnn import QuantumLayer
from qpeft.quantum import expval_z, hardware_efficient, parameter_shift, simulate
from qpeft.testing import FD_TOL, GRAD_TOL, TOL, random_circuit


def _loss_weights(batch: int, n_out: int) -> torch.Tensor:
    # a fixed, non-uniform cotangent so every output contributes differently
    return torch.linspace(-1.0, 2.0, batch * n_out, dtype=torch.float64).reshape(batch, n_out)


def _exact(c, x, w):
    return expval_z(simulate(c, x, w, dtype=torch.complex128))


def _finite_differences(c, x, w, cot, eps=1e-6):
    def loss(x_, w_):
        return (_exact(c, x_, w_) * cot).sum().item()

    gx, gw = torch.zeros_like(x), torch.zeros_like(w)
    for idx in range(x.numel()):
        d = torch.zeros_like(x).view(-1)
        d[idx] = eps
        gx.view(-1)[idx] = (loss(x + d.view_as(x), w) - loss(x - d.view_as(x), w)) / (2 * eps)
    for idx in range(w.numel()):
        d = torch.zeros_like(w)
        d[idx] = eps
        gw[idx] = (loss(x, w + d) - loss(x, w - d)) / (2 * eps)
    return gx, gw


@pytest.mark.parametrize("n,seed", [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)])
def test_backprop_equals_parameter_shift_equals_finite_differences(n, seed):
    c = random_circuit(n, 10 + 2 * n, seed)  # all gates: two- and four-term rules, reused weights
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(3, c.n_inputs, generator=g, dtype=torch.float64) * 4 - 2
    w0 = torch.rand(c.n_weights, generator=g, dtype=torch.float64) * 4 - 2
    cot = _loss_weights(3, n)

    x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    (_exact(c, x, w) * cot).sum().backward()
    backprop = (x.grad, w.grad)

    def executor(circuit, xs, ws):
        return _exact(circuit, xs, ws)

    x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
    out = parameter_shift(c, x, w, executor)
    torch.testing.assert_close(out, _exact(c, x0, w0))
    (out * cot).sum().backward()
    shift = (x.grad, w.grad)

    fd = _finite_differences(c, x0, w0, cot)
    torch.testing.assert_close(backprop, shift, **TOL[torch.complex128])
    torch.testing.assert_close(backprop, fd, **FD_TOL)


@pytest.mark.parametrize("diff_method", ["parameter_shift", "hybrid"])
def test_layer_diff_methods_agree_with_backprop(diff_method):
    c = hardware_efficient(3, 2, reupload=True)
    x0 = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = {}
    for method in ("backprop", diff_method):
        torch.manual_seed(0)
        layer = QuantumLayer(c, diff_method=method, backend_options={"dtype": torch.complex128})
        x = x0.clone().requires_grad_()
        out = layer(x)
        assert out.shape == (2, 4, 3)
        out.pow(3).sum().backward()
        grads[method] = (out.detach(), x.grad, layer.weights.grad)
    torch.testing.assert_close(grads["backprop"], grads[diff_method], **TOL[torch.complex128])


def test_parameter_shift_without_inputs_and_probs():
    """Weights-only circuit (QTHA weights mode) with a probability readout."""
    c = hardware_efficient(3, 2, encoding=None)
    torch.manual_seed(1)
    grads = []
    for method in ("backprop", "parameter_shift"):
        layer = QuantumLayer(c, diff_method=method, observable="probs", backend_options={"dtype": torch.complex128})
        layer.weights.data = torch.linspace(-1, 1, c.n_weights)
        out = layer()
        assert out.shape == (8,)
        (out * torch.arange(8.0)).sum().backward()
        grads.append(layer.weights.grad)
    torch.testing.assert_close(grads[0], grads[1], **GRAD_TOL)


def test_parameter_shift_through_shots_backend_is_unbiased():
    """A circuit-only backend (finite shots) still trains: the shift gradient is close to the
    exact one within the shot noise."""
    c = hardware_efficient(2, 1)
    shots = get_backend("shots", shots=200_000, seed=0)
    torch.manual_seed(0)
    layer = QuantumLayer(c, backend=shots, diff_method="parameter_shift")
    exact = QuantumLayer(c)
    exact.load_state_dict(layer.state_dict())
    x = torch.tensor([[0.3, -0.7]])
    layer(x).sum().backward()
    exact(x).sum().backward()
    # d/dw of a sum of 2 outputs = 0.5 * (f+ - f-) over 2 wires: stderr <= 1/sqrt(shots); 4 sigma
    assert torch.allclose(layer.weights.grad, exact.weights.grad, atol=4 / 200_000**0.5, rtol=0)
    assert not torch.equal(layer.weights.grad, exact.weights.grad)  # it really sampled


def test_backprop_on_non_differentiable_backend_is_refused():
    with pytest.raises(ValueError, match="not differentiable by autograd; use diff_method='parameter_shift'"):
        QuantumLayer(hardware_efficient(2, 1), backend="shots")
    with pytest.raises(ValueError, match="unknown diff_method"):
        QuantumLayer(hardware_efficient(2, 1), diff_method="adjoint-ish")


def test_parameter_shift_refuses_amplitude_inputs():
    layer = QuantumLayer(hardware_efficient(2, 1, encoding="amplitude"), diff_method="parameter_shift")
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()
    with pytest.raises(ValueError, match="amplitude-encoded inputs"):
        layer(x).sum().backward()
