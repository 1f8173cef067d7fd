"""The gate table: one registry, ``name -> Gate``: wires, angles, matrix, shift rule, the
gate's names in OpenQASM / Qiskit / PennyLane / OriginIR, and whether it is diagonal or a
permutation with phases. Adding a gate is adding one entry here; the exporters, the SDK
backends and the simulator's shortcuts all read the entry.

Convention (stated once for the whole package): wire 0 is the most significant bit,
i.e. the first tensor axis of a state, as in PennyLane. Qiskit's little-endian order is
converted only at the Qiskit boundary (``qpeft.backends.qiskit``).

Every ``matrix_fn`` takes real angle tensors of one common shape ``(...)`` (a scalar for an
unbatched gate, ``(batch,)`` for a batched one) plus ``dtype``/``device`` keywords and
returns a complex tensor of shape ``(..., 2**n_wires, 2**n_wires)`` built with
``torch.stack``, so gradients flow to the angles.

Shift rules are tuples of ``(coefficient, shift)`` pairs meaning
``df/dtheta = sum_k c_k * (f(theta + s_k) - f(theta - s_k))``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

ShiftRule = tuple[tuple[float, float], ...]

#: Two-term rule for gates exp(-i theta G / 2) whose generator G has eigenvalues +-1.
TWO_TERM: ShiftRule = ((0.5, math.pi / 2),)
_C1 = (math.sqrt(2) + 1) / (4 * math.sqrt(2))
_C2 = (math.sqrt(2) - 1) / (4 * math.sqrt(2))
#: Four-term rule for controlled rotations (generator eigenvalues 0, +-1/2).
FOUR_TERM: ShiftRule = ((_C1, math.pi / 2), (-_C2, 3 * math.pi / 2))


@dataclass(frozen=True)
class Gate:
    """One entry of the gate table (:data:`GATES`): a gate's name, its wires and angles, its
    matrix, its parameter-shift rule, and its names in the formats and SDKs qpeft exchanges
    circuits with (each field documented below). ``matrix_fn`` builds the ``(..., 2^n, 2^n)``
    matrix from (batched) angle tensors; one test checks every entry against Qiskit, PennyLane
    and finite differences."""

    name: str
    n_wires: int
    n_params: int
    matrix_fn: Callable[..., torch.Tensor]
    shift_rule: ShiftRule | None
    """Parameter-shift rule, the same for each of the gate's angles; None if n_params == 0."""
    qasm: str
    """OpenQASM 2 / 3 name (``qelib1.inc`` / ``stdgates.inc``, or defined in the header)."""
    qasm_stdlib: tuple[int, ...]
    """OpenQASM versions whose standard library has the gate."""
    qasm_definition: str | None
    """``gate ...`` definition written in the header of the other versions."""
    qiskit: str
    """``qiskit.QuantumCircuit`` method name."""
    pennylane: str
    """PennyLane operation class name."""
    originir: str
    """OriginIR name; ``"CONTROL RX"`` means a ``CONTROL ... ENDCONTROL`` block around RX."""
    diagonal: bool
    """The matrix is diagonal for every angle: the gate only changes phases."""
    permutation: bool
    """The matrix has one non-zero entry per row and column (a permutation with phases)."""


GATES: dict[str, Gate] = {}


def _register(
    name: str,
    n_wires: int,
    n_params: int,
    shift_rule: ShiftRule | None = None,
    *,
    qasm: str,
    pennylane: str,
    qasm_stdlib: tuple[int, ...] = (2, 3),
    qasm_definition: str | None = None,
    qiskit: str | None = None,
    originir: str | None = None,
    diagonal: bool = False,
    permutation: bool = False,
):
    assert qasm_definition or qasm_stdlib == (2, 3), f"{name}: give the OpenQASM definition"

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        GATES[name] = Gate(
            name,
            n_wires,
            n_params,
            fn,
            shift_rule,
            qasm=qasm,
            qasm_stdlib=qasm_stdlib,
            qasm_definition=qasm_definition,
            qiskit=qiskit or qasm,
            pennylane=pennylane,
            originir=originir or name,
            diagonal=diagonal,
            permutation=permutation or diagonal,
        )
        return fn

    return deco


def get_gate(name: str) -> Gate:
    """Look a gate up by (case-insensitive) name; unknown names list the known ones."""
    gate = GATES.get(name.upper())
    if gate is None:
        raise ValueError(f"unknown gate {name!r}; known gates: {', '.join(sorted(GATES))}")
    return gate


