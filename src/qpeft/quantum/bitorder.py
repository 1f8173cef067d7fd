"""Bit-order conversion at the boundary to little-endian SDKs (Qiskit, QPanda).

qpeft is big-endian (wire 0 is the most significant bit of a basis index); Qiskit and
QPanda are little-endian (qubit 0 least significant). Reversing the bit order of the
index is its own inverse, so one function converts both ways.
"""

from __future__ import annotations

import numpy as np


def reverse_bit_order(vec, n_qubits: int) -> np.ndarray:
    """A (..., 2^n) vector re-indexed with the bits of its last index reversed: Qiskit /
    QPanda order to qpeft order, and back."""
    vec = np.asarray(vec)
    lead = vec.shape[:-1]
    axes = list(range(len(lead))) + [len(lead) + n_qubits - 1 - k for k in range(n_qubits)]
    return vec.reshape(lead + (2,) * n_qubits).transpose(axes).reshape(lead + (-1,))
