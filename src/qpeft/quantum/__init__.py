"""The quantum core: gates, circuits, ansatze, simulators, gradients, export."""

from qpeft.quantum.ansatz import ANSATZE, build_ansatz, hardware_efficient
from qpeft.quantum.circuit import Circuit, Const, Input, Op, Weight
from qpeft.quantum.density import NoiseModel, simulate_density
from qpeft.quantum.export import to_originir, to_qasm2, to_qasm3
from qpeft.quantum.gates import GATES, gate_matrix, get_gate
from qpeft.quantum.shift import parameter_shift
from qpeft.quantum.simulator import simulate
from qpeft.quantum.statevector import apply_gate, expval_pauli, expval_z, probabilities

__all__ = [
    "ANSATZE",
    "GATES",
    "Circuit",
    "Const",
    "Input",
    "NoiseModel",
    "Op",
    "Weight",
    "apply_gate",
    "build_ansatz",
    "expval_pauli",
    "expval_z",
    "gate_matrix",
    "get_gate",
    "hardware_efficient",
    "parameter_shift",
    "probabilities",
    "simulate",
    "simulate_density",
    "to_originir",
    "to_qasm2",
    "to_qasm3",
]
