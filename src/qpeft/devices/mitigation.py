"""Error mitigation: readout-error mitigation (invert each measured qubit's confusion
matrix) and zero-noise extrapolation by global gate folding.

The measured distribution is ``p_meas = (C_0 x ... x C_k-1) p_true`` with
``C_q = [[1 - p01, p10], [p01, 1 - p10]]`` (columns: prepared 0, 1). Mitigation applies the
inverse of each ``C_q``, then clips negative entries (sampling noise can produce them) and
renormalises, so the result is again a distribution.

Zero-noise extrapolation runs the circuit at noise scales 1, 3, 5, ... (``G (G^dagger G)^k``:
the same unitary, k more rounds of every gate's noise) and extrapolates the measured values
to scale 0 with Richardson weights. It targets gate noise; readout error is not scaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qpeft.quantum.circuit import Circuit, Const, Op, Weight
from qpeft.quantum.density import apply_per_wire, readout_confusion


def confusion_matrices(p01: Sequence[float], p10: Sequence[float]) -> list[torch.Tensor]:
    """One (2, 2) float64 calibration matrix per measured qubit."""
    return [readout_confusion(a, b) for a, b in zip(p01, p10)]


def mitigate_readout(probs: torch.Tensor, p01: Sequence[float], p10: Sequence[float]) -> torch.Tensor:
    """(batch, 2^k) measured probabilities -> mitigated (clipped, renormalised) ones."""
    inverses = []
    for q, m in enumerate(confusion_matrices(p01, p10)):
        if abs(float(torch.linalg.det(m))) < 1e-9:
            raise ValueError(
                f"measured qubit {q} has p01 + p10 = 1 (readout carries no information); it cannot be mitigated"
            )
        inverses.append(torch.linalg.inv(m))
    q = apply_per_wire(probs, inverses).clamp_min(0)
    return q / q.sum(-1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)


def fold_gates(circuit: Circuit, n_angles: int, scale: int) -> Circuit:
    """Global gate folding ``G (G^dagger G)^k`` (``scale = 2k + 1``) of a transpiled circuit
    whose angles are constants or ``Weight(i)``, ``i < n_angles``. The inverse gates read
    ``Weight(n_angles + i)``: run the folded circuit with weights ``cat(a, -a)``."""
    if scale < 1 or scale % 2 == 0:
        raise ValueError(f"a folding scale must be an odd positive integer, got {scale}")

    def neg(p):
        return Const(-p.value) if isinstance(p, Const) else Weight(n_angles + p.index)

    inverse = []
    for op in reversed(circuit.ops):
        if op.gate not in _INVERSE_ORDER:
            raise ValueError(f"cannot fold gate {op.gate}: transpiled circuits hold {sorted(_INVERSE_ORDER)}")
        params = tuple(neg(op.params[i]) for i in _INVERSE_ORDER[op.gate])
        inverse.append(Op(op.gate, op.wires, params))
    ops = list(circuit.ops) + (inverse + list(circuit.ops)) * ((scale - 1) // 2)
    return Circuit(circuit.n_qubits, ops, n_weights=2 * n_angles)


#: Which angles of a gate its inverse takes, negated: U3(t, p, l)^-1 = U3(-t, -l, -p).
_INVERSE_ORDER = {"RZ": (0,), "RX": (0,), "U3": (0, 2, 1), "X": (), "CZ": ()}


def richardson_weights(scales: Sequence[int]) -> list[float]:
    """Coefficients c_i with sum_i c_i f(s_i) = f(0) for any polynomial f of degree < len(scales)."""
    weights = []
    for i, si in enumerate(scales):
        c = 1.0
        for j, sj in enumerate(scales):
            if j != i:
                c *= sj / (sj - si)
        weights.append(c)
    return weights
