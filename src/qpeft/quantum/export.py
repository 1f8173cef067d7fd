"""Export a bound circuit as OpenQASM 3, OpenQASM 2 or OriginIR text.

The circuit must be bound (every angle a constant): call ``circuit.bind(inputs, weights)``
first, or pass ``inputs`` / ``weights`` here. Wire ``w`` becomes qubit ``q[w]`` in every
format; the text formats carry no bit order, the simulators that read them do.
"""

from __future__ import annotations

from collections.abc import Sequence

from qpeft.quantum.circuit import Circuit, Const
from qpeft.quantum.gates import GATES


def _bound(circuit: Circuit, inputs, weights) -> Circuit:
    if inputs is not None or weights is not None or circuit.n_inputs or circuit.n_weights:
        circuit = circuit.bind(inputs, weights)
    for op in circuit.ops:
        assert all(isinstance(p, Const) for p in op.params), "bind() left a free angle"
    return circuit


def _angles(op) -> str:
    return ", ".join(repr(float(p.value)) for p in op.params)


def to_qasm(
    circuit: Circuit,
    inputs: Sequence[float] | None = None,
    weights: Sequence[float] | None = None,
    *,
    version: int = 3,
) -> str:
    """OpenQASM text (``version`` 3 or 2) of the circuit bound to one input row and weights."""
    if version not in (2, 3):
        raise ValueError(f"OpenQASM `version` must be 2 or 3, got {version!r}")
    c = _bound(circuit, inputs, weights)
    used = {op.gate for op in c.ops}
    if version == 3:
        lines = ["OPENQASM 3.0;", 'include "stdgates.inc";']
    else:
        lines = ["OPENQASM 2.0;", 'include "qelib1.inc";']
    # gates that the version's standard library lacks are defined in the header
    lines += [g.qasm_definition for g in GATES.values() if g.name in used and version not in g.qasm_stdlib]
    lines.append(f"qubit[{c.n_qubits}] q;" if version == 3 else f"qreg q[{c.n_qubits}];")
    for op in c.ops:
        name = GATES[op.gate].qasm
        args = f"({_angles(op)})" if op.params else ""
        wires = ", ".join(f"q[{w}]" for w in op.wires)
        lines.append(f"{name}{args} {wires};")
    return "\n".join(lines) + "\n"


def to_qasm3(circuit: Circuit, inputs=None, weights=None) -> str:
    """OpenQASM 3 text; see :func:`to_qasm`."""
    return to_qasm(circuit, inputs, weights, version=3)


def to_qasm2(circuit: Circuit, inputs=None, weights=None) -> str:
    """OpenQASM 2 text; see :func:`to_qasm`."""
    return to_qasm(circuit, inputs, weights, version=2)


def to_originir(circuit: Circuit, inputs=None, weights=None) -> str:
    """OriginIR text (QPanda / Origin QCloud) of the bound circuit.

    Controlled rotations are written as ``CONTROL q[c] / R q[t],(theta) / ENDCONTROL``, the
    form pyqpanda3 itself emits.
    """
    c = _bound(circuit, inputs, weights)
    lines = [f"QINIT {c.n_qubits}", f"CREG {c.n_qubits}"]
    for op in c.ops:
        angles = f",({_angles(op).replace(' ', '')})" if op.params else ""
        name = GATES[op.gate].originir
        if name.startswith("CONTROL "):
            ctrl, target = op.wires
            lines += [f"CONTROL q[{ctrl}]", f"{name.split()[1]} q[{target}]{angles}", "ENDCONTROL"]
            continue
        wires = ",".join(f"q[{w}]" for w in op.wires)
        lines.append(f"{name} {wires}{angles}")
    return "\n".join(lines) + "\n"
