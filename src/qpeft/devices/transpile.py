"""Transpile a qpeft circuit onto a device with Qiskit's preset pass managers, and bring the
result back as a qpeft circuit: the one that is simulated with the device's noise and the one
that is sent to the chip.

The device becomes a Qiskit ``Target`` (native gates, couplers, per-qubit and per-pair errors
and durations, readout errors), so Qiskit's layout passes (VF2Layout / VF2PostLayout score
candidate layouts by these errors) place the circuit on the best-calibrated connected qubits,
and SABRE routes it. No routing is done here.

Angles stay symbolic through the transpiler: every angle slot of the original circuit (each
occurrence of an input or weight, see :meth:`Circuit.expand_slots`) is a Qiskit ``Parameter``;
each angle of the transpiled circuit is an affine function of them (checked), kept as
``slot_matrix_x`` / ``slot_matrix_w`` / ``slot_offset``, so one transpilation serves every
batch of inputs and weights, and autograd flows through it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch

from qpeft.devices.device import Device
from qpeft.quantum.circuit import Circuit, Const, Input, Weight
from qpeft.quantum.gates import GATES

#: Native gate -> (qpeft gate, constant angles it stands for, or None to keep its own).
#: SX = exp(i pi/4) RX(pi/2): the global phase does not change any readout.
_FROM_QISKIT = {
    "rz": ("RZ", None),
    "rx": ("RX", None),
    "u3": ("U3", None),
    "x": ("X", None),
    "sx": ("RX", (math.pi / 2,)),
    "cz": ("CZ", None),
}
DEFAULT_OPTIMIZATION_LEVEL = 2


def _qiskit():
    try:
        return importlib.import_module("qiskit")
    except ImportError as err:
        raise ImportError("transpiling for a device needs qiskit: `pip install qpeft[qiskit]`") from err


def device_target(device: Device):
    """A ``qiskit.transpiler.Target`` for the device's available qubits and couplers."""
    _qiskit()
    from qiskit.circuit import Measure, Parameter
    from qiskit.circuit.library import CZGate, RXGate, RZGate, SXGate, U3Gate, XGate
    from qiskit.transpiler import InstructionProperties, Target

    theta, phi, lam = Parameter("theta"), Parameter("phi"), Parameter("lambda")
    gates = {"rz": RZGate(theta), "rx": RXGate(theta), "sx": SXGate(), "x": XGate(), "u3": U3Gate(theta, phi, lam)}
    target = Target(num_qubits=device.n_qubits, description=device.name)
    qubits = device.available_qubits
    for name in device.native_gates:
        if name == device.two_qubit_gate:
            continue
        virtual = name in device.virtual_gates
        target.add_instruction(
            gates[name],
            {
                (q,): InstructionProperties(
                    duration=0.0 if virtual else device.durations[name],
                    error=0.0 if virtual else 1 - device.single_qubit_fidelity[q],
                )
                for q in qubits
            },
        )
    pairs = {}
    for a, b in device.available_edges:
        props = InstructionProperties(
            duration=device.durations[device.two_qubit_gate], error=1 - device.pair_fidelity[device.pair_index(a, b)]
        )
        pairs[(a, b)] = pairs[(b, a)] = props
    target.add_instruction(CZGate(), pairs)
    target.add_instruction(
        Measure(),
        {
            (q,): InstructionProperties(duration=device.durations["measure"], error=1 - device.readout_fidelity(q))
            for q in qubits
        },
    )
    return target


