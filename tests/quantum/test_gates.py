"""Every gate of the table against Qiskit and PennyLane, one parametrized case per gate."""

import math

import numpy as np
import pytest
import torch

from qpeft.quantum import GATES, Circuit, Const, gate_matrix, get_gate, simulate
from qpeft.testing import FD_TOL, MATRIX_TOL, TOL

ANGLES = (0.37, -1.21, 2.05)


def our_unitary(name: str, wires: list[int], n_qubits: int) -> np.ndarray:
    """U of one gate on ``wires`` of an n-qubit register, from the simulator itself:
    amplitude-encode each basis state |k> and read U|k> (wire 0 most significant)."""
    gate = get_gate(name)
    c = Circuit(n_qubits, amplitude_encoding=True)
    c.add(name, wires, *[Const(a) for a in ANGLES[: gate.n_params]])
    basis = torch.eye(2**n_qubits, dtype=torch.float64)
    states = simulate(c, basis, dtype=torch.complex128).reshape(2**n_qubits, -1)
    return states.T.numpy()  # column k = U|k>


def _wires(name):
    # two-qubit gates on reversed wires exercise the wire-order handling
    return [0] if GATES[name].n_wires == 1 else [1, 0]


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_is_unitary_and_batched(name):
    gate = GATES[name]
    angles = [torch.tensor([a, a + 0.5], dtype=torch.float64) for a in ANGLES[: gate.n_params]]
    m = gate_matrix(name, angles, dtype=torch.complex128)
    if gate.n_params:
        assert m.shape == (2, 2**gate.n_wires, 2**gate.n_wires)
    eye = torch.eye(2**gate.n_wires, dtype=torch.complex128)
    assert torch.allclose(m @ m.conj().transpose(-1, -2), eye.expand_as(m), **TOL[torch.complex128])


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_matches_qiskit(name):
    qiskit = pytest.importorskip("qiskit")
    from qiskit.quantum_info import Operator

    from qpeft.backends.qiskit import to_qiskit

    n = 2
    c = Circuit(n).add(name, _wires(name), *[Const(a) for a in ANGLES[: GATES[name].n_params]])
    qc = to_qiskit(c)
    assert isinstance(qc, qiskit.QuantumCircuit)
    theirs = Operator(qc).data
    # Qiskit is little-endian: reverse the bit order of rows and columns.
    perm = [int(f"{k:0{n}b}"[::-1], 2) for k in range(2**n)]
    theirs = theirs[np.ix_(perm, perm)]
    np.testing.assert_allclose(our_unitary(name, _wires(name), n), theirs, **MATRIX_TOL)


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_matches_pennylane(name):
    qml = pytest.importorskip("pennylane")
    gate = GATES[name]
    op = getattr(qml, gate.pennylane)(*ANGLES[: gate.n_params], wires=_wires(name))
    theirs = qml.matrix(op, wire_order=[0, 1])
    np.testing.assert_allclose(our_unitary(name, _wires(name), 2), theirs, **MATRIX_TOL)


@pytest.mark.parametrize("name", sorted(g for g in GATES if GATES[g].n_params))
def test_shift_rule_gives_exact_derivative(name):
    """The gate's own shift rule reproduces d/dtheta of its matrix elements' expectation."""
    gate = GATES[name]
    theta = 0.7
    psi = torch.randn(2**gate.n_wires, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    psi = psi / psi.norm()
    obs = torch.diag(torch.arange(2**gate.n_wires, dtype=torch.float64)).to(torch.complex128)

    for k in range(gate.n_params):  # the rule holds for each of the gate's angles

        def f(t, k=k):
            angles = [torch.tensor(t if j == k else 0.3, dtype=torch.float64) for j in range(gate.n_params)]
            out = gate_matrix(name, angles, dtype=torch.complex128) @ psi
            return (out.conj() @ obs @ out).real.item()

        shifted = sum(c * (f(theta + s) - f(theta - s)) for c, s in gate.shift_rule)
        fd = (f(theta + 1e-6) - f(theta - 1e-6)) / 2e-6
        assert math.isclose(shifted, fd, abs_tol=FD_TOL["atol"], rel_tol=FD_TOL["rtol"]), (name, k, shifted, fd)


def test_unknown_gate_lists_known_ones():
    with pytest.raises(ValueError, match="unknown gate 'FOO'.*known gates: .*CNOT"):
        get_gate("FOO")
    with pytest.raises(ValueError, match="unknown gate"):
        Circuit(2).add("FOO", [0])


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_flags_match_its_matrix(name):
    """`diagonal` and `permutation` (one non-zero per row and column) hold for seeded random
    angles exactly when the entry says so; the names are the ones the exporters use."""
    gate = GATES[name]
    g = torch.Generator().manual_seed(0)
    angles = [torch.rand(8, generator=g, dtype=torch.float64) * 6 - 3 for _ in range(gate.n_params)]
    m = gate_matrix(name, angles, dtype=torch.complex128).reshape(-1, 2**gate.n_wires, 2**gate.n_wires)
    nonzero = m.abs() > 1e-12
    off_diagonal = nonzero & ~torch.eye(2**gate.n_wires, dtype=torch.bool)
    assert bool(off_diagonal.any()) is not gate.diagonal
    one_per_line = bool((nonzero.sum(-1) == 1).all() and (nonzero.sum(-2) == 1).all())
    assert one_per_line is gate.permutation
    assert gate.qasm and gate.qiskit and gate.pennylane and gate.originir
