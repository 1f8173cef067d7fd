"""Density-matrix simulation with noise, differentiable end to end.

A density matrix is a complex ``(batch, 2, ..., 2, 2, ..., 2)`` tensor: ``n`` row axes,
then ``n`` column axes. Gates act as ``U rho U^dagger``; channels as
``sum_k K rho K^dagger``. Channel conventions follow PennyLane:

* depolarizing(p), one qubit: ``(1-p) rho + p/3 (X rho X + Y rho Y + Z rho Z)``; the Bloch
  vector shrinks by ``1 - 4p/3``. Two qubits: ``(1-p) rho + p/15 sum_{P != II} P rho P``.
* amplitude damping(gamma): ``K0 = [[1, 0], [0, sqrt(1-gamma)]]``, ``K1 = [[0, sqrt(gamma)], [0, 0]]``.
* phase damping(lambda): ``K0 = [[1, 0], [0, sqrt(1-lambda)]]``, ``K1 = [[0, 0], [0, sqrt(lambda)]]``.
* readout error: each measured bit flips 0->1 with ``p01`` and 1->0 with ``p10``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from qpeft.quantum.circuit import Circuit
from qpeft.quantum.gates import gate_matrix
from qpeft.quantum.statevector import (
    apply_gate,
    check_memory,
    expval_z_from_probs,
    initial_state,
    op_matrix,
    resolve_batch,
)


def _probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"noise `{name}` must be a probability in [0, 1], got {value}")
    return float(value)


@dataclass(frozen=True)
class NoiseModel:
    """Noise applied after every gate, on that gate's wires, and at readout."""

    depolarizing: float = 0.0
    """one-qubit depolarizing probability after each one-qubit gate"""
    depolarizing_2q: float = 0.0
    """two-qubit depolarizing probability after each two-qubit gate"""
    amplitude_damping: float = 0.0
    """amplitude-damping gamma on each wire a gate touched (T1 decay)"""
    phase_damping: float = 0.0
    """phase-damping lambda on each wire a gate touched (pure dephasing, T2)"""
    readout_p01: float = 0.0
    """probability that a 0 is read as 1"""
    readout_p10: float = 0.0
    """probability that a 1 is read as 0"""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            _probability(name, getattr(self, name))

    @property
    def is_noiseless(self) -> bool:
        return all(getattr(self, f) == 0 for f in self.__dataclass_fields__)


def pure_to_density(state: torch.Tensor) -> torch.Tensor:
    """|psi><psi| for a (batch, 2, ..., 2) state."""
    n = state.dim() - 1
    flat = state.reshape(state.shape[0], -1)
    rho = flat.unsqueeze(-1) * flat.conj().unsqueeze(-2)
    return rho.reshape((state.shape[0],) + (2,) * (2 * n))


def apply_unitary(rho: torch.Tensor, matrix: torch.Tensor, wires) -> torch.Tensor:
    """U rho U^dagger on ``wires``: U on the row axes, conj(U) on the column axes."""
    n = (rho.dim() - 1) // 2
    rho = apply_gate(rho, matrix, wires)
    return apply_gate(rho, matrix.conj(), [w + n for w in wires])


def apply_channel(rho: torch.Tensor, kraus: list[torch.Tensor], wires) -> torch.Tensor:
    """sum_k K rho K^dagger."""
    return sum(apply_unitary(rho, k, wires) for k in kraus)


def depolarizing_kraus(p: float, n_wires: int, dtype, device) -> list[torch.Tensor]:
    paulis = [gate_matrix(g, dtype=dtype, device=device) for g in "XYZ"]
    eye = torch.eye(2, dtype=dtype, device=device)
    ops = [eye] + paulis
    terms = []
    for combo in itertools.product(ops, repeat=n_wires):
        m = combo[0]
        for other in combo[1:]:
            m = torch.kron(m, other)
        terms.append(m)
    n_terms = len(terms) - 1  # 3 for one qubit, 15 for two
    return [math.sqrt(1 - p) * terms[0]] + [math.sqrt(p / n_terms) * t for t in terms[1:]]


