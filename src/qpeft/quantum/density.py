"""Density-matrix simulation with noise, differentiable end to end.

A density matrix is a complex ``(batch, 2, ..., 2, 2, ..., 2)`` tensor: ``n`` row axes,
then ``n`` column axes. Gates act as ``U rho U^dagger``; channels as
``sum_k K rho K^dagger``. Channel conventions follow PennyLane:

* depolarizing(p), one qubit: ``(1-p) rho + p/3 (X rho X + Y rho Y + Z rho Z)``; the Bloch
  vector shrinks by ``1 - 4p/3``. Two qubits: ``(1-p) rho + p/15 sum_{P != II} P rho P``.
* amplitude damping(gamma): ``K0 = [[1, 0], [0, sqrt(1-gamma)]]``, ``K1 = [[0, sqrt(gamma)], [0, 0]]``.
* phase damping(lambda): ``K0 = [[1, 0], [0, sqrt(1-lambda)]]``, ``K1 = [[0, 0], [0, sqrt(lambda)]]``.
* readout error: each measured bit flips 0->1 with ``p01`` and 1->0 with ``p10``.

:class:`CalibratedNoise` is the per-wire noise of a calibrated chip (built by
``qpeft.devices``), in Qiskit Aer's conventions so that the two simulators can be compared:

* depolarizing(lambda) on k wires: ``(1 - lambda) rho + lambda Tr_k(rho) (x) I / 2^k``
  (Qiskit's ``depolarizing_error(lambda, k)``; PennyLane's p is ``lambda (4^k - 1) / 4^k``);
* thermal relaxation over a gate of duration t (Aer's ``thermal_relaxation_error(T1, T2, t)``,
  no excited-state population): populations relax to |0> with ``gamma = 1 - exp(-t/T1)``,
  coherences decay by ``exp(-t/T2)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from qpeft.quantum.circuit import Circuit, Const
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


def _average_fidelity(process_fidelity: float, dim: int) -> float:
    return (dim * process_fidelity + 1) / (dim + 1)


def relaxation_superop(t1: float, t2: float, duration: float, dtype=torch.complex64, device=None) -> torch.Tensor:
    """(4, 4) superoperator of thermal relaxation, acting on vec(rho) = (rho00, rho01, rho10, rho11)."""
    gamma = 1 - math.exp(-duration / t1)
    coherence = math.exp(-duration / t2)
    s = torch.zeros(4, 4, dtype=dtype, device=device)
    s[0, 0], s[0, 3], s[3, 3] = 1, gamma, 1 - gamma
    s[1, 1] = s[2, 2] = coherence
    return s


def relaxation_process_fidelity(t1: float, t2: float, duration: float) -> float:
    """Process fidelity Tr(S) / 4 of one qubit's thermal relaxation."""
    return (1 + 2 * math.exp(-duration / t2) + math.exp(-duration / t1)) / 4


def depolarizing_parameter(gate_fidelity: float, n_wires: int, relaxation_fidelity: float = 1.0) -> float:
    """The depolarizing lambda that, composed with a relaxation channel of average fidelity
    ``relaxation_fidelity``, gives a gate of average fidelity ``gate_fidelity`` (Qiskit Aer's
    rule for device noise models). 0 when relaxation alone already costs that much."""
    dim = 2**n_wires
    if 1 - gate_fidelity <= 1 - relaxation_fidelity:
        return 0.0
    lam = dim * (relaxation_fidelity - gate_fidelity) / (dim * relaxation_fidelity - 1)
    return min(lam, 4**n_wires / (4**n_wires - 1))


def depolarizing_superop(lam: float, n_wires: int, dtype=torch.complex64, device=None) -> torch.Tensor:
    """(4^k, 4^k) superoperator of ``(1 - lam) rho + lam Tr(rho) I / d`` on index (rows, cols)."""
    dim = 2**n_wires
    eye = torch.eye(dim, dtype=dtype, device=device).reshape(-1)  # vec(I)
    return (1 - lam) * torch.eye(dim * dim, dtype=dtype, device=device) + lam / dim * torch.outer(eye, eye)


