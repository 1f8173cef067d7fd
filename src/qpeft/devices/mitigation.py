"""Readout-error mitigation: invert each measured qubit's confusion matrix.

The measured distribution is ``p_meas = (C_0 x ... x C_k-1) p_true`` with
``C_q = [[1 - p01, p10], [p01, 1 - p10]]`` (columns: prepared 0, 1). Mitigation applies the
inverse of each ``C_q``, then clips negative entries (sampling noise can produce them) and
renormalises, so the result is again a distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
