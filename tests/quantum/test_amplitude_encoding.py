"""Amplitude encoding normalises its input on every path that takes it: an unnormalised input
vector (e.g. [2, 0, 0, 0]) is the same state as the normalised one, and its probabilities sum
to 1 (without the normalisation they sum to |x|^2 = 4). One table of paths: the statevector
simulator (gate by gate, fast, the real readout path), the density-matrix simulator, the
backends (torch, shots, noisy, Qiskit Aer, PennyLane), the QuantumLayer and the QTHA layer."""

import pytest
import torch
from torch import nn

from qpeft.adapters import QTHAConfig
from qpeft.adapters.qtha.layer import QTHALayer
from qpeft.backends import get_backend
from qpeft.qnn import QuantumLayer
from qpeft.quantum import Circuit, NoiseModel, hardware_efficient, probabilities, simulate, simulate_density
from qpeft.quantum.ansatz import basic_entangler
from qpeft.quantum.density import density_probabilities
from qpeft.quantum.simulator import amplitude_probabilities, amplitude_readout, simulate_probabilities
from qpeft.quantum.statevector import amplitude_state
from qpeft.testing import SDK_TOL, TOL

C128 = torch.complex128
NOISE = NoiseModel(depolarizing=0.05, depolarizing_2q=0.1, readout_p01=0.03)


def _simulate(method):
    return lambda c, x, w: probabilities(simulate(c, x, w, method=method, dtype=C128))


def _real_path(c, x, w):
    # the real readout path folds the gates into one unitary only where that is cheaper, which
    # for 2 qubits it is from a batch of a few rows on: repeat the rows to be sure it is taken
    return simulate_probabilities(c, x.repeat(64, 1), w, dtype=C128)[: len(x)]


def _folded(c, x, w):
    """The input-free gates folded once (the QTHA delta cache's path), then applied to the rows."""
    return amplitude_probabilities(c, x, amplitude_readout(c, w, dtype=C128))


def _density(c, x, w):
    return density_probabilities(simulate_density(c, x, w, NOISE, dtype=C128), NOISE)


def _backend(name, module=None, **options):
    def run(c, x, w):
        if module is not None:
            pytest.importorskip(module)
        return get_backend(name, **options).run(c, x, w, "probs")

    return run


def _quantum_layer(c, x, w):
    layer = QuantumLayer(c, observable="probs").double()
    with torch.no_grad():
        layer.weights.copy_(w)
        return layer(x)


def _qtha_branch(c, x, w):
    """The QTHA layer's own amplitude-encoded QNN (r = 4 features on 2 qubits): q = r p - 1."""
    layer = QTHALayer(nn.Linear(8, 8), QTHAConfig(r=4, bond_dim=2, encoding="amplitude", qnn_layers=2))
    assert layer.qnn.circuit.n_qubits == 2 and layer.qnn.weights.numel() == w.numel()
    with torch.no_grad():
        layer.qnn.weights.copy_(w)
        return (layer._branch(x.float()).double() + 1) / 4


SHOTS_TOL = {"atol": 0.02, "rtol": 0}  # 20,000 shots: the standard error of a frequency is <= 0.0036
#: path -> (run(circuit, inputs, weights) -> probabilities, tolerance, noiseless)
PATHS = {
    "simulate-gates": (_simulate("gates"), TOL[C128], True),
    "simulate-fast": (_simulate("fast"), TOL[C128], True),
    "real-readout-path": (_real_path, TOL[C128], True),
    "folded-readout": (_folded, TOL[C128], True),
    "density": (_density, TOL[C128], False),
    "backend-torch": (_backend("torch", dtype="complex128"), TOL[C128], True),
    "backend-noisy": (_backend("noisy", noise=NOISE, dtype="complex128"), TOL[C128], False),
    "backend-shots": (_backend("shots", shots=20_000, seed=0), SHOTS_TOL, True),
    "backend-qiskit": (_backend("qiskit", "qiskit_aer"), SDK_TOL, True),
    "backend-qiskit-shots": (_backend("qiskit", "qiskit_aer", shots=20_000, seed=0), SHOTS_TOL, True),
    "backend-pennylane": (_backend("pennylane", "pennylane"), SDK_TOL, True),
    "quantum-layer": (_quantum_layer, TOL[torch.complex64], True),
    "qtha-layer": (_qtha_branch, TOL[torch.complex64], False),  # (runs its own ansatz, not a bare circuit)
}


def _inputs():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 4, generator=g, dtype=torch.float64) * 3  # norms far from 1
    return torch.cat([torch.tensor([[2.0, 0.0, 0.0, 0.0]], dtype=torch.float64), rows])


def test_amplitude_state_is_a_unit_vector():
    x = _inputs()
    state = amplitude_state(x, 2, C128).reshape(len(x), 4)
    torch.testing.assert_close(state.abs().square().sum(-1), torch.ones(len(x), dtype=torch.float64))
    assert torch.equal(state[0], torch.tensor([1, 0, 0, 0], dtype=C128))  # [2, 0, 0, 0] -> |00>


@pytest.mark.parametrize("path", PATHS)
def test_unnormalised_input_gives_the_normalised_state(path):
    run, tol, noiseless = PATHS[path]
    x = _inputs()
    c = hardware_efficient(2, 2, encoding="amplitude")
    w = torch.rand(c.n_weights, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 6
    probs = run(c, x, w).double()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(x), dtype=torch.float64), **tol)
    torch.testing.assert_close(probs, run(c, x / x.norm(dim=-1, keepdim=True), w).double(), **tol)
    if noiseless:  # and with no gate at all, [2, 0, 0, 0] is |00>: probabilities [1, 0, 0, 0]
        bare = Circuit(2, amplitude_encoding=True, n_weights=c.n_weights)
        torch.testing.assert_close(
            run(bare, x[:1], w).double(), torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64), **tol
        )


@pytest.mark.parametrize("real_gates", [True, False])
def test_the_folded_readout_gives_the_simulators_probabilities(real_gates):
    """amplitude_readout folds the circuit once; applied to any batch it gives what
    simulate_probabilities gives gate by gate, with only real gates (one real GEMM against
    Re(U^T)) and with complex ones (against [Re | Im])."""
    if real_gates:
        c = basic_entangler(3, 3, encoding="amplitude", rotation="RY")
    else:
        c = hardware_efficient(3, 3, encoding="amplitude")
    w = torch.rand(c.n_weights, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 6
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    readout = amplitude_readout(c, w, dtype=C128)
    assert readout.shape == ((8, 8) if real_gates else (8, 16)) and readout.dtype == torch.float64
    expected = simulate_probabilities(c, x, w, method="gates", dtype=C128)
    torch.testing.assert_close(amplitude_probabilities(c, x, readout), expected, **TOL[C128])
    torch.testing.assert_close(amplitude_probabilities(c, x[2:3], readout), expected[2:3], **TOL[C128])


def test_the_folded_readout_refuses_what_it_cannot_fold():
    w = torch.zeros(hardware_efficient(2, 1).n_weights)
    with pytest.raises(ValueError, match="amplitude-encoded"):
        amplitude_readout(hardware_efficient(2, 1), w)  # angle encoding: its gates read the inputs
    c = hardware_efficient(2, 1, encoding="amplitude")
    with pytest.raises(ValueError, match="one set of weights"):
        amplitude_readout(c, torch.zeros(3, c.n_weights))
    with pytest.raises(ValueError, match="2-qubit circuit takes 4 features, got 3"):
        amplitude_probabilities(c, torch.ones(1, 3), amplitude_readout(c, torch.zeros(c.n_weights)))