@dataclass(frozen=True)
class TranspileReport:
    """What the chip will run, per circuit."""

    two_qubit_gates: int
    one_qubit_gates: int
    """physical (non-virtual) one-qubit gates"""
    depth: int
    swaps_added: int
    success_probability: float
    """estimated: product of the fidelities of every gate and of each measured qubit's readout"""
    physical_qubits: tuple[int, ...]
    """the device qubits the circuit uses, in the order of the compact circuit's wires"""

    def as_dict(self) -> dict:
        """The report as a JSON-ready dict (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class DeviceCircuit:
    """A transpiled circuit on the used device qubits only (wires compacted), whose angles
    are weights computed from the original inputs and weights by :meth:`slot_weights`."""

    circuit: Circuit
    measured_wires: tuple[int, ...]
    """compact wire that holds original wire v at the end (routing can move it)"""
    slot_matrix_x: torch.Tensor
    """(n_angles, n_input_slots) float64"""
    slot_matrix_w: torch.Tensor
    """(n_angles, n_weight_slots) float64"""
    slot_offset: torch.Tensor
    """(n_angles,) float64"""
    input_of_slot: tuple[int, ...]
    weight_of_slot: tuple[int, ...]
    report: TranspileReport
    device: Device
    qiskit_circuit: object
    """the transpiled (ISA) Qiskit circuit with measurements: what a QPU provider submits"""
    qiskit_slots: tuple
    """its Parameters: the input slots, then the weight slots"""

    def bound_qiskit(self, inputs=None, weights=None):
        """The ISA circuit for one row of inputs (n_inputs,) and weights (n_weights,)."""
        values = [float(inputs[i]) for i in self.input_of_slot] + [float(weights[i]) for i in self.weight_of_slot]
        used = self.qiskit_circuit.parameters
        return self.qiskit_circuit.assign_parameters({p: v for p, v in zip(self.qiskit_slots, values) if p in used})

    def slot_weights(self, inputs: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor:
        """Angles of the transpiled circuit: (n_angles,), or (batch, n_angles) for batched
        inputs or weights. Differentiable in ``inputs`` and ``weights``."""
        ref = weights if weights is not None else inputs
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        device = ref.device if ref is not None else None
        out = self.slot_offset.to(dtype=dtype, device=device)
        if self.weight_of_slot:
            w = weights[..., list(self.weight_of_slot)]
            out = out + w @ self.slot_matrix_w.to(dtype=w.dtype, device=w.device).T
        if self.input_of_slot:
            x = inputs[:, list(self.input_of_slot)]
            out = out + x @ self.slot_matrix_x.to(dtype=x.dtype, device=x.device).T
        return out


def check_fits(circuit: Circuit, device: Device) -> None:
    """Raise a ValueError saying what to change when the circuit cannot be placed."""
    if circuit.amplitude_encoding:
        raise ValueError(
            "an amplitude-encoded circuit starts from its input vector, which is not a gate a chip can run; "
            "use angle encoding (or qnn_mode='weights') on a device"
        )
    entangling = any(len(op.wires) > 1 for op in circuit.ops)
    room = len(device.largest_connected_block()) if entangling else len(device.available_qubits)
    if circuit.n_qubits > room:
        where = "connected usable qubits" if entangling else "usable qubits"
        raise ValueError(
            f"the circuit needs {circuit.n_qubits} qubits but {device.name} has {room} {where}; "
            f"use fewer qubits (a smaller r) or a larger device"
        )


def _to_qiskit(circuit: Circuit):
    """The circuit with one Parameter per angle slot, measured into n classical bits."""
    qiskit = _qiskit()
    expanded, input_of_slot, weight_of_slot = circuit.expand_slots()
    xs = qiskit.circuit.ParameterVector("x", len(input_of_slot))
    ws = qiskit.circuit.ParameterVector("w", len(weight_of_slot))
    qc = qiskit.QuantumCircuit(circuit.n_qubits, circuit.n_qubits)
    for op in expanded.ops:
        angles = [p.value if isinstance(p, Const) else (xs if isinstance(p, Input) else ws)[p.index] for p in op.params]
        getattr(qc, GATES[op.gate].qiskit)(*angles, *op.wires)
    qc.measure(range(circuit.n_qubits), range(circuit.n_qubits))
    return qc, list(xs), list(ws), tuple(input_of_slot), tuple(weight_of_slot)


def transpile(
    circuit: Circuit, device: Device, optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL, seed: int = 0
) -> DeviceCircuit:
    """Place, route and translate ``circuit`` for ``device`` (Qiskit preset pass manager)."""
    qiskit = _qiskit()
    check_fits(circuit, device)
    qc, xs, ws, input_of_slot, weight_of_slot = _to_qiskit(circuit)
    pm = qiskit.transpiler.generate_preset_pass_manager(
        optimization_level=optimization_level, target=device_target(device), seed_transpiler=seed
    )
    most_swaps = [0]

    def count_swaps(dag, **_) -> None:  # routing adds swaps; translation later expands them
        most_swaps[0] = max(most_swaps[0], dag.count_ops().get("swap", 0))

    isa = pm.run(qc, callback=lambda **kw: count_swaps(**kw))
    swaps = max(0, most_swaps[0] - qc.count_ops().get("swap", 0))
    return _from_qiskit(isa, device, xs, ws, input_of_slot, weight_of_slot, swaps)


def _affine(value, index: dict, n_slots: int) -> tuple[list[float], float] | None:
    """(coefficients, offset) of an angle that is affine in the slot parameters; None if constant."""
    if not hasattr(value, "parameters") or not value.parameters:
        return None
    coeffs = [0.0] * n_slots
    for p in value.parameters:
        grad = value.gradient(p)
        if hasattr(grad, "parameters") and grad.parameters:
            raise ValueError(f"transpiled angle {value} is not affine in the circuit's parameters")
        coeffs[index[p]] = float(grad)
    offset = float(value.bind(dict.fromkeys(value.parameters, 0.0)))
    return coeffs, offset


def _from_qiskit(isa, device: Device, xs, ws, input_of_slot, weight_of_slot, swaps: int) -> DeviceCircuit:
    index = {p: i for i, p in enumerate(xs + ws)}
    n_slots = len(index)
    used = sorted({isa.find_bit(q).index for inst in isa.data for q in inst.qubits})
    wire = {q: k for k, q in enumerate(used)}
    out = Circuit(len(used))
    rows, offsets = [], []
    measured: dict[int, int] = {}
    fidelity, n_1q, n_2q = 1.0, 0, 0
    for inst in isa.data:
        name = inst.operation.name
        phys = [isa.find_bit(q).index for q in inst.qubits]
        if name == "measure":
            measured[isa.find_bit(inst.clbits[0]).index] = wire[phys[0]]
            fidelity *= device.readout_fidelity(phys[0])
            continue
        if name not in _FROM_QISKIT:
            raise ValueError(f"transpiled circuit holds {name!r}, which is not a native gate of {device.name}")
        gate, fixed = _FROM_QISKIT[name]
        params = []
        for value in fixed or inst.operation.params:
            affine = _affine(value, index, n_slots)
            if affine is None:
                params.append(Const(float(value)))
            else:
                params.append(Weight(len(rows)))
                rows.append(affine[0])
                offsets.append(affine[1])
        out.add(gate, [wire[q] for q in phys], *params)
        if len(phys) == 2:
            n_2q += 1
            fidelity *= device.pair_fidelity[device.pair_index(*phys)]
        elif name not in device.virtual_gates:
            n_1q += 1
            fidelity *= device.single_qubit_fidelity[phys[0]]
    matrix = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), n_slots)
    n_x = len(xs)
    report = TranspileReport(
        two_qubit_gates=n_2q,
        one_qubit_gates=n_1q,
        depth=isa.depth(lambda inst: inst.operation.name != "measure"),
        swaps_added=swaps,
        success_probability=fidelity,
        physical_qubits=tuple(used),
    )
    return DeviceCircuit(
        circuit=out,
        measured_wires=tuple(measured[v] for v in range(len(measured))),
        slot_matrix_x=matrix[:, :n_x],
        slot_matrix_w=matrix[:, n_x:],
        slot_offset=torch.tensor(offsets, dtype=torch.float64),
        input_of_slot=input_of_slot,
        weight_of_slot=weight_of_slot,
        report=report,
        device=device,
        qiskit_circuit=isa,
        qiskit_slots=tuple(xs + ws),
    )
