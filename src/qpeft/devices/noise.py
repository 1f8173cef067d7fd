"""A device's noise, two ways from one description: :class:`CalibratedNoise` for qpeft's
density-matrix simulator, and a Qiskit Aer ``NoiseModel`` (to cross-check it, and for users
who simulate with Aer). Both use the same depolarizing parameters, computed once by
:meth:`CalibratedNoise.depolarizing` (Aer's own rule for device noise)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from qpeft.devices.device import Device
from qpeft.quantum.superop import CalibratedNoise

#: Native (Qiskit) gate name -> the qpeft gate it becomes in a transpiled circuit.
QPEFT_GATE = {"rz": "RZ", "rx": "RX", "sx": "RX", "x": "X", "u3": "U3", "cz": "CZ"}


def calibrated_noise(device: Device, qubits: Sequence[int] | None = None) -> CalibratedNoise:
    """The noise on a circuit whose wire k is device qubit ``qubits[k]`` (all qubits by default).

    On IBM devices ``sx`` and ``x`` both become qpeft gates (RX(pi/2), X) with their own
    durations; they share the qubit's one-qubit fidelity.
    """
    qubits = list(range(device.n_qubits)) if qubits is None else list(qubits)
    wire = {q: k for k, q in enumerate(qubits)}
    pairs = {}
    for a, b in device.edges:
        if a in wire and b in wire:
            wa, wb = wire[a], wire[b]
            pairs[(min(wa, wb), max(wa, wb))] = device.pair_fidelity[device.pair_index(a, b)]
    durations = {}
    for gate in device.native_gates:
        name = QPEFT_GATE[gate]
        # sx and x both exist on IBM: RX (from sx) takes the sx duration.
        if name not in durations or gate == "sx":
            durations[name] = device.durations[gate]
    return CalibratedNoise(
        fidelity_1q=tuple(device.single_qubit_fidelity[q] for q in qubits),
        fidelity_2q=pairs,
        t1=tuple(device.t1[q] for q in qubits),
        t2=tuple(device.t2[q] for q in qubits),
        durations=durations,
        readout_p01=tuple(device.readout_p01[q] for q in qubits),
        readout_p10=tuple(device.readout_p10[q] for q in qubits),
        virtual_gates=frozenset(QPEFT_GATE[g] for g in device.virtual_gates),
    )


def aer_noise_model(device: Device, qubits: Sequence[int] | None = None):
    """A ``qiskit_aer.noise.NoiseModel`` on the device's physical qubits (all available ones,
    or only ``qubits``: faster to build for a circuit that uses few): per gate, depolarizing
    then thermal relaxation over the gate's duration; per qubit, its readout error."""
    try:
        noise = importlib.import_module("qiskit_aer.noise")
    except ImportError as err:
        raise ImportError("an Aer noise model needs qiskit-aer: `pip install qpeft[qiskit]`") from err
    ours = calibrated_noise(device)
    model = noise.NoiseModel(basis_gates=list(device.native_gates))

    def relax(q: int, t: float):
        return noise.thermal_relaxation_error(device.t1[q], device.t2[q], t)

    chosen = set(device.available_qubits if qubits is None else qubits)
    for q in sorted(chosen):
        for gate in device.native_gates:
            if gate == device.two_qubit_gate or gate in device.virtual_gates:
                continue
            lam = ours.depolarizing(QPEFT_GATE[gate], (q,))
            error = noise.depolarizing_error(lam, 1).compose(relax(q, device.durations[gate]))
            model.add_quantum_error(error, gate, [q])
        p01, p10 = device.readout_p01[q], device.readout_p10[q]
        model.add_readout_error(noise.ReadoutError([[1 - p01, p01], [p10, 1 - p10]]), [q])
    gate2 = device.two_qubit_gate
    t = device.durations[gate2]
    for a, b in (e for e in device.available_edges if set(e) <= chosen):
        lam = ours.depolarizing(QPEFT_GATE[gate2], (a, b))
        for x, y in ((a, b), (b, a)):
            # expand: the first qubit of the list is the error's qubit 0
            error = noise.depolarizing_error(lam, 2).compose(relax(x, t).expand(relax(y, t)))
            model.add_quantum_error(error, gate2, [x, y])
    return model