def amplitude_damping_kraus(gamma: float, dtype, device) -> list[torch.Tensor]:
    k0 = torch.tensor([[1, 0], [0, math.sqrt(1 - gamma)]], dtype=dtype, device=device)
    k1 = torch.tensor([[0, math.sqrt(gamma)], [0, 0]], dtype=dtype, device=device)
    return [k0, k1]


def phase_damping_kraus(lam: float, dtype, device) -> list[torch.Tensor]:
    k0 = torch.tensor([[1, 0], [0, math.sqrt(1 - lam)]], dtype=dtype, device=device)
    k1 = torch.tensor([[0, 0], [0, math.sqrt(lam)]], dtype=dtype, device=device)
    return [k0, k1]


def _apply_gate_noise(rho: torch.Tensor, noise: NoiseModel, wires, dtype, device) -> torch.Tensor:
    p = noise.depolarizing if len(wires) == 1 else noise.depolarizing_2q
    if p and len(wires) <= 2:
        rho = apply_channel(rho, depolarizing_kraus(p, len(wires), dtype, device), wires)
    for w in wires:
        if noise.amplitude_damping:
            rho = apply_channel(rho, amplitude_damping_kraus(noise.amplitude_damping, dtype, device), [w])
        if noise.phase_damping:
            rho = apply_channel(rho, phase_damping_kraus(noise.phase_damping, dtype, device), [w])
    return rho


def simulate_density(
    circuit: Circuit,
    inputs: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    noise: NoiseModel | None = None,
    *,
    dtype: torch.dtype = torch.complex64,
    device=None,
) -> torch.Tensor:
    """Final density matrices (batch, 2, ..., 2, 2, ..., 2) of a noisy circuit."""
    noise = noise or NoiseModel()
    batch, device = resolve_batch(circuit, inputs, weights, device)
    # rho has 4^n entries: the same memory as a statevector of 2n qubits.
    check_memory(2 * circuit.n_qubits, batch, dtype, device, len(circuit.ops))
    rho = pure_to_density(initial_state(circuit, inputs, batch, dtype, device))
    for op in circuit.ops:
        rho = apply_unitary(rho, op_matrix(circuit, op, inputs, weights, dtype, device), op.wires)
        if not noise.is_noiseless:
            rho = _apply_gate_noise(rho, noise, op.wires, dtype, device)
    return rho


def density_probabilities(rho: torch.Tensor, noise: NoiseModel | None = None) -> torch.Tensor:
    """Diagonal of rho as (batch, 2^n) probabilities, with the readout error applied."""
    batch = rho.shape[0]
    dim = int(round(math.sqrt(rho[0].numel())))
    probs = torch.diagonal(rho.reshape(batch, dim, dim), dim1=-2, dim2=-1).real
    if noise is not None and (noise.readout_p01 or noise.readout_p10):
        probs = apply_readout_error(probs, noise.readout_p01, noise.readout_p10)
    return probs


def apply_readout_error(probs: torch.Tensor, p01: float, p10: float) -> torch.Tensor:
    """Push (batch, 2^n) probabilities through an independent bit-flip confusion per wire."""
    n = int(math.log2(probs.shape[-1]))
    confusion = torch.tensor([[1 - p01, p10], [p01, 1 - p10]], dtype=probs.dtype, device=probs.device)
    p = probs.reshape((probs.shape[0],) + (2,) * n)
    for w in range(n):
        p = torch.movedim(torch.tensordot(p, confusion, dims=([w + 1], [1])), -1, w + 1)
    return p.reshape(probs.shape)


def density_expval_z(rho: torch.Tensor, noise: NoiseModel | None = None) -> torch.Tensor:
    """<Z_w> per wire, (batch, n), including the readout error of ``noise``."""
    probs = density_probabilities(rho, noise)
    return expval_z_from_probs(probs, (rho.dim() - 1) // 2)
