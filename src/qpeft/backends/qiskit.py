"""Qiskit boundary: convert circuits (wire w -> qubit w) and run them on Qiskit Aer.

Qiskit orders basis states little-endian (qubit 0 is the least significant bit); qpeft is
big-endian (wire 0 most significant). :func:`qpeft.quantum.bitorder.reverse_bit_order`
converts vectors of length ``2**n`` between the two.
"""

from __future__ import annotations

import numpy as np

from qpeft.backends.base import ProbabilityBackend, require
from qpeft.quantum.bitorder import reverse_bit_order
from qpeft.quantum.circuit import Circuit, Const, Input
from qpeft.quantum.gates import GATES
from qpeft.quantum.shots import check_shots


def to_qiskit(circuit: Circuit, inputs=None, weights=None, parameters=None):
    """A ``qiskit.QuantumCircuit`` for one input row and weights (or, with ``parameters``,
    a parameterized circuit whose k-th angle slot reads ``parameters[k]``)."""
    qiskit = require("qiskit", "qiskit")
    qc = qiskit.QuantumCircuit(circuit.n_qubits)
    if circuit.amplitude_encoding:
        if inputs is None:
            raise ValueError("an amplitude-encoded circuit needs its input vector to convert")
        vec = np.asarray(inputs, dtype=np.float64)
        vec = vec / np.linalg.norm(vec)
        prep = qiskit.circuit.library.StatePreparation(reverse_bit_order(vec, circuit.n_qubits))
        qc.append(prep, range(circuit.n_qubits))
    slot = 0
    for op in circuit.ops:
        if parameters is not None:
            angles = [parameters[slot + k] for k in range(len(op.params))]
            slot += len(op.params)
        else:
            angles = op.row_angles(inputs, weights)
        getattr(qc, GATES[op.gate].qiskit)(*angles, *op.wires)
    return qc


def _slot_values(circuit: Circuit, inputs, weights, batch: int) -> np.ndarray:
    """(batch, n_slots) angle of every parameter slot for every row."""
    cols = []
    for op in circuit.ops:
        for p in op.params:
            if isinstance(p, Const):
                cols.append(np.full(batch, p.value))
            elif isinstance(p, Input):
                cols.append(inputs[:, p.index])
            else:
                w = weights[..., p.index]
                cols.append(np.broadcast_to(w, (batch,)))
    return np.stack(cols, axis=1) if cols else np.zeros((batch, 0))


class QiskitBackend(ProbabilityBackend):
    """Runs the batch on a Qiskit Aer simulator (exact probabilities, or ``shots`` samples)
    in one ``run`` call with one bound circuit per row."""

    name = "qiskit"

    def __init__(self, simulator=None, shots: int | None = None, seed: int | None = None):
        aer = require("qiskit_aer", "qiskit")
        self.simulator = simulator or aer.AerSimulator(method="statevector")
        check_shots(shots, allow_none=True)
        self.shots, self.seed = shots, seed

    def probabilities(self, circuit: Circuit, inputs, weights) -> np.ndarray:
        """(batch, 2^n) probabilities in qpeft (big-endian) order."""
        qiskit = require("qiskit", "qiskit")
        require("qiskit_aer", "qiskit")  # registers save_probabilities
        x = None if inputs is None else inputs.detach().cpu().double().numpy()
        w = None if weights is None else weights.detach().cpu().double().numpy()
        batch = x.shape[0] if x is not None else (w.shape[0] if w is not None and w.ndim == 2 else 1)
        n = circuit.n_qubits
        if circuit.amplitude_encoding:
            circuits = [self._finish(to_qiskit(circuit, x[b], w)) for b in range(batch)]
            # Aer has no `state_preparation` instruction: unroll it for the simulator
            circuits = qiskit.transpile(circuits, self.simulator, optimization_level=0)
            result = self.simulator.run(circuits, shots=self.shots, seed_simulator=self.seed).result()
        else:
            values = _slot_values(circuit, x, w, batch)
            params = qiskit.circuit.ParameterVector("a", values.shape[1])
            template = self._finish(to_qiskit(circuit, parameters=params))
            # Bound in Python, one circuit per row: Aer's own `parameter_binds` silently
            # leaves controlled rotations (crx, cry) unbound (seen with qiskit-aer 0.18).
            circuits = [template.assign_parameters(dict(zip(params, row))) for row in values.tolist()]
            result = self.simulator.run(circuits, shots=self.shots, seed_simulator=self.seed).result()
        rows = []
        for b in range(batch):
            if self.shots is None:
                rows.append(np.asarray(result.data(b)["probabilities"]))
            else:
                counts = result.get_counts(b)
                row = np.zeros(2**n)
                for bits, c in counts.items():
                    row[int(bits, 2)] = c / self.shots
                rows.append(row)
        return reverse_bit_order(np.stack(rows), n)

    def _finish(self, qc):
        if self.shots is None:
            qc.save_probabilities()
        else:
            qc.measure_all()
        return qc
