"""The statevector simulator against Qiskit and PennyLane on seeded random circuits,
the fast path against the gate-by-gate path, readouts, and bad input."""

import numpy as np
import pytest
import torch

from qpeft.qnn import QuantumLayer
from qpeft.quantum import (
    Circuit,
    Input,
    Weight,
    build_ansatz,
    expval_pauli,
    expval_z,
    hardware_efficient,
    probabilities,
    simulate,
)
from qpeft.quantum.statevector import check_memory
from qpeft.testing import EXACT_TOL, TOL, random_circuit

CASES = [(n, seed) for n in range(1, 7) for seed in range(3)]


def _args(c: Circuit, batch: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, c.n_inputs, generator=g, dtype=dtype) * 6 - 3
    w = torch.rand(c.n_weights, generator=g, dtype=dtype) * 6 - 3
    return x, w


@pytest.mark.parametrize("n,seed", CASES)
def test_random_circuit_matches_qiskit(n, seed):
    pytest.importorskip("qiskit")
    from qiskit.quantum_info import Statevector

    from qpeft.backends.qiskit import to_qiskit
    from qpeft.quantum.bitorder import reverse_bit_order

    c = random_circuit(n, 12 + 3 * n, seed)
    x, w = _args(c, 3, seed)
    ours = simulate(c, x, w, dtype=torch.complex128).reshape(3, -1).numpy()
    for b in range(3):
        theirs = reverse_bit_order(Statevector(to_qiskit(c, x[b].numpy(), w.numpy())).data, n)
        np.testing.assert_allclose(ours[b], theirs, **EXACT_TOL)


@pytest.mark.parametrize("n,seed", CASES)
def test_random_circuit_matches_pennylane(n, seed):
    qml = pytest.importorskip("pennylane")
    from qpeft.backends.pennylane import apply_pennylane_ops

    c = random_circuit(n, 12 + 3 * n, seed)
    x, w = _args(c, 3, seed)

    @qml.qnode(qml.device("default.qubit", wires=n), interface="torch")
    def state(inputs, weights):
        apply_pennylane_ops(c, inputs, weights)
        return qml.state()

    theirs = state(x, w)  # broadcast over the batch
    ours = simulate(c, x, w, dtype=torch.complex128).reshape(3, -1)
    torch.testing.assert_close(ours, theirs.reshape(3, -1), **TOL[torch.complex128])


def test_qubit_order_conversion_is_explicit():
    pytest.importorskip("qiskit")
    from qiskit.quantum_info import Statevector

    from qpeft.backends.qiskit import to_qiskit
    from qpeft.quantum.bitorder import reverse_bit_order

    c = Circuit(3).add("X", [0])  # wire 0 is the most significant bit: |100> = index 4
    ours = simulate(c, dtype=torch.complex128).reshape(-1)
    assert ours[4] == 1
    theirs = Statevector(to_qiskit(c)).data  # Qiskit: qubit 0 least significant -> index 1
    assert theirs[1] == 1
    np.testing.assert_array_equal(reverse_bit_order(theirs, 3), ours.numpy())
    np.testing.assert_array_equal(reverse_bit_order(ours.numpy(), 3), theirs)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize(
    "make",
    [
        lambda: hardware_efficient(5, 2),
        lambda: hardware_efficient(4, 3, reupload=True, entangler="CNOT"),
        lambda: build_ansatz("strongly_entangling", 4, 2),
        lambda: build_ansatz("basic_entangler", 3, 2),
        lambda: hardware_efficient(4, 2, encoding="amplitude"),
        lambda: hardware_efficient(3, 1, encoding=None),
        lambda: random_circuit(5, 30, seed=7),
        lambda: hardware_efficient(13, 1),  # three Kronecker groups per layer
        lambda: build_ansatz("strongly_entangling", 2, 3),  # few qubits: the block is folded
    ],
    ids=["hea", "reupload", "strong", "basic", "amplitude", "no-inputs", "random", "13-qubits", "folded"],
)
def test_fast_path_equals_gate_path(make, dtype):
    c = make()
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    x, w = _args(c, 17, 0, real)
    fast = simulate(c, x if c.n_inputs else None, w, method="fast", dtype=dtype)
    gates = simulate(c, x if c.n_inputs else None, w, method="gates", dtype=dtype)
    torch.testing.assert_close(fast, gates, **TOL[dtype])


