"""Exported OpenQASM 2/3 and OriginIR load back in Qiskit / pyqpanda3 and give the same state."""

import numpy as np
import pytest
import torch

from qpeft.quantum import hardware_efficient, simulate, to_originir, to_qasm2, to_qasm3
from qpeft.testing import EXACT_TOL, SDK_TOL, random_circuit

SEEDS = [(n, s) for n in (1, 2, 3, 4) for s in (0, 1)]


def _bound(n, seed):
    c = random_circuit(n, 25, seed)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(c.n_inputs, generator=g, dtype=torch.float64) * 6 - 3).tolist()
    w = (torch.rand(c.n_weights, generator=g, dtype=torch.float64) * 6 - 3).tolist()
    ours = simulate(c.bind(x, w), dtype=torch.complex128).reshape(-1).numpy()
    return c, x, w, ours


def _qiskit_state(qc, n):
    from qiskit.quantum_info import Statevector

    from qpeft.quantum.bitorder import reverse_bit_order

    return reverse_bit_order(Statevector(qc).data, n)


@pytest.mark.parametrize("n,seed", SEEDS)
def test_qasm2_round_trip(n, seed):
    qasm2 = pytest.importorskip("qiskit.qasm2")
    c, x, w, ours = _bound(n, seed)
    text = to_qasm2(c, x, w)
    assert text.startswith("OPENQASM 2.0;")
    np.testing.assert_allclose(_qiskit_state(qasm2.loads(text), n), ours, **EXACT_TOL)


@pytest.mark.parametrize("n,seed", SEEDS)
def test_qasm3_round_trip(n, seed):
    pytest.importorskip("qiskit_qasm3_import")
    qasm3 = pytest.importorskip("qiskit.qasm3")
    c, x, w, ours = _bound(n, seed)
    text = to_qasm3(c, x, w)
    assert text.startswith("OPENQASM 3.0;")
    np.testing.assert_allclose(_qiskit_state(qasm3.loads(text), n), ours, **EXACT_TOL)


@pytest.mark.parametrize("n,seed", SEEDS)
def test_originir_round_trip_through_pyqpanda3(n, seed):
    core = pytest.importorskip("pyqpanda3.core")
    from qpeft.backends.pyqpanda3 import originir_to_qprog
    from qpeft.quantum.bitorder import reverse_bit_order

    c, x, w, ours = _bound(n, seed)
    text = to_originir(c, x, w)
    assert text.startswith(f"QINIT {n}\n")
    qvm = core.CPUQVM()
    qvm.run(originir_to_qprog(text), 1)
    # QPanda indexes basis states little-endian, like Qiskit
    theirs = reverse_bit_order(np.asarray(qvm.result().get_state_vector()), n)
    np.testing.assert_allclose(theirs, ours, **SDK_TOL)


def test_export_needs_a_bound_circuit():
    c = hardware_efficient(2, 1)
    with pytest.raises(ValueError, match="bind needs 2 inputs and 4 weights"):
        to_qasm3(c)
    with pytest.raises(ValueError, match="amplitude-encoded circuit .* cannot be bound"):
        to_qasm2(hardware_efficient(2, 1, encoding="amplitude"), [1, 0, 0, 0], [0] * 4)
    with pytest.raises(ValueError, match="`version` must be 2 or 3"):
        from qpeft.quantum.export import to_qasm

        to_qasm(c, [0, 0], [0] * 4, version=4)