def _mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
    """Stack a nested list of same-shape tensors into (..., R, C)."""
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _cs(theta: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    half = theta / 2
    return torch.cos(half).to(dtype), torch.sin(half).to(dtype)


def _phase(theta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """exp(i theta) as a complex tensor, differentiable in theta."""
    return torch.polar(torch.ones_like(theta), theta).to(dtype)


def _const(values: list[list[complex]], dtype: torch.dtype, device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


# ---- parametric one-qubit gates -------------------------------------------------------


@_register("RX", 1, 1, TWO_TERM, qasm="rx", pennylane="RX")
def rx(theta, *, dtype=torch.complex64, device=None):
    """RX(t) = [[cos t/2, -i sin t/2], [-i sin t/2, cos t/2]]; two-term shift rule."""
    c, s = _cs(theta, dtype)
    return _mat([[c, -1j * s], [-1j * s, c]])


@_register("RY", 1, 1, TWO_TERM, qasm="ry", pennylane="RY")
def ry(theta, *, dtype=torch.complex64, device=None):
    """RY(t) = [[cos t/2, -sin t/2], [sin t/2, cos t/2]]; two-term shift rule."""
    c, s = _cs(theta, dtype)
    return _mat([[c, -s], [s, c]])


@_register("RZ", 1, 1, TWO_TERM, qasm="rz", pennylane="RZ", diagonal=True)
def rz(theta, *, dtype=torch.complex64, device=None):
    """RZ(t) = diag(e^{-it/2}, e^{it/2}); two-term shift rule."""
    zero = torch.zeros_like(theta).to(dtype)
    return _mat([[_phase(-theta / 2, dtype), zero], [zero, _phase(theta / 2, dtype)]])


@_register("U3", 1, 3, TWO_TERM, qasm="u3", qiskit="u", pennylane="U3")
def u3(theta, phi, lam, *, dtype=torch.complex64, device=None):
    """U3(t, p, l) = [[cos t/2, -e^{il} sin t/2], [e^{ip} sin t/2, e^{i(p+l)} cos t/2]]
    (Qiskit's and PennyLane's U3); each angle has the two-term shift rule."""
    c, s = _cs(theta, dtype)
    return _mat(
        [
            [c, -_phase(lam, dtype) * s],
            [_phase(phi, dtype) * s, _phase(phi + lam, dtype) * c],
        ]
    )


# ---- fixed one-qubit gates ----------------------------------------------------------------

_R2 = 1 / math.sqrt(2)


@_register("H", 1, 0, qasm="h", pennylane="Hadamard")
def h(*, dtype=torch.complex64, device=None):
    """H = [[1, 1], [1, -1]] / sqrt(2)."""
    return _const([[_R2, _R2], [_R2, -_R2]], dtype, device)


@_register("X", 1, 0, qasm="x", pennylane="PauliX", permutation=True)
def x(*, dtype=torch.complex64, device=None):
    """X = [[0, 1], [1, 0]]."""
    return _const([[0, 1], [1, 0]], dtype, device)


@_register("Y", 1, 0, qasm="y", pennylane="PauliY", permutation=True)
def y(*, dtype=torch.complex64, device=None):
    """Y = [[0, -i], [i, 0]]."""
    return _const([[0, -1j], [1j, 0]], dtype, device)


@_register("Z", 1, 0, qasm="z", pennylane="PauliZ", diagonal=True)
def z(*, dtype=torch.complex64, device=None):
    """Z = diag(1, -1)."""
    return _const([[1, 0], [0, -1]], dtype, device)


@_register("S", 1, 0, qasm="s", pennylane="S", diagonal=True)
def s(*, dtype=torch.complex64, device=None):
    """S = diag(1, i)."""
    return _const([[1, 0], [0, 1j]], dtype, device)


@_register("T", 1, 0, qasm="t", pennylane="T", diagonal=True)
def t(*, dtype=torch.complex64, device=None):
    """T = diag(1, e^{i pi/4})."""
    return _const([[1, 0], [0, complex(_R2, _R2)]], dtype, device)


# ---- two-qubit gates (first wire = control / most significant) ----------------------------


@_register("CNOT", 2, 0, qasm="cx", pennylane="CNOT", permutation=True)
def cnot(*, dtype=torch.complex64, device=None):
    """CNOT = |0><0| (x) I + |1><1| (x) X, control on the first wire."""
    return _const([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype, device)


@_register("CZ", 2, 0, qasm="cz", pennylane="CZ", diagonal=True)
def cz(*, dtype=torch.complex64, device=None):
    """CZ = diag(1, 1, 1, -1)."""
    return _const([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, -1]], dtype, device)


@_register(
    "SWAP",
    2,
    0,
    qasm="swap",
    qasm_stdlib=(3,),  # not in OpenQASM 2's qelib1.inc
    qasm_definition="gate swap a, b { cx a, b; cx b, a; cx a, b; }",
    pennylane="SWAP",
    permutation=True,
)
def swap(*, dtype=torch.complex64, device=None):
    """SWAP exchanges the two wires."""
    return _const([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype, device)


def _controlled(u: torch.Tensor) -> torch.Tensor:
    """|0><0| (x) I + |1><1| (x) U for a (..., 2, 2) U."""
    one = torch.ones_like(u[..., 0, 0])
    zero = torch.zeros_like(one)
    return _mat(
        [
            [one, zero, zero, zero],
            [zero, one, zero, zero],
            [zero, zero, u[..., 0, 0], u[..., 0, 1]],
            [zero, zero, u[..., 1, 0], u[..., 1, 1]],
        ]
    )


@_register(
    "CRX",
    2,
    1,
    FOUR_TERM,
    qasm="crx",
    qasm_stdlib=(3,),  # qelib1.inc has crz but neither crx nor cry
    qasm_definition="gate crx(theta) c, t { h t; crz(theta) c, t; h t; }",
    pennylane="CRX",
    originir="CONTROL RX",
)
def crx(theta, *, dtype=torch.complex64, device=None):
    """Controlled RX; four-term shift rule (generator eigenvalues 0, +-1/2)."""
    return _controlled(rx(theta, dtype=dtype))


@_register(
    "CRY",
    2,
    1,
    FOUR_TERM,
    qasm="cry",
    qasm_stdlib=(3,),
    qasm_definition="gate cry(theta) c, t { ry(theta/2) t; cx c, t; ry(-theta/2) t; cx c, t; }",
    pennylane="CRY",
    originir="CONTROL RY",
)
def cry(theta, *, dtype=torch.complex64, device=None):
    """Controlled RY; four-term shift rule."""
    return _controlled(ry(theta, dtype=dtype))


@_register("CRZ", 2, 1, FOUR_TERM, qasm="crz", pennylane="CRZ", originir="CONTROL RZ", diagonal=True)
def crz(theta, *, dtype=torch.complex64, device=None):
    """Controlled RZ; four-term shift rule."""
    return _controlled(rz(theta, dtype=dtype))


@_register(
    "RXX",
    2,
    1,
    TWO_TERM,
    qasm="rxx",
    qasm_stdlib=(),
    qasm_definition="gate rxx(theta) a, b { h a; h b; cx a, b; rz(theta) b; cx a, b; h a; h b; }",
    pennylane="IsingXX",
)
def rxx(theta, *, dtype=torch.complex64, device=None):
    """RXX(t) = exp(-i t/2 X(x)X) = cos t/2 I - i sin t/2 XX; two-term shift rule."""
    c, s = _cs(theta, dtype)
    zero = torch.zeros_like(c)
    js = -1j * s
    return _mat([[c, zero, zero, js], [zero, c, js, zero], [zero, js, c, zero], [js, zero, zero, c]])


@_register(
    "RYY",
    2,
    1,
    TWO_TERM,
    qasm="ryy",
    qasm_stdlib=(),
    qasm_definition=(
        "gate ryy(theta) a, b { rx(pi/2) a; rx(pi/2) b; cx a, b; rz(theta) b; cx a, b; rx(-pi/2) a; rx(-pi/2) b; }"
    ),
    pennylane="IsingYY",
)
def ryy(theta, *, dtype=torch.complex64, device=None):
    """RYY(t) = exp(-i t/2 Y(x)Y) = cos t/2 I - i sin t/2 YY; two-term shift rule."""
    c, s = _cs(theta, dtype)
    zero = torch.zeros_like(c)
    js = 1j * s
    return _mat([[c, zero, zero, js], [zero, c, -js, zero], [zero, -js, c, zero], [js, zero, zero, c]])


@_register(
    "RZZ",
    2,
    1,
    TWO_TERM,
    qasm="rzz",
    qasm_stdlib=(),
    qasm_definition="gate rzz(theta) a, b { cx a, b; rz(theta) b; cx a, b; }",
    pennylane="IsingZZ",
    diagonal=True,
)
def rzz(theta, *, dtype=torch.complex64, device=None):
    """RZZ(t) = exp(-i t/2 Z(x)Z) = diag(e^{-it/2}, e^{it/2}, e^{it/2}, e^{-it/2}); two-term."""
    m, p = _phase(-theta / 2, dtype), _phase(theta / 2, dtype)
    zero = torch.zeros_like(m)
    return _mat([[m, zero, zero, zero], [zero, p, zero, zero], [zero, zero, p, zero], [zero, zero, zero, m]])


def gate_matrix(
    name: str,
    angles: list[torch.Tensor] | tuple[torch.Tensor, ...] = (),
    *,
    dtype: torch.dtype = torch.complex64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The matrix of gate ``name`` for real angle tensors of one shape ``(...)``."""
    gate = get_gate(name)
    if len(angles) != gate.n_params:
        raise ValueError(f"gate {gate.name} takes {gate.n_params} angle(s), got {len(angles)}")
    if gate.n_params == 0:
        return gate.matrix_fn(dtype=dtype, device=device)
    return gate.matrix_fn(*torch.broadcast_tensors(*angles), dtype=dtype, device=device)
