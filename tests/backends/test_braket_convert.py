"""The Braket boundary (qpeft.backends.braket) against qpeft's own simulators: every gate of the
table as Braket's unitary (one case per gate, as tests/quantum/test_gates.py does for Qiskit and
PennyLane), bit order, the CZ / CNOT rewrite for devices that lack one, and the uniform noise
model as a Braket NoiseModel against qpeft's density-matrix simulator, exactly. Skipped without
amazon-braket-sdk."""

import math

import numpy as np
import pytest
import torch

from qpeft.backends import get_backend
from qpeft.quantum import GATES, Circuit, Const, get_gate, simulate
from qpeft.testing import MATRIX_TOL, random_circuit

pytest.importorskip("braket.circuits")
pytest.importorskip("braket.default_simulator")

from braket.circuits import Circuit as BraketCircuit  # noqa: E402
from braket.devices import LocalSimulator  # noqa: E402

from qpeft.backends.braket import BRAKET_GATES, DECOMPOSED, counts_to_probs, noise_model, to_braket  # noqa: E402

ANGLES = (0.37, -1.21, 2.05)
#: gates whose Braket form is exactly one Braket gate (noise lands after it as after qpeft's)
ONE_TO_ONE = sorted(set(GATES) - set(DECOMPOSED))


def our_unitary(name: str, wires: list[int], n_qubits: int) -> np.ndarray:
    """U of one gate from qpeft's simulator: each basis state |k> amplitude-encoded, U|k> read
    back (wire 0 most significant), as tests/quantum/test_gates.py builds it."""
    c = Circuit(n_qubits, amplitude_encoding=True)
    c.add(name, wires, *[Const(a) for a in ANGLES[: get_gate(name).n_params]])
    basis = torch.eye(2**n_qubits, dtype=torch.float64)
    return simulate(c, basis, dtype=torch.complex128).reshape(2**n_qubits, -1).T.numpy()


def _wires(name):
    return [0] if GATES[name].n_wires == 1 else [1, 0]  # reversed wires exercise the order


def _up_to_phase(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """``theirs`` times the global phase that best aligns it with ``ours`` (U3's Braket form
    differs from qpeft's by e^{i (phi + lam) / 2}; any relative phase still shows)."""
    k = np.unravel_index(np.argmax(np.abs(ours)), ours.shape)
    return theirs * (ours[k] / theirs[k])


def test_every_gate_of_the_table_has_a_braket_form():
    assert set(BRAKET_GATES) == set(GATES)


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_matches_braket(name):
    n = GATES[name].n_wires
    c = Circuit(n).add(name, _wires(name), *[Const(a) for a in ANGLES[: GATES[name].n_params]])
    theirs = to_braket(c).to_unitary()  # Braket's unitary: qubit 0 the most significant bit, as qpeft
    ours = our_unitary(name, _wires(name), n)
    if name not in DECOMPOSED:
        np.testing.assert_allclose(theirs, ours, **MATRIX_TOL)
    np.testing.assert_allclose(_up_to_phase(ours, theirs), ours, atol=1e-10)


@pytest.mark.parametrize("name,missing", [("CZ", "cz"), ("CNOT", "cnot")])
def test_a_device_without_cz_or_cnot_gets_the_other_one(name, missing):
    c = Circuit(2).add(name, [1, 0])
    supported = {"h", "cz", "cnot", "rx", "ry", "rz"} - {missing}
    theirs = to_braket(c, supported=supported)
    assert missing not in {i.operator.name.lower() for i in theirs.instructions}
    np.testing.assert_allclose(theirs.to_unitary(), our_unitary(name, [1, 0], 2), atol=1e-12)
    with pytest.raises(ValueError, match=r"does not support the gate\(s\) \['xx'\]"):
        to_braket(Circuit(2).add("RXX", [0, 1], Const(0.3)), supported=supported)


def _exact_probs(braket_circuit, backend="braket_dm"):
    braket_circuit.probability()
    result = LocalSimulator(backend).run(braket_circuit, shots=0).result()
    return np.asarray(result.values[0])


NOISE = {
    "depolarizing": 0.03,
    "depolarizing_2q": 0.08,
    "amplitude_damping": 0.02,
    "phase_damping": 0.04,
    "readout_p01": 0.05,
    "readout_p10": 0.11,
}


@pytest.mark.parametrize("seed", range(3))
def test_noise_model_matches_qpefts_density_matrix_simulator(seed):
    """Gate noise through Braket's NoiseModel on its density-matrix simulator, and readout error as
    the model's Kraus channel before each measurement, equal qpeft's noisy backend exactly."""
    c = random_circuit(3, 14, seed, gates=ONE_TO_ONE)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, c.n_inputs, generator=g, dtype=torch.float64) * 4 - 2
    w = torch.rand(c.n_weights, generator=g, dtype=torch.float64) * 4 - 2
    ours = get_backend("noisy", noise=NOISE, dtype="complex128").run(c, x, w, "probs")[0].numpy()
    model = noise_model(NOISE)
    circuit = model.apply(to_braket(c, x[0].tolist(), w.tolist()))
    (readout,) = model.get_instructions_by_type().readout_noise  # (it attaches to measurements)
    for q in range(3):
        circuit.add_instruction(type(circuit.instructions[0])(readout.noise, q))
    np.testing.assert_allclose(_exact_probs(circuit), ours, atol=1e-10)


