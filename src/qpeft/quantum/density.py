"""Density-matrix simulation with noise, differentiable end to end.

A density matrix is a complex ``(batch, 2, ..., 2, 2, ..., 2)`` tensor: ``n`` row axes,
then ``n`` column axes. Gates act as ``U rho U^dagger``; channels as
``sum_k K rho K^dagger``. Channel conventions follow PennyLane:

* depolarizing(p), one qubit: ``(1-p) rho + p/3 (X rho X + Y rho Y + Z rho Z)``; the Bloch
  vector shrinks by ``1 - 4p/3``. Two qubits: ``(1-p) rho + p/15 sum_{P != II} P rho P``.
* amplitude damping(gamma): ``K0 = [[1, 0], [0, sqrt(1-gamma)]]``, ``K1 = [[0, sqrt(gamma)], [0, 0]]``.
* phase damping(lambda): ``K0 = [[1, 0], [0, sqrt(1-lambda)]]``, ``K1 = [[0, 0], [0, sqrt(lambda)]]``.
* readout error: each measured bit flips 0->1 with ``p01`` and 1->0 with ``p10``.

:func:`simulate_density` fuses every gate with the channels after it into one superoperator
(and neighbouring gates into blocks of two wires): :mod:`qpeft.quantum.superop`. The Kraus
channels here (:func:`apply_channel`) are what those superoperators are made of, and the
reference the fused simulation is tested against.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qpeft.quantum.circuit import Circuit
from qpeft.quantum.gates import gate_matrix
from qpeft.quantum.statevector import apply_gate, expval_z_from_probs
from qpeft.quantum.superop import CalibratedNoise, NoisyCircuit, embed, kraus_superop


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
        """Whether every channel's probability is 0 (the noisy simulation then equals the exact one)."""
        return all(getattr(self, f) == 0 for f in self.__dataclass_fields__)

    def noise_superop(self, gate: str, wires: tuple[int, ...], dtype, device) -> torch.Tensor | None:
        """(4^k, 4^k) superoperator of the noise after ``gate`` on ``wires``: depolarizing on
        the wires (one- and two-qubit gates), then amplitude and phase damping on each wire;
        None when there is none. The gate's name does not matter here."""
        p = self.depolarizing if len(wires) == 1 else self.depolarizing_2q
        out = None
        if p and len(wires) <= 2:
            out = kraus_superop(depolarizing_kraus(p, len(wires), dtype, device))
        damping = []
        if self.amplitude_damping:
            damping.append(kraus_superop(amplitude_damping_kraus(self.amplitude_damping, dtype, device)))
        if self.phase_damping:
            damping.append(kraus_superop(phase_damping_kraus(self.phase_damping, dtype, device)))
        for w in wires:
            for s in damping:
                s = embed(s, (w,), wires)
                out = s if out is None else s @ out
        return out


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
    """The Kraus operators of the ``n_wires``-qubit depolarizing channel with probability ``p``:
    ``sqrt(1 - p) I`` and ``sqrt(p / (4^n - 1)) P`` for every other Pauli string ``P`` (PennyLane's
    convention: p spread evenly over the non-identity Paulis).

    Args:
        p: the depolarizing probability, in [0, 1].
        n_wires: 1 or 2 (any n works; 4^n operators).
        dtype: a complex torch dtype.
        device: the torch device.

    Returns:
        ``4^n_wires`` matrices of shape (2^n, 2^n), the identity term first.
    """
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
    """The two Kraus operators of amplitude damping with probability ``gamma`` (|1> decays to |0>):
    ``[[1, 0], [0, sqrt(1 - gamma)]]`` and ``[[0, sqrt(gamma)], [0, 0]]``.

    Args:
        gamma: the damping probability, in [0, 1].
        dtype: a complex torch dtype.
        device: the torch device.

    Returns:
        ``[K0, K1]``, each (2, 2).
    """
    k0 = torch.tensor([[1, 0], [0, math.sqrt(1 - gamma)]], dtype=dtype, device=device)
    k1 = torch.tensor([[0, math.sqrt(gamma)], [0, 0]], dtype=dtype, device=device)
    return [k0, k1]


def phase_damping_kraus(lam: float, dtype, device) -> list[torch.Tensor]:
    """The two Kraus operators of phase damping with probability ``lam`` (coherences shrink by
    ``sqrt(1 - lam)``): ``[[1, 0], [0, sqrt(1 - lam)]]`` and ``[[0, 0], [0, sqrt(lam)]]``.

    Args:
        lam: the damping probability, in [0, 1].
        dtype: a complex torch dtype.
        device: the torch device.

    Returns:
        ``[K0, K1]``, each (2, 2).
    """
    k0 = torch.tensor([[1, 0], [0, math.sqrt(1 - lam)]], dtype=dtype, device=device)
    k1 = torch.tensor([[0, 0], [0, math.sqrt(lam)]], dtype=dtype, device=device)
    return [k0, k1]


