"""The real readout path of amplitude-encoded circuits against the complex gate-by-gate path."""

import pytest
import torch

from qpeft.quantum import build_ansatz, hardware_efficient, probabilities, simulate
from qpeft.quantum.simulator import simulate_probabilities
from qpeft.testing import TOL


@pytest.mark.parametrize(
    "make",
    [
        lambda: hardware_efficient(3, 2, encoding="amplitude"),  # RY, RZ, CZ: complex unitary
        lambda: build_ansatz("basic_entangler", 3, 2, encoding="amplitude", rotation="RY"),  # real unitary
        lambda: build_ansatz("strongly_entangling", 2, 2, encoding="amplitude"),
    ],
    ids=["hea", "real-ry-cnot", "strong"],
)
def test_real_amplitude_path_equals_complex_gate_path(make):
    c = make()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(33, 2**c.n_qubits, generator=g, dtype=torch.float64)
    w0 = torch.rand(c.n_weights, generator=g, dtype=torch.float64) * 6.28
    weights = torch.rand(2**c.n_qubits, generator=g, dtype=torch.float64)  # a readout that mixes all
    results = []
    for fn in (
        lambda x, w: simulate_probabilities(c, x, w, dtype=torch.complex128),
        lambda x, w: probabilities(simulate(c, x, w, method="gates", dtype=torch.complex128)),
    ):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        probs = fn(x, w)
        (probs @ weights).square().sum().backward()
        results.append((probs, x.grad, w.grad))
    assert results[0][0].dtype == torch.float64
    torch.testing.assert_close(results[0], results[1], **TOL[torch.complex128])