def test_a_noiseless_model_is_none_and_bad_fields_are_refused():
    assert noise_model({}) is None
    with pytest.raises(ValueError, match="depolarizing"):
        noise_model({"depolarizing": 1.5})
    with pytest.raises(TypeError, match="readout"):
        noise_model({"readout": 0.1})


def test_counts_place_each_bit_by_its_measured_qubit():
    # bit j of a key is qubit measured_qubits[j]; qpeft's wire 0 is the most significant bit
    assert counts_to_probs({"10": 3, "01": 1}, [0, 1], 2).tolist() == [0, 0.25, 0.75, 0]
    assert counts_to_probs({"10": 3, "01": 1}, [1, 0], 2).tolist() == [0, 0.75, 0.25, 0]
    assert counts_to_probs({"1": 4}, [2], 3).tolist() == [0, 1, 0, 0, 0, 0, 0, 0]  # wires 0, 1 idle: 0
    with pytest.raises(ValueError, match="holds no counts"):
        counts_to_probs({}, [0], 1)


def test_measure_covers_idle_wires_and_sampling_agrees():
    # wire 2 carries no gate: measured all the same, so the counts cover three wires
    c = Circuit(3).add("RY", [0], Const(1.1)).add("CNOT", [0, 1])
    braket_circuit = to_braket(c, measure=True)
    result = LocalSimulator("braket_sv").run(braket_circuit, shots=4000).result()
    probs = counts_to_probs(result.measurement_counts, result.measured_qubits, 3)
    p1 = math.sin(1.1 / 2) ** 2
    np.testing.assert_allclose(probs, [1 - p1, 0, 0, 0, 0, 0, p1, 0], atol=0.03)


def test_a_template_binds_like_the_bound_circuit():
    from braket.circuits import FreeParameter

    # every gate, the decomposed ones too: U3's three angles read three consecutive slots
    c = random_circuit(3, 16, 8, n_inputs=0)
    assert "U3" in {op.gate for op in c.ops}
    w = np.linspace(-1.3, 2.2, c.n_weights)
    slots = [p for op in c.ops for p in op.params]
    params = [FreeParameter(f"t{k}") for k in range(len(slots))]
    template = to_braket(c, parameters=params)
    values = {f"t{k}": (p.value if isinstance(p, Const) else w[p.index]) for k, p in enumerate(slots)}
    bound = template.make_bound_circuit(values)
    assert isinstance(bound, BraketCircuit)
    np.testing.assert_allclose(bound.to_unitary(), to_braket(c, weights=w).to_unitary(), atol=1e-12)