@dataclass(frozen=True)
class CalibratedNoise:
    """Noise of a calibrated chip on a circuit whose wire w is one chip qubit.

    After each gate: depolarizing on its wires with the lambda that makes the gate's average
    fidelity the calibrated one, then thermal relaxation of each of its wires over the gate's
    duration. Gates in ``virtual_gates`` (RZ: a frame change) take no time and add no noise.
    Idle wires get no noise. The readout error (``readout_p01``, ``readout_p10`` per wire) is
    applied to the measured probabilities by :func:`apply_readout_error`.
    """

    fidelity_1q: tuple[float, ...]
    """per wire: average fidelity of a one-qubit gate"""
    fidelity_2q: dict[tuple[int, int], float]
    """per wire pair (a < b): average fidelity of the two-qubit gate"""
    t1: tuple[float, ...]
    t2: tuple[float, ...]
    durations: dict[str, float]
    """seconds per gate name (qpeft names)"""
    readout_p01: tuple[float, ...]
    readout_p10: tuple[float, ...]
    virtual_gates: frozenset[str] = frozenset({"RZ"})
    _superops: dict = field(default_factory=dict, compare=False, repr=False)

    def depolarizing(self, gate: str, wires: tuple[int, ...]) -> float:
        """Lambda of the depolarizing channel after ``gate`` on ``wires``."""
        t = self.durations[gate]
        relax = 1.0
        for w in wires:
            relax *= relaxation_process_fidelity(self.t1[w], self.t2[w], t)
        dim = 2 ** len(wires)
        fid = self.fidelity_1q[wires[0]] if len(wires) == 1 else self.fidelity_2q[tuple(sorted(wires))]
        return depolarizing_parameter(fid, len(wires), _average_fidelity(relax, dim))

    def noise_superop(self, gate: str, wires: tuple[int, ...], dtype, device) -> torch.Tensor | None:
        """(4^k, 4^k) superoperator of the noise after ``gate`` on ``wires`` (relaxation after
        depolarizing), on the index (rows of the wires, columns of the wires); None when the
        gate is virtual. Kept across runs: the calibration does not change."""
        if gate in self.virtual_gates:
            return None
        key = (gate, wires, dtype, device)
        if key not in self._superops:
            t = self.durations[gate]
            relax = [relaxation_superop(self.t1[w], self.t2[w], t, dtype, device) for w in wires]
            if len(wires) == 2:  # (row a, col a) x (row b, col b) -> (rows a b, cols a b)
                ra, rb = (r.reshape(2, 2, 2, 2) for r in relax)
                relax = [torch.einsum("ACac,BDbd->ABCDabcd", ra, rb).reshape(16, 16)]
            depol = depolarizing_superop(self.depolarizing(gate, wires), len(wires), dtype, device)
            self._superops[key] = relax[0] @ depol
        return self._superops[key]


def unitary_superop(matrix: torch.Tensor) -> torch.Tensor:
    """U (x) conj(U): the superoperator of rho -> U rho U^dagger, (..., d^2, d^2)."""
    d = matrix.shape[-1]
    return torch.einsum("...ac,...bd->...abcd", matrix, matrix.conj()).reshape(matrix.shape[:-2] + (d * d, d * d))


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
    noise: NoiseModel | CalibratedNoise | None = None,
    *,
    dtype: torch.dtype = torch.complex64,
    device=None,
) -> torch.Tensor:
    """Final density matrices (batch, 2, ..., 2, 2, ..., 2) of a noisy circuit."""
    if isinstance(noise, CalibratedNoise):
        return _simulate_calibrated(circuit, inputs, weights, noise, dtype, device)
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


def _simulate_calibrated(circuit, inputs, weights, noise: CalibratedNoise, dtype, device) -> torch.Tensor:
    if len(noise.fidelity_1q) != circuit.n_qubits:
        raise ValueError(f"calibrated noise covers {len(noise.fidelity_1q)} wires, the circuit has {circuit.n_qubits}")
    batch, device = resolve_batch(circuit, inputs, weights, device)
    check_memory(2 * circuit.n_qubits, batch, dtype, device, len(circuit.ops))
    rho = pure_to_density(initial_state(circuit, inputs, batch, dtype, device))
    n = circuit.n_qubits
    for op in circuit.ops:
        # Ops with constant angles (most of a transpiled circuit) keep their channel across runs.
        key = ("op", op, dtype, device) if all(isinstance(p, Const) for p in op.params) else None
        channel = noise._superops.get(key) if key else None
        if channel is None:
            channel = unitary_superop(op_matrix(circuit, op, inputs, weights, dtype, device))
            after = noise.noise_superop(op.gate, op.wires, dtype, device)
            if after is not None:
                channel = after @ channel
            if key:
                noise._superops[key] = channel
        # one contraction per op: the gate and its noise act on the op's row and column axes
        rho = apply_gate(rho, channel, list(op.wires) + [w + n for w in op.wires])
    return rho


def density_probabilities(rho: torch.Tensor, noise: NoiseModel | None = None) -> torch.Tensor:
    """Diagonal of rho as (batch, 2^n) probabilities, with the readout error applied."""
    batch = rho.shape[0]
    dim = int(round(math.sqrt(rho[0].numel())))
    probs = torch.diagonal(rho.reshape(batch, dim, dim), dim1=-2, dim2=-1).real
    if noise is not None and (noise.readout_p01 or noise.readout_p10):
        probs = apply_readout_error(probs, noise.readout_p01, noise.readout_p10)
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