def simulate_density(
    circuit: Circuit,
    inputs: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    noise: NoiseModel | CalibratedNoise | None = None,
    *,
    dtype: torch.dtype = torch.complex64,
    device=None,
) -> torch.Tensor:
    """Final density matrices (batch, 2, ..., 2, 2, ..., 2) of a noisy circuit.

    Compiles the circuit with its noise on every call; to run one circuit many times, build a
    :class:`qpeft.quantum.superop.NoisyCircuit` once and call its ``run`` (the constant blocks
    are then kept). Raises ValueError when calibrated noise covers other wires than the circuit.
    """
    noise = noise or NoiseModel()
    if isinstance(noise, CalibratedNoise) and noise.n_wires != circuit.n_qubits:
        raise ValueError(f"calibrated noise covers {noise.n_wires} wires, the circuit has {circuit.n_qubits}")
    return NoisyCircuit(circuit, noise).run(inputs, weights, dtype=dtype, device=device)


def density_probabilities(rho: torch.Tensor, noise: NoiseModel | None = None) -> torch.Tensor:
    """Diagonal of rho as (batch, 2^n) probabilities, with the readout error applied."""
    batch = rho.shape[0]
    dim = int(round(math.sqrt(rho[0].numel())))
    return with_readout(torch.diagonal(rho.reshape(batch, dim, dim), dim1=-2, dim2=-1).real, noise)


def with_readout(probs: torch.Tensor, noise: NoiseModel | None) -> torch.Tensor:
    """(batch, 2^n) probabilities as read out through the readout error of ``noise`` (if any)."""
    if noise is not None and (noise.readout_p01 or noise.readout_p10):
        return apply_readout_error(probs, noise.readout_p01, noise.readout_p10)
    return probs


def readout_confusion(p01: float, p10: float) -> torch.Tensor:
    """(2, 2) float64 matrix C with C[measured, prepared]: columns are P(read | prepared)."""
    return torch.tensor([[1 - p01, p10], [p01, 1 - p10]], dtype=torch.float64)


def apply_per_wire(probs: torch.Tensor, matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply one (2, 2) matrix per wire to (batch, 2^n) probabilities: p' = (M_0 x ... x M_n-1) p."""
    n = int(math.log2(probs.shape[-1]))
    if len(matrices) != n:
        raise ValueError(f"need one matrix per wire ({n}), got {len(matrices)}")
    p = probs.reshape((probs.shape[0],) + (2,) * n)
    for w, m in enumerate(matrices):
        m = m.to(dtype=probs.dtype, device=probs.device)
        p = torch.movedim(torch.tensordot(p, m, dims=([w + 1], [1])), -1, w + 1)
    return p.reshape(probs.shape)


def apply_readout_error(
    probs: torch.Tensor, p01: float | Sequence[float], p10: float | Sequence[float]
) -> torch.Tensor:
    """Push (batch, 2^n) probabilities through an independent bit-flip confusion per wire
    (one pair of flip probabilities for all wires, or one per wire)."""
    n = int(math.log2(probs.shape[-1]))
    p01 = [p01] * n if isinstance(p01, int | float) else list(p01)
    p10 = [p10] * n if isinstance(p10, int | float) else list(p10)
    return apply_per_wire(probs, [readout_confusion(a, b) for a, b in zip(p01, p10)])


def marginal_probabilities(probs: torch.Tensor, wires: Sequence[int]) -> torch.Tensor:
    """(batch, 2^n) probabilities -> (batch, 2^k) of ``wires`` (in that order, first most significant)."""
    n = int(math.log2(probs.shape[-1]))
    p = probs.reshape((probs.shape[0],) + (2,) * n)
    others = [w + 1 for w in range(n) if w not in wires]
    if others:
        p = p.sum(dim=others)
    kept = sorted(wires)
    p = p.permute([0] + [1 + kept.index(w) for w in wires])
    return p.reshape(probs.shape[0], 2 ** len(wires))


def density_expval_z(rho: torch.Tensor, noise: NoiseModel | None = None) -> torch.Tensor:
    """<Z_w> per wire, (batch, n), including the readout error of ``noise``."""
    probs = density_probabilities(rho, noise)
    return expval_z_from_probs(probs, (rho.dim() - 1) // 2)