def test_fast_path_gradients_equal_gate_path():
    c = hardware_efficient(4, 2, reupload=True)
    x0, w0 = _args(c, 9, 1)
    grads = []
    for method in ("fast", "gates"):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        expval_z(simulate(c, x, w, method=method, dtype=torch.complex128)).pow(2).sum().backward()
        grads.append((x.grad, w.grad))
    torch.testing.assert_close(grads[0], grads[1], **TOL[torch.complex128])


def test_readouts_match_qiskit():
    pytest.importorskip("qiskit")
    from qiskit.quantum_info import SparsePauliOp, Statevector

    from qpeft.backends.qiskit import to_qiskit

    n = 4
    c = random_circuit(n, 25, seed=3)
    x, w = _args(c, 1, 3)
    state = simulate(c, x, w, dtype=torch.complex128)
    sv = Statevector(to_qiskit(c, x[0].numpy(), w.numpy()))
    paulis = ["ZIII", "XYZI", "IIXX", "YYYY", "IZIZ"]
    ours = expval_pauli(state, paulis)[0]
    # Qiskit labels are little-endian: the last letter acts on qubit 0.
    theirs = [sv.expectation_value(SparsePauliOp(p[::-1])).real for p in paulis]
    np.testing.assert_allclose(ours.numpy(), theirs, **EXACT_TOL)
    z = expval_z(state)[0]
    theirs_z = [sv.expectation_value(SparsePauliOp("I" * (n - 1 - k) + "Z" + "I" * k)).real for k in range(n)]
    np.testing.assert_allclose(z.numpy(), theirs_z, **EXACT_TOL)
    probs = probabilities(state)
    assert torch.allclose(probs.sum(-1), torch.ones(1, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    c = hardware_efficient(6, 2)
    x, w = _args(c, 64, 0, torch.float32)
    cpu = expval_z(simulate(c, x, w))
    for method in ("fast", "gates"):
        gpu = expval_z(simulate(c, x.cuda(), w.cuda(), method=method))
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, **TOL[torch.complex64])


# ---- bad input -----------------------------------------------------------------------------


def test_wrong_number_of_inputs_or_weights():
    c = hardware_efficient(3, 1)
    with pytest.raises(ValueError, match=r"inputs of shape \(batch, 3\), got \(2, 4\)"):
        simulate(c, torch.zeros(2, 4), torch.zeros(6))
    with pytest.raises(ValueError, match=r"expects 6 weights.*got \(5,\)"):
        simulate(c, torch.zeros(2, 3), torch.zeros(5))
    layer = QuantumLayer(c)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(\.\.\., 3\)"):
        layer(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="bind needs 3 inputs and 6 weights"):
        c.bind([0.0], [0.0] * 6)


def test_wire_out_of_range_and_bad_ops():
    with pytest.raises(ValueError, match=r"wire\(s\) \[3\] of gate CNOT out of range.*0\.\.2"):
        Circuit(3).add("CNOT", [0, 3])
    with pytest.raises(ValueError, match="takes 1 angle"):
        Circuit(1).add("RX", [0])
    with pytest.raises(ValueError, match="repeated wires"):
        Circuit(2).add("CZ", [1, 1])
    with pytest.raises(ValueError, match="`n_qubits` must be a positive integer, got 0"):
        Circuit(0)


def test_unknown_ansatz_and_options():
    with pytest.raises(ValueError, match="unknown ansatz 'foo'; choose one of hardware_efficient"):
        build_ansatz("foo", 3)
    with pytest.raises(ValueError, match="`layers` must be a positive integer, got 0"):
        build_ansatz("hardware_efficient", 3, 0)
    with pytest.raises(ValueError, match="unknown encoding"):
        hardware_efficient(3, encoding="basis")
    with pytest.raises(ValueError, match="unknown simulation method"):
        simulate(hardware_efficient(2, 1), torch.zeros(1, 2), torch.zeros(4), method="magic")


def test_too_many_qubits_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"simulating 40 qubits .* GiB.*use fewer qubits"):
        check_memory(40, 1)
    with pytest.raises(ValueError, match="simulating 40 qubits"):
        QuantumLayer(hardware_efficient(40, 1))
    big = Circuit(36).add("H", [0])
    with pytest.raises(ValueError, match="GiB"):
        simulate(big)


def test_circuit_ir_counts_and_expansion():
    c = Circuit(2).add("RY", [0], Input(1)).add("RX", [1], Weight(2)).add("RZ", [0], Weight(2))
    assert (c.n_inputs, c.n_weights) == (2, 3)
    expanded, inputs_of, weights_of = c.expand_slots()
    assert (expanded.n_inputs, expanded.n_weights) == (1, 2)
    assert inputs_of == [1] and weights_of == [2, 2]
