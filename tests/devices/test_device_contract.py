"""One contract over the device table: every preset builds, transpiles a circuit onto its
available qubits and couplers with its native gates only, without changing what the circuit
computes, and its calibrated noise on the transpiled circuit equals Qiskit Aer's
density-matrix simulation of the same noise model on the same ISA circuit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qpeft.devices import DEVICES, get_device
from qpeft.devices.executor import DeviceExecutor
from qpeft.devices.noise import aer_noise_model
from qpeft.devices.transpile import device_target, transpile
from qpeft.quantum.density import density_probabilities, marginal_probabilities, simulate_density
from qpeft.quantum.simulator import simulate
from qpeft.quantum.statevector import probabilities
from qpeft.testing import AER_NOISE_TOL, TOL, random_circuit

pytest.importorskip("qiskit")
pytest.importorskip("qiskit_aer")

GATES = ["RX", "RY", "RZ", "CZ", "CNOT", "U3", "H", "CRY"]


def load(name: str):
    if name.startswith("ibm_"):
        pytest.importorskip("qiskit_ibm_runtime")
    return get_device(name)


def aer_probabilities(dc, noise_model, inputs=None, weights=None) -> np.ndarray:
    """Aer (method="density_matrix", exact, no shots) probabilities of the original wires in
    qpeft order, before readout, for one row: the bound ISA circuit on all device qubits (Aer
    drops the idle ones) with ``noise_model`` on its physical qubits."""
    from qiskit_aer import AerSimulator

    bound = dc.bound_qiskit(inputs, weights)
    measured_on = {}
    for inst in bound.data:
        if inst.operation.name == "measure":
            measured_on[bound.find_bit(inst.clbits[0]).index] = bound.find_bit(inst.qubits[0]).index
    qc = bound.remove_final_measurements(inplace=False)
    # Aer lists the least significant qubit first: wire n-1 first gives qpeft's order.
    qc.save_probabilities(qubits=[measured_on[v] for v in reversed(range(len(measured_on)))])
    sim = AerSimulator(method="density_matrix", noise_model=noise_model)
    return np.asarray(sim.run(qc).result().data(0)["probabilities"])


@pytest.fixture(scope="module", params=list(DEVICES))
def device(request):
    return load(request.param)


def test_device_is_well_formed(device):
    assert device.available_qubits and device.available_edges
    assert device.two_qubit_gate == "cz"
    target = device_target(device)
    cz_pairs = {tuple(sorted(q)) for q in target["cz"]}
    assert cz_pairs == set(device.available_edges)
    assert set(target.operation_names) == set(device.native_gates) | {"measure"}


def test_transpiled_circuit_is_native_placed_and_equivalent(device):
    circuit = random_circuit(3, 10, seed=5, gates=GATES)
    torch.manual_seed(0)
    x = torch.rand(2, circuit.n_inputs, dtype=torch.float64) * 3
    w = torch.randn(circuit.n_weights, dtype=torch.float64)
    dc = transpile(circuit, device)
    isa = dc.qiskit_circuit
    assert set(isa.count_ops()) <= set(device.native_gates) | {"measure"}
    used = set(dc.report.physical_qubits)
    assert used <= set(device.available_qubits)
    for inst in isa.data:
        if len(inst.qubits) == 2:
            assert device.has_edge(*(isa.find_bit(q).index for q in inst.qubits))
            assert tuple(sorted(isa.find_bit(q).index for q in inst.qubits)) in device.available_edges
    assert dc.report.two_qubit_gates == isa.count_ops().get("cz", 0)
    # Noiseless, the transpiled circuit computes what the original does (qpeft simulator on both).
    exact = probabilities(simulate(circuit, x, w, dtype=torch.complex128))
    angles = dc.slot_weights(x, w)
    routed = probabilities(simulate(dc.circuit, None, angles, dtype=torch.complex128))
    torch.testing.assert_close(marginal_probabilities(routed, dc.measured_wires), exact, **TOL[torch.complex128])


def test_success_probability_is_the_product_of_target_fidelities(device):
    circuit = random_circuit(3, 8, seed=2, gates=GATES)
    dc = transpile(circuit, device)
    target = device_target(device)
    isa = dc.qiskit_circuit
    expected = 1.0
    for inst in isa.data:
        qargs = tuple(isa.find_bit(q).index for q in inst.qubits)
        expected *= 1 - target[inst.operation.name][qargs].error
    assert dc.report.success_probability == pytest.approx(expected, rel=1e-12)
    assert 0 < dc.report.success_probability < 1


def test_noise_matches_aer_density_matrix(device):
    """The torch density-matrix simulator with the device's calibrated noise against Aer's
    density-matrix simulation of aer_noise_model(device), exactly (no shots)."""
    circuit = random_circuit(3, 10, seed=7, gates=GATES)
    torch.manual_seed(1)
    x = torch.rand(2, circuit.n_inputs, dtype=torch.float64) * 3
    w = torch.randn(circuit.n_weights, dtype=torch.float64)
    executor = DeviceExecutor(device, dtype=torch.complex128)
    dc, noise = executor.transpiled(circuit)
    rho = simulate_density(dc.circuit, None, dc.slot_weights(x, w), noise, dtype=torch.complex128)
    ours = marginal_probabilities(density_probabilities(rho), dc.measured_wires)
    model = aer_noise_model(device, dc.report.physical_qubits)
    for row in range(2):
        theirs = aer_probabilities(dc, model, x[row], w)
        np.testing.assert_allclose(ours[row].numpy(), theirs, **AER_NOISE_TOL)
    exact = probabilities(simulate(circuit, x, w, dtype=torch.complex128))
    assert (ours - exact).abs().max() > 1e-3  # the noise is really there


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(ValueError, match="wukong72.*ibm_torino"):
        get_device("wukong73")
