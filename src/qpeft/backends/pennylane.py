"""PennyLane boundary: replay qpeft circuits as PennyLane operations on any device.

PennyLane orders wires like qpeft (wire 0 is the most significant bit), so no reordering.
"""

from __future__ import annotations

import torch

from qpeft.backends.base import Backend, require
from qpeft.quantum.circuit import Circuit, Const, Input
from qpeft.quantum.gates import GATES


def apply_pennylane_ops(circuit: Circuit, inputs, weights) -> None:
    """Queue the circuit's ops inside a QNode. ``inputs`` may be (batch, n_inputs): PennyLane
    parameter broadcasting then runs the whole batch in one execution."""
    qml = require("pennylane", "pennylane")
    if circuit.amplitude_encoding:
        qml.AmplitudeEmbedding(inputs, wires=range(circuit.n_qubits), normalize=True)
    for op in circuit.ops:
        angles = []
        for p in op.params:
            if isinstance(p, Const):
                # a tensor, so that PennyLane does not mix numpy and torch in one matrix
                ref = weights if weights is not None else inputs
                angles.append(torch.tensor(p.value, dtype=ref.dtype) if ref is not None else p.value)
            elif isinstance(p, Input):
                angles.append(inputs[..., p.index])
            else:
                angles.append(weights[..., p.index])
        getattr(qml, GATES[op.gate].pennylane)(*angles, wires=list(op.wires))


class PennyLaneBackend(Backend):
    """Runs circuits on a PennyLane device by name (``default.qubit``, ``lightning.qubit``,
    a hardware plugin, ...), broadcasting over the batch."""

    name = "pennylane"

    def __init__(
        self,
        device: str = "default.qubit",
        shots: int | None = None,
        diff_method: str = "best",
        **device_options,
    ):
        self.qml = require("pennylane", "pennylane")
        self.device_name, self.shots, self.diff_method = device, shots, diff_method
        self.device_options = device_options
        self.supports_backprop = device == "default.qubit" and shots is None
        self._devices: dict[int, object] = {}

    def _device(self, n_qubits: int):
        if n_qubits not in self._devices:
            self._devices[n_qubits] = self.qml.device(self.device_name, wires=n_qubits, **self.device_options)
        return self._devices[n_qubits]

    def qnode(self, circuit: Circuit, observable: str = "z"):
        """A torch-interface QNode ``f(inputs, weights)`` for this circuit."""
        qml = self.qml
        Backend.check_observable(observable)
        n = circuit.n_qubits
        diff = "backprop" if self.supports_backprop else self.diff_method

        @qml.qnode(self._device(n), interface="torch", diff_method=diff)
        def f(inputs, weights):
            apply_pennylane_ops(circuit, inputs, weights)
            if observable == "probs":
                return qml.probs(wires=range(n))
            return [qml.expval(qml.PauliZ(w)) for w in range(n)]

        if self.shots is not None:
            f = qml.set_shots(f, shots=self.shots)
        return f

    def run(self, circuit: Circuit, inputs, weights, observable: str = "z") -> torch.Tensor:
        out = self.qnode(circuit, observable)(inputs, weights)
        if observable == "z":
            out = torch.stack(list(out), dim=-1)
        ref = inputs if inputs is not None else weights
        out = out.to(ref.dtype)
        return out if out.dim() == 2 else out.unsqueeze(0)
