"""pyqpanda3 boundary: run qpeft circuits on QPanda's local CPUQVM.

Origin QCloud (the ``origin_wukong`` chip) takes the same OriginIR; the remote service
comes with the hardware issue.
"""

from __future__ import annotations

import numpy as np

from qpeft.backends.base import ProbabilityBackend, require
from qpeft.quantum.bitorder import reverse_bit_order
from qpeft.quantum.circuit import Circuit


def to_qprog(circuit: Circuit, inputs=None, weights=None):
    """A pyqpanda3 ``QProg`` for one input row and weights, built gate by gate with
    pyqpanda3's own gate constructors (same names and angle order as qpeft's table)."""
    core = require("pyqpanda3.core", "pyqpanda3")
    prog = core.QProg()
    for op in circuit.bind(inputs, weights).ops:
        prog << getattr(core, op.gate)(*op.wires, *(p.value for p in op.params))
    return prog


def originir_to_qprog(text: str):
    """Parse OriginIR text (e.g. from :func:`qpeft.quantum.to_originir`) into a ``QProg``."""
    ic = require("pyqpanda3.intermediate_compiler", "pyqpanda3")
    return ic.convert_originir_string_to_qprog(text)


class PyQPanda3Backend(ProbabilityBackend):
    """Runs each circuit of the batch on pyqpanda3's CPUQVM (exact probabilities)."""

    name = "pyqpanda3"

    def __init__(self):
        self.core = require("pyqpanda3.core", "pyqpanda3")

    def probabilities(self, circuit: Circuit, inputs, weights) -> np.ndarray:
        """(batch, 2^n) probabilities in qpeft (big-endian) order."""
        if circuit.amplitude_encoding:
            raise ValueError("the pyqpanda3 backend runs gate circuits; use angle encoding")
        x = None if inputs is None else inputs.detach().cpu().double().numpy()
        w = None if weights is None else weights.detach().cpu().double().numpy()
        batch = x.shape[0] if x is not None else (w.shape[0] if w is not None and w.ndim == 2 else 1)
        rows = []
        qvm = self.core.CPUQVM()
        for b in range(batch):
            wb = None if w is None else (w[b] if w.ndim == 2 else w)
            qvm.run(to_qprog(circuit, None if x is None else x[b], wb), 1)
            amps = np.asarray(qvm.result().get_state_vector())
            rows.append(np.abs(amps) ** 2)
        # QPanda indexes basis states little-endian (qubit 0 least significant), like Qiskit.
        return reverse_bit_order(np.stack(rows), circuit.n_qubits)
