"""Circuit IR: an ordered list of ops; each op names a gate, its wires, and where each of
its angles comes from (a constant, an input feature, or a trainable weight).

>>> c = Circuit(2)
>>> c.add("RY", [0], Input(0)).add("RY", [1], Input(1)).add("CZ", [0, 1]).add("RX", [0], Weight(0))
>>> (c.n_inputs, c.n_weights)
(2, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from qpeft.quantum.gates import GATES, get_gate


@dataclass(frozen=True)
class Const:
    """An angle that is a fixed number (radians), e.g. after transpilation."""

    value: float


@dataclass(frozen=True)
class Input:
    """An angle read from input feature ``index`` of each circuit's row of inputs."""

    index: int


@dataclass(frozen=True)
class Weight:
    """An angle read from trainable weight ``index`` of the circuit's weight vector."""

    index: int


Param = Const | Input | Weight


@dataclass(frozen=True)
class Op:
    """One gate application: the gate's name (a :data:`qpeft.quantum.gates.GATES` entry), the
    wires it acts on (wire 0 the most significant bit) and where each of its angles comes from
    (:class:`Const`, :class:`Input` or :class:`Weight`)."""

    gate: str
    wires: tuple[int, ...]
    params: tuple[Param, ...] = ()

    @property
    def depends_on_input(self) -> bool:
        """Whether any angle of this op reads an input feature (such ops cannot be folded into an
        input-independent block)."""
        return any(isinstance(p, Input) for p in self.params)

    def row_angles(self, inputs: Sequence[float] | None, weights: Sequence[float] | None) -> list[float]:
        """This op's angles for one sample, as floats: a :class:`Const`'s value, ``inputs[i]`` for
        ``Input(i)``, ``weights[i]`` for ``Weight(i)`` (what the SDK converters and the job engine
        write into one bound circuit; :meth:`Circuit.angles` is the batched tensor form)."""
        out = []
        for p in self.params:
            if isinstance(p, Const):
                out.append(float(p.value))
            elif isinstance(p, Input):
                out.append(float(inputs[p.index]))
            else:
                assert isinstance(p, Weight)
                out.append(float(weights[p.index]))
        return out


