"""Amazon Braket boundary: qpeft circuits as ``braket.circuits.Circuit``, qpeft's uniform noise
as a Braket ``NoiseModel``, and Braket's counts as qpeft probabilities.

* Bit order: Braket's bit strings list the measured qubits in ``measured_qubits`` order, qubit 0
  first when all are measured; qpeft's wire 0 is the most significant bit. Wire ``w`` is Braket
  qubit ``w``; :func:`counts_to_probs` places each bit by its qubit, so no reordering is assumed.
* Gates map onto a portable set that Braket's gate-model devices list (``rx ry rz h x y z s t
  cnot cz swap xx yy zz``): each qpeft gate of the table (:data:`qpeft.quantum.gates.GATES`) is
  one of them, except U3 (``rz(lam) ry(theta) rz(phi)``: the same unitary up to a global phase)
  and the controlled rotations (two CNOTs and two half-angle rotations, as Qiskit's definitions).
  Braket's rotations, ``xx``, ``yy`` and ``zz`` use qpeft's conventions (``exp(-i theta P / 2)``);
  ``tests/backends/test_braket_convert.py`` checks every gate's unitary against qpeft's simulator.
* Noise: a qpeft :class:`~qpeft.quantum.density.NoiseModel` (depolarizing after one- and
  two-qubit gates, amplitude and phase damping on each wire a gate touched, readout error) is the
  same Braket ``NoiseModel`` (Braket's depolarizing channels have qpeft's convention, p/3 per
  Pauli); readout error is a Kraus channel before each measurement (P(1|0) = ``readout_p01``,
  P(0|1) = ``readout_p10``). Noise follows every Braket gate, so a decomposed gate gets it after
  each of its parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

import numpy as np

from qpeft.backends.base import require
from qpeft.quantum.circuit import Circuit
from qpeft.quantum.density import NoiseModel


def _controlled(rotation: str) -> Callable:
    """A controlled rotation as two half-angle rotations around two CNOTs (X R(a) X = R(-a) for RY
    and RZ; CRX is CRZ conjugated by H on the target)."""

    def add(c, angle, control, target):
        if rotation == "rx":
            c.h(target)
        turn = "ry" if rotation == "ry" else "rz"
        getattr(c, turn)(target, angle / 2)
        c.cnot(control, target)
        getattr(c, turn)(target, -angle / 2)
        c.cnot(control, target)
        if rotation == "rx":
            c.h(target)

    return add


#: qpeft gate name -> how it is added to a Braket circuit: ``add(circuit, *angles, *wires)``
BRAKET_GATES: dict[str, Callable] = {
    "RX": lambda c, a, w: c.rx(w, a),
    "RY": lambda c, a, w: c.ry(w, a),
    "RZ": lambda c, a, w: c.rz(w, a),
    # U(theta, phi, lam) = e^{i (phi + lam) / 2} RZ(phi) RY(theta) RZ(lam)
    "U3": lambda c, theta, phi, lam, w: c.rz(w, lam).ry(w, theta).rz(w, phi),
    "H": lambda c, w: c.h(w),
    "X": lambda c, w: c.x(w),
    "Y": lambda c, w: c.y(w),
    "Z": lambda c, w: c.z(w),
    "S": lambda c, w: c.s(w),
    "T": lambda c, w: c.t(w),
    "CNOT": lambda c, a, b: c.cnot(a, b),
    "CZ": lambda c, a, b: c.cz(a, b),
    "SWAP": lambda c, a, b: c.swap(a, b),
    "CRX": _controlled("rx"),
    "CRY": _controlled("ry"),
    "CRZ": _controlled("rz"),
    "RXX": lambda c, t, a, b: c.xx(a, b, t),
    "RYY": lambda c, t, a, b: c.yy(a, b, t),
    "RZZ": lambda c, t, a, b: c.zz(a, b, t),
}
#: the qpeft gates whose Braket form is more than one gate (noise follows each part)
DECOMPOSED = ("U3", "CRX", "CRY", "CRZ")
# a two-qubit gate a device may lack -> (its Braket name, the same gate through the other one)
_SWAPPED = {
    "CZ": ("cz", lambda c, a, b: c.h(b).cnot(a, b).h(b)),
    "CNOT": ("cnot", lambda c, a, b: c.h(b).cz(a, b).h(b)),
}


def to_braket(
    circuit: Circuit,
    inputs: Sequence[float] | None = None,
    weights: Sequence[float] | None = None,
    parameters: Sequence | None = None,
    measure: bool = False,
    supported: Collection[str] | None = None,
):
    """A ``braket.circuits.Circuit`` of one bound circuit (``inputs`` and ``weights`` give its
    angles) or, with ``parameters``, of a template whose k-th angle slot (in op order, constants
    included) reads ``parameters[k]`` (a number or a ``braket.circuits.FreeParameter``).

    measure: end with a measurement of every wire (what a task's counts then cover, idle wires
    included, and what readout noise attaches to).
    supported: the device's operation names (its action's ``supportedOperations``); CZ is written
    as H CNOT H where it lacks ``cz`` (IonQ), CNOT as H CZ H where it lacks ``cnot``.

    Raises:
        ImportError: amazon-braket-sdk is not installed (``pip install qpeft[braket]``).
        ValueError: an amplitude-encoded circuit (Braket has no state preparation to give it), a
            gate this converter does not know, or one the device does not support (``supported``).
    """
    bk = require("braket.circuits", "braket")
    if circuit.amplitude_encoding:
        raise ValueError(
            "an amplitude-encoded circuit has no Braket form (no state preparation); use encoding='angle' or "
            "qnn_mode='weights'"
        )
    out = bk.Circuit()
    slot = 0
    for op in circuit.ops:
        if parameters is not None:
            angles = [parameters[slot + k] for k in range(len(op.params))]
        else:
            angles = op.row_angles(inputs, weights)
        slot += len(op.params)
        add = BRAKET_GATES.get(op.gate)
        if add is None:
            raise ValueError(f"gate {op.gate} has no Braket form yet; add it to qpeft.backends.braket.BRAKET_GATES")
        if supported is not None and op.gate in _SWAPPED and _SWAPPED[op.gate][0] not in supported:
            add = _SWAPPED[op.gate][1]
        add(out, *angles, *op.wires)
    if supported is not None:
        missing = sorted({i.operator.name.lower() for i in out.instructions} - set(supported) - {"measure"})
        if missing:
            raise ValueError(
                f"the device does not support the gate(s) {missing} this circuit needs; it supports {sorted(supported)}"
            )
    if measure:
        out.measure(list(range(circuit.n_qubits)))
    return out


def noise_model(noise: NoiseModel | dict):
    """A Braket ``NoiseModel`` with the noise of a qpeft :class:`NoiseModel` (or a dict of its
    fields): see the module docstring. None when ``noise`` is noiseless.

    Raises:
        ValueError: a field that is not a NoiseModel field, or a probability outside [0, 1].
    """
    noise = NoiseModel(**noise) if isinstance(noise, dict) else noise
    if noise.is_noiseless:
        return None
    circuits = require("braket.circuits", "braket")
    model_module = require("braket.circuits.noise_model", "braket")
    noises = require("braket.circuits.noises", "braket")
    gate = circuits.Gate
    one = [gate.Rx, gate.Ry, gate.Rz, gate.H, gate.X, gate.Y, gate.Z, gate.S, gate.T]
    two = [gate.CNot, gate.CZ, gate.Swap, gate.XX, gate.YY, gate.ZZ]
    model = model_module.NoiseModel()
    for gates, channel, p in (
        (one, noises.Depolarizing, noise.depolarizing),
        (two, noises.TwoQubitDepolarizing, noise.depolarizing_2q),
    ):
        criteria = model_module.GateCriteria(gates)
        if p:
            model.add_noise(channel(p), criteria)
        if noise.amplitude_damping:  # (a one-qubit channel after a two-qubit gate acts on each of its wires)
            model.add_noise(noises.AmplitudeDamping(noise.amplitude_damping), criteria)
        if noise.phase_damping:
            model.add_noise(noises.PhaseDamping(noise.phase_damping), criteria)
    if noise.readout_p01 or noise.readout_p10:
        p01, p10 = noise.readout_p01, noise.readout_p10
        keep = np.diag([math.sqrt(1 - p01), math.sqrt(1 - p10)])
        flip = np.array([[0.0, math.sqrt(p10)], [math.sqrt(p01), 0.0]])
        model.add_noise(noises.Kraus([keep, flip]), model_module.MeasureCriteria())
    return model


def counts_to_probs(counts: dict, measured_qubits: Sequence[int], n_qubits: int) -> np.ndarray:
    """Braket counts (bit strings whose j-th bit is qubit ``measured_qubits[j]``) as qpeft's
    probability vector over ``n_qubits`` wires (wire 0 the most significant bit); a wire that was
    not measured reads 0.

    Raises:
        ValueError: counts that hold nothing, or a measured qubit outside the circuit.
    """
    if any(not 0 <= q < n_qubits for q in measured_qubits):
        raise ValueError(f"measured qubits {list(measured_qubits)} do not fit a {n_qubits}-qubit circuit")
    weights = [1 << (n_qubits - 1 - q) for q in measured_qubits]
    probs = np.zeros(2**n_qubits)
    for bits, count in counts.items():
        probs[sum(w for w, bit in zip(weights, bits) if bit == "1")] += count
    total = probs.sum()
    if total <= 0:
        raise ValueError(f"a Braket result holds no counts ({dict(counts)!r})")
    return probs / total
