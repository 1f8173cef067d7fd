"""The device's noise model: depolarizing parameters reproduce the calibrated gate fidelities
(measured by Qiskit's average_gate_fidelity), readout error as Aer samples it, readout
mitigation, and the noisy backend reached by a device name."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from qpeft.backends import get_backend
from qpeft.devices import get_device
from qpeft.devices.mitigation import mitigate_readout
from qpeft.devices.noise import aer_noise_model, calibrated_noise
from qpeft.quantum.density import apply_readout_error
from qpeft.quantum.shift import parameter_shift
from qpeft.quantum.simulator import simulate
from qpeft.quantum.statevector import expval_z, probabilities
from qpeft.testing import BATCH_TOL, FD_TOL, TOL, random_circuit

pytest.importorskip("qiskit_aer")
GATES = ["RX", "RY", "RZ", "CZ", "CNOT", "U3", "H"]


@pytest.mark.parametrize(("gate", "qubits"), [("rx", (0,)), ("u3", (45,)), ("cz", (45, 46)), ("cz", (38, 44))])
def test_aer_gate_error_has_the_calibrated_average_fidelity(gate, qubits):
    """Depolarizing lambda composed with relaxation gives the calibrated fidelity, per Qiskit;
    where relaxation alone already costs more (T2 ~ 1 us), the gate is as good as T1/T2 allow."""
    from qiskit.quantum_info import average_gate_fidelity
    from qiskit_aer.noise import thermal_relaxation_error

    d = get_device("wukong72")
    model = aer_noise_model(d, qubits)
    error = model._local_quantum_errors[gate][tuple(qubits)]
    calibrated = d.single_qubit_fidelity[qubits[0]] if gate != "cz" else d.pair_fidelity[d.pair_index(*qubits)]
    relax = [thermal_relaxation_error(d.t1[q], d.t2[q], d.durations[gate]) for q in qubits]
    relax = relax[0] if len(relax) == 1 else relax[0].expand(relax[1])
    expected = min(calibrated, average_gate_fidelity(relax.to_quantumchannel()))
    assert average_gate_fidelity(error.to_quantumchannel()) == pytest.approx(expected, abs=1e-12)


def test_readout_error_matches_aer_sampling():
    """Our exact readout-error probabilities against Aer's shots (measure + ReadoutError)."""
    from qiskit_aer import AerSimulator

    d = get_device("wukong72")
    c = random_circuit(3, 8, seed=3, n_inputs=0, gates=GATES)
    w = torch.randn(c.n_weights, dtype=torch.float64)
    backend = get_backend("noisy", noise=d, dtype=torch.complex128)
    ours = backend.run(c, None, w, "probs")[0].numpy()
    dc, _ = backend.device_executor.transpiled(c)
    shots = 200_000
    sim = AerSimulator(method="density_matrix", noise_model=aer_noise_model(d, dc.report.physical_qubits))
    counts = sim.run(dc.bound_qiskit(None, w), shots=shots, seed_simulator=11).result().get_counts()
    theirs = np.zeros(8)
    for bits, k in counts.items():
        theirs[int(bits[::-1], 2)] = k / shots  # clbit 0 (wire 0) is the rightmost character
    sigma = np.sqrt(ours * (1 - ours) / shots)
    assert np.all(np.abs(theirs - ours) <= 5 * sigma + 1e-9)
    assert d.readout_p01[dc.report.physical_qubits[0]] > 0.05  # a readout error that 5 sigma would see


def test_mitigation_inverts_the_readout_confusion():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(4, 8, dtype=torch.float64), -1)
    p01, p10 = [0.05, 0.08, 0.02], [0.07, 0.03, 0.1]
    torch.testing.assert_close(mitigate_readout(apply_readout_error(p, p01, p10), p01, p10), p, **TOL[torch.complex128])
    with pytest.raises(ValueError, match="cannot be mitigated"):
        mitigate_readout(p, [0.5, 0.0, 0.0], [0.5, 0.0, 0.0])


@pytest.mark.parametrize("shots", [None, 20_000])
def test_readout_mitigation_brings_estimates_closer_to_exact(shots):
    c = random_circuit(4, 12, seed=9, n_inputs=0, gates=GATES)
    torch.manual_seed(2)
    w = torch.randn(3, c.n_weights)
    exact = expval_z(simulate(c, None, w))
    raw = get_backend("noisy", noise="wukong72", shots=shots, seed=0).run(c, None, w)
    mitigated = get_backend("noisy", noise="wukong72", shots=shots, seed=0, mitigate_readout=True).run(c, None, w)
    err_raw, err_mit = (raw - exact).abs().mean(), (mitigated - exact).abs().mean()
    assert err_mit < 0.7 * err_raw, (err_raw, err_mit)


def test_noisy_backend_by_device_name():
    c = random_circuit(3, 8, seed=4, gates=GATES)
    x, w = torch.rand(5, c.n_inputs), torch.randn(c.n_weights)
    z = get_backend("noisy", noise="wukong72").run(c, x, w)
    assert z.shape == (5, 3)
    assert not torch.allclose(z, expval_z(simulate(c, x, w)), atol=1e-3)
    probs = get_backend("noisy", noise="wukong72", shots=100, seed=1).run(c, x, w, "probs")
    assert probs.shape == (5, 8) and torch.allclose(probs.sum(-1), torch.ones(5))
    assert torch.all((probs * 100 - (probs * 100).round()).abs() < 1e-4)  # frequencies of 100 shots
    with pytest.raises(ValueError, match="known devices: wukong72"):
        get_backend("noisy", noise="wukong")
    with pytest.raises(ValueError, match="need a device"):
        get_backend("noisy", mitigate_readout=True)