@dataclass
class Circuit:
    """A parameterized circuit on ``n_qubits`` wires.

    ``amplitude_encoding=True`` means the circuit starts from the normalised input vector
    (length ``2**n_qubits``) instead of ``|0...0>``; its ops may then not read inputs.
    ``n_inputs`` / ``n_weights`` grow with the indices the ops use; they can be declared
    larger up front (e.g. a weight that is not used yet).
    """

    n_qubits: int
    ops: list[Op] = field(default_factory=list)
    amplitude_encoding: bool = False
    n_inputs: int = 0
    n_weights: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n_qubits, int) or self.n_qubits < 1:
            raise ValueError(f"`n_qubits` must be a positive integer, got {self.n_qubits!r}")
        if self.amplitude_encoding:
            self.n_inputs = max(self.n_inputs, 2**self.n_qubits)
        ops, self.ops = list(self.ops), []
        for op in ops:
            self.add(op.gate, op.wires, *op.params)

    def add(self, gate: str, wires: Sequence[int], *params: Param | float) -> Circuit:
        """Append one op (validated) and return the circuit, so calls chain."""
        spec = get_gate(gate)
        wires = tuple(int(w) for w in wires)
        if len(wires) != spec.n_wires:
            raise ValueError(f"gate {spec.name} acts on {spec.n_wires} wire(s), got wires {wires}")
        bad = [w for w in wires if not 0 <= w < self.n_qubits]
        if bad:
            raise ValueError(
                f"wire(s) {bad} of gate {spec.name} out of range for a {self.n_qubits}-qubit "
                f"circuit; use wires 0..{self.n_qubits - 1} or enlarge `n_qubits`"
            )
        if len(set(wires)) != len(wires):
            raise ValueError(f"gate {spec.name} got repeated wires {wires}")
        if len(params) != spec.n_params:
            raise ValueError(f"gate {spec.name} takes {spec.n_params} angle(s), got {len(params)}")
        params = tuple(p if isinstance(p, Const | Input | Weight) else Const(float(p)) for p in params)
        for p in params:
            if isinstance(p, Input):
                if self.amplitude_encoding:
                    raise ValueError(
                        "an amplitude-encoded circuit takes its inputs as the initial state; "
                        "its gates cannot read inputs (use angle encoding for re-uploading)"
                    )
                if p.index < 0:
                    raise ValueError(f"input index must be >= 0, got {p.index}")
                self.n_inputs = max(self.n_inputs, p.index + 1)
            elif isinstance(p, Weight):
                if p.index < 0:
                    raise ValueError(f"weight index must be >= 0, got {p.index}")
                self.n_weights = max(self.n_weights, p.index + 1)
        self.ops.append(Op(spec.name, wires, params))
        return self

    def __len__(self) -> int:
        return len(self.ops)

    def check_args(self, inputs: torch.Tensor | None, weights: torch.Tensor | None) -> None:
        """Raise a ValueError that says what to pass when inputs / weights do not fit.

        inputs: (batch, n_inputs) or None when the circuit reads none;
        weights: (n_weights,) or (batch, n_weights).
        """
        if self.n_inputs:
            if inputs is None or inputs.dim() != 2 or inputs.shape[-1] != self.n_inputs:
                got = None if inputs is None else tuple(inputs.shape)
                raise ValueError(
                    f"circuit expects inputs of shape (batch, {self.n_inputs}), got {got}; "
                    f"pass one row of {self.n_inputs} features per circuit"
                )
        elif inputs is not None and inputs.numel() and inputs.shape[-1] != 0:
            raise ValueError(f"circuit reads no inputs but got inputs of shape {tuple(inputs.shape)}")
        if self.n_weights:
            if weights is None or weights.dim() not in (1, 2) or weights.shape[-1] != self.n_weights:
                got = None if weights is None else tuple(weights.shape)
                raise ValueError(
                    f"circuit expects {self.n_weights} weights (shape ({self.n_weights},) or "
                    f"(batch, {self.n_weights})), got {got}"
                )
            if inputs is not None and weights.dim() == 2 and weights.shape[0] != inputs.shape[0]:
                raise ValueError(
                    f"batched weights have {weights.shape[0]} rows but inputs have "
                    f"{inputs.shape[0]}; give one weight row per input row or unbatched weights"
                )

    def angles(
        self, op: Op, inputs: torch.Tensor | None, weights: torch.Tensor | None, real_dtype, device
    ) -> list[torch.Tensor]:
        """The angle tensors of one op: scalars, (batch,) for inputs or batched weights."""
        out = []
        for p in op.params:
            if isinstance(p, Const):
                out.append(torch.tensor(p.value, dtype=real_dtype, device=device))
            elif isinstance(p, Input):
                out.append(inputs[:, p.index])
            else:
                out.append(weights[..., p.index])
        return out

    def bind(self, inputs: Sequence[float] | None = None, weights: Sequence[float] | None = None) -> Circuit:
        """A copy with every angle a constant (one sample), e.g. for export."""
        if self.amplitude_encoding:
            raise ValueError(
                "an amplitude-encoded circuit starts from its input vector, which is not a gate; "
                "it cannot be bound to a gate-only circuit (use angle encoding to export)"
            )
        inputs = [] if inputs is None else [float(v) for v in inputs]
        weights = [] if weights is None else [float(v) for v in weights]
        if len(weights) != self.n_weights or len(inputs) != self.n_inputs:
            raise ValueError(
                f"bind needs {self.n_inputs} inputs and {self.n_weights} weights, got {len(inputs)} and {len(weights)}"
            )

        def value(p: Param) -> Const:
            if isinstance(p, Input):
                return Const(inputs[p.index])
            if isinstance(p, Weight):
                return Const(weights[p.index])
            return p

        return Circuit(self.n_qubits, [Op(o.gate, o.wires, tuple(value(p) for p in o.params)) for o in self.ops])

    def expand_slots(self) -> tuple[Circuit, list[int], list[int]]:
        """A copy where every angle that reads an input or a weight reads its own index.

        Returns (circuit, input_of_slot, weight_of_slot): ``input_of_slot[k]`` is the original
        input index of new input k (likewise for weights). Parameter-shift rules shift one
        occurrence at a time; gradients of the originals are the sums over their slots.
        """
        input_of_slot: list[int] = []
        weight_of_slot: list[int] = []
        ops = []
        for o in self.ops:
            params = []
            for p in o.params:
                if isinstance(p, Input):
                    params.append(Input(len(input_of_slot)))
                    input_of_slot.append(p.index)
                elif isinstance(p, Weight):
                    params.append(Weight(len(weight_of_slot)))
                    weight_of_slot.append(p.index)
                else:
                    params.append(p)
            ops.append(Op(o.gate, o.wires, tuple(params)))
        return Circuit(self.n_qubits, ops), input_of_slot, weight_of_slot

    def without_final_diagonal(self) -> Circuit:
        """A copy without the trailing diagonal gates (``Gate.diagonal``: CZ, RZ, ...): they only
        change phases, so every computational-basis readout (Z expectations, probabilities) is
        unchanged. Inputs and weights keep their indices (Qiskit's pass of the same idea is
        ``RemoveDiagonalGatesBeforeMeasure``)."""
        ops = list(self.ops)
        while ops and GATES[ops[-1].gate].diagonal:
            ops.pop()
        return Circuit(self.n_qubits, ops, self.amplitude_encoding, self.n_inputs, self.n_weights)
