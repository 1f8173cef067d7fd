"""External SDK backends (real Qiskit Aer, PennyLane, pyqpanda3) against qpeft's simulator.
Each is skipped when its extra is not installed."""

import pytest
import torch

from qpeft.backends import get_backend
from qpeft.qnn import QuantumLayer
from qpeft.quantum import hardware_efficient
from qpeft.testing import GRAD_TOL, SDK_TOL, random_circuit

SDKS = [
    ("qiskit", "qiskit_aer", {}),
    ("pennylane", "pennylane", {}),
    ("pennylane", "pennylane", {"device": "lightning.qubit"}),
    ("pyqpanda3", "pyqpanda3", {}),
]


def _case(seed=0, batch=3, n=3):
    c = random_circuit(n, 18, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, c.n_inputs, generator=g, dtype=torch.float64) * 4 - 2
    w = torch.rand(c.n_weights, generator=g, dtype=torch.float64) * 4 - 2
    return c, x, w


@pytest.mark.parametrize("name,module,options", SDKS, ids=["aer", "default.qubit", "lightning", "qpanda"])
@pytest.mark.parametrize("observable", ["z", "probs"])
def test_sdk_backend_matches_simulator(name, module, options, observable):
    pytest.importorskip(module)
    c, x, w = _case()
    exact = get_backend("torch", dtype=torch.complex128).run(c, x, w, observable)
    out = get_backend(name, **options).run(c, x, w, observable)
    assert out.shape == exact.shape
    torch.testing.assert_close(out, exact, **SDK_TOL)


def test_qiskit_shots_within_four_standard_errors():
    pytest.importorskip("qiskit_aer")
    c, x, w = _case(seed=1)
    shots = 8000
    exact = get_backend("torch", dtype=torch.complex128).run(c, x, w)
    out = get_backend("qiskit", shots=shots, seed=11).run(c, x, w)
    stderr = ((1 - exact**2) / shots).sqrt()
    assert ((out - exact).abs() <= 4 * stderr + 1e-9).all()


def test_pennylane_backend_trains_by_backprop_and_shift():
    pytest.importorskip("pennylane")
    c = hardware_efficient(2, 1)
    x = torch.tensor([[0.2, -0.4]], dtype=torch.float64)
    grads = []
    for backend, method in (
        ("torch", "backprop"),
        ("pennylane", "backprop"),
        ("pennylane", "parameter_shift"),
    ):
        torch.manual_seed(0)
        layer = QuantumLayer(c, backend=backend, diff_method=method).double()
        layer(x).sum().backward()
        grads.append(layer.weights.grad)
    torch.testing.assert_close(grads[0], grads[1], **GRAD_TOL)
    torch.testing.assert_close(grads[0], grads[2], **GRAD_TOL)


def test_missing_backend_name():
    with pytest.raises(ValueError, match="unknown backend 'ibm-magic'; choose one of torch"):
        get_backend("ibm-magic")


def test_bound_circuit_angles_are_the_simulators_angles():
    """The job engine's one-row ``BoundCircuit.angles`` reads every Const, Input and Weight angle
    as the batched simulator does (``Circuit.angles``)."""
    from qpeft.jobs.base import BoundCircuit

    c, x, w = _case(seed=3)  # a circuit with Const, Input and Weight angles
    for i in range(len(x)):
        row = BoundCircuit(c, tuple(w.tolist()), tuple(x[i].tolist()))
        batched = [a[i] if a.ndim else a for op in c.ops for a in c.angles(op, x, w, torch.float64, "cpu")]
        torch.testing.assert_close(torch.tensor(row.angles(), dtype=torch.float64), torch.stack(batched))


def test_one_row_qiskit_circuit_matches_the_simulator():
    """``to_qiskit(c, x_row, w)`` (no parameters: every angle written in) gives the simulator's
    probabilities for that row."""
    pytest.importorskip("qiskit")
    from qiskit.quantum_info import Statevector

    from qpeft.backends.qiskit import to_qiskit

    c, x, w = _case(seed=3)  # a circuit with Const, Input and Weight angles
    exact = get_backend("torch", dtype=torch.complex128).run(c, x, w, "probs")
    for i in range(len(x)):
        probs = Statevector(to_qiskit(c, x[i], w)).reverse_qargs().probabilities()
        torch.testing.assert_close(torch.from_numpy(probs), exact[i], **SDK_TOL)