def test_gradients_through_the_device_path():
    """Backprop through transpile + noise equals the parameter-shift rule on the same noisy
    backend (the noise channels do not depend on the angles, so the shift rule is exact)."""
    c = random_circuit(3, 14, seed=1, gates=GATES)
    torch.manual_seed(3)
    x = torch.rand(2, c.n_inputs, dtype=torch.float64)
    w = torch.randn(c.n_weights, dtype=torch.float64, requires_grad=True)
    ibm = importlib.util.find_spec("qiskit_ibm_runtime") is not None
    backend = get_backend("noisy", noise="ibm_fez" if ibm else "wukong72", dtype=torch.complex128)
    (grad_bp,) = torch.autograd.grad(backend.run(c, x, w).sum(), w)
    shifted = parameter_shift(c, x, w, lambda circ, xs, ws: backend.run(circ, xs, ws))
    (grad_ps,) = torch.autograd.grad(shifted.sum(), w)
    torch.testing.assert_close(grad_bp, grad_ps, **FD_TOL)
    assert grad_bp.abs().max() > 1e-3


def test_calibrated_noise_covers_the_used_qubits_only():
    d = get_device("wukong72")
    noise = calibrated_noise(d, [45, 46, 51])
    assert noise.fidelity_2q == {(0, 1): 0.9519, (0, 2): 0.9589}
    assert noise.t1 == (d.t1[45], d.t1[46], d.t1[51])
    assert noise.depolarizing("RZ", (0,)) == 0 or "RZ" in noise.virtual_gates
    assert 0 < noise.depolarizing("CZ", (0, 1)) < 4 / 3 * (1 - 0.9519) + 1e-12
    assert math.isclose(noise.durations["CZ"], 40e-9)


def test_too_wide_for_a_density_matrix_says_the_limit():
    c = random_circuit(16, 20, seed=0, n_inputs=0, gates=["RY", "CZ"])
    with pytest.raises(ValueError, match="density matrix of 1[6-9] qubits has 4\\^1[6-9] entries"):
        get_backend("noisy", noise="wukong72").run(c, None, torch.zeros(c.n_weights))


def test_gate_folding_keeps_the_unitary():
    """Folded circuits compute the same state without noise; with noise, Richardson
    extrapolation over scales 1, 3, 5 brings Z expectations closer to exact."""
    from qpeft.devices.executor import DeviceExecutor
    from qpeft.devices.mitigation import fold_gates, richardson_weights

    assert richardson_weights([1, 3, 5]) == pytest.approx([15 / 8, -5 / 4, 3 / 8])
    c = random_circuit(3, 12, seed=8, n_inputs=0, gates=GATES)
    torch.manual_seed(4)
    w = torch.randn(2, c.n_weights, dtype=torch.float64)
    dc, _ = DeviceExecutor(get_device("wukong72")).transpiled(c)
    angles = dc.slot_weights(None, w)
    folded = fold_gates(dc.circuit, angles.shape[-1], 5)
    assert len(folded.ops) == 5 * len(dc.circuit.ops)
    plain = probabilities(simulate(dc.circuit, None, angles, dtype=torch.complex128))
    again = probabilities(simulate(folded, None, torch.cat([angles, -angles], -1), dtype=torch.complex128))
    torch.testing.assert_close(again, plain, **TOL[torch.complex128])
    with pytest.raises(ValueError, match="odd"):
        fold_gates(dc.circuit, angles.shape[-1], 2)


def test_zero_noise_extrapolation_brings_estimates_closer_to_exact():
    c = random_circuit(3, 12, seed=8, n_inputs=0, gates=GATES)
    torch.manual_seed(4)
    w = torch.randn(3, c.n_weights)
    exact = expval_z(simulate(c, None, w))
    readout_only = get_backend("noisy", noise="wukong72", mitigate_readout=True).run(c, None, w)
    zne = get_backend("noisy", noise="wukong72", mitigate_readout=True, zne_scales=(1, 3, 5)).run(c, None, w)
    assert (zne - exact).abs().mean() < 0.5 * (readout_only - exact).abs().mean()
    with pytest.raises(ValueError, match="odd positive"):
        get_backend("noisy", noise="wukong72", zne_scales=(1, 2))


def test_compiled_circuits_are_kept_across_runs_and_dropped_on_recalibration():
    """The transpiled circuit and its fused noise are built once per circuit structure; a
    recalibrated device (worse couplers) on the same executor compiles again and gives what a
    fresh executor on that device gives."""
    import dataclasses

    from qpeft.devices.executor import DeviceExecutor

    c = random_circuit(3, 10, seed=5, n_inputs=0, gates=["RY", "RZ", "CZ"])
    w = torch.randn(2, c.n_weights, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    d = get_device("wukong72")
    executor = DeviceExecutor(d, dtype=torch.complex128)
    first = executor.probabilities(c, None, w)
    compiled = executor.compiled(c)
    torch.testing.assert_close(executor.probabilities(c, None, w), first, rtol=0, atol=0)
    assert executor.compiled(c) is compiled  # nothing transpiled or fused again
    worse = dataclasses.replace(d, pair_fidelity=tuple(f - 0.05 for f in d.pair_fidelity))
    executor.device = worse
    assert executor.compiled(c) is not compiled
    again = executor.probabilities(c, None, w)
    fresh = DeviceExecutor(worse, dtype=torch.complex128).probabilities(c, None, w)
    torch.testing.assert_close(again, fresh, **BATCH_TOL)
    assert (again - first).abs().max() > 1e-4
