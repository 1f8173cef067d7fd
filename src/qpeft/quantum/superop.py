"""Superoperators, and noisy circuits simulated with them: each gate fused with its noise.

A superoperator on wires ``W = (w_0, ..., w_{k-1})`` is a ``(4^k, 4^k)`` matrix acting on
``rho`` flattened over the index (row bits of W, column bits of W), wire ``w_0`` the most
significant: a gate ``U`` is ``U (x) conj(U)``, a channel with Kraus operators ``K_i`` is
``sum_i K_i (x) conj(K_i)``, and a product of superoperators is their composition.

:class:`NoisyCircuit` compiles a circuit with a noise description (anything with a
``noise_superop(gate, wires, dtype, device)`` method: :class:`CalibratedNoise` here,
``qpeft.quantum.density.NoiseModel``) once: its ops are cut into blocks of at most
``max_wires`` wires (in circuit order: a block absorbs every later op on its wires until an op
would widen it past the limit), and each block becomes one superoperator, the product of its
ops' ``noise @ gate`` superoperators. A run applies one matrix product per block to the density
matrices instead of one contraction per gate and one or more per noise channel. While it runs,
rho is held with one axis of 4 per wire (its row and column bit side by side), and a block's
axes are moved to the front only when they are not there already (each block costs at most one
copy of rho, of runs of 4 entries rather than 2). Blocks whose ops have only constant angles
(most of a transpiled circuit) are built once per dtype and device and kept with the compiled
circuit; the others are rebuilt each run from the batched gate matrices, so gradients flow to
the angles.

:class:`CalibratedNoise` is the per-wire noise of a calibrated chip (built by
``qpeft.devices``), in Qiskit Aer's conventions so that the two simulators can be compared:

* depolarizing(lambda) on k wires: ``(1 - lambda) rho + lambda Tr_k(rho) (x) I / 2^k``
  (Qiskit's ``depolarizing_error(lambda, k)``; PennyLane's p is ``lambda (4^k - 1) / 4^k``);
* thermal relaxation over a gate of duration t (Aer's ``thermal_relaxation_error(T1, T2, t)``,
  no excited-state population): populations relax to |0> with ``gamma = 1 - exp(-t/T1)``,
  coherences decay by ``exp(-t/T2)``.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from qpeft.quantum.circuit import Circuit, Const, Op
from qpeft.quantum.simulator import op_matrices
from qpeft.quantum.statevector import check_memory, initial_state, resolve_batch

MAX_BLOCK_WIRES = 2


def unitary_superop(matrix: torch.Tensor) -> torch.Tensor:
    """U (x) conj(U): the superoperator of rho -> U rho U^dagger, (..., d^2, d^2)."""
    d = matrix.shape[-1]
    return torch.einsum("...ac,...bd->...abcd", matrix, matrix.conj()).reshape(matrix.shape[:-2] + (d * d, d * d))


def kraus_superop(kraus: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_i K_i (x) conj(K_i): the superoperator of rho -> sum_i K_i rho K_i^dagger."""
    return sum(unitary_superop(k) for k in kraus)


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


def embed(superop: torch.Tensor, wires: Sequence[int], block: Sequence[int]) -> torch.Tensor:
    """A superoperator on ``wires`` as one on ``block`` (a superset; identity on the other
    wires): ``(..., 4^k, 4^k) -> (..., 4^m, 4^m)``."""
    wires, block = tuple(wires), tuple(block)
    if wires == block:
        return superop
    k, m = len(wires), len(block)
    letters = iter(string.ascii_letters)
    out_rows, out_cols, in_rows, in_cols = ({w: next(letters) for w in block} for _ in range(4))
    lead = superop.shape[:-2]
    operands = [superop.reshape(lead + (2,) * (4 * k))]
    spec = ["..." + "".join(d[w] for d in (out_rows, out_cols, in_rows, in_cols) for w in wires)]
    eye = torch.eye(2, dtype=superop.dtype, device=superop.device)
    for w in block:
        if w not in wires:
            operands += [eye, eye]
            spec += [out_rows[w] + in_rows[w], out_cols[w] + in_cols[w]]
    target = "..." + "".join(d[w] for d in (out_rows, out_cols, in_rows, in_cols) for w in block)
    out = torch.einsum(",".join(spec) + "->" + target, *operands)
    return out.reshape(lead + (4**m, 4**m))


@dataclass(frozen=True)
class CalibratedNoise:
    """Noise of a calibrated chip on a circuit whose wire w is one chip qubit.

    After each gate: depolarizing on its wires with the lambda that makes the gate's average
    fidelity the calibrated one, then thermal relaxation of each of its wires over the gate's
    duration. Gates in ``virtual_gates`` (RZ: a frame change) take no time and add no noise.
    Idle wires get no noise. The readout error (``readout_p01``, ``readout_p10`` per wire) is
    applied to the measured probabilities (``qpeft.quantum.density.apply_readout_error``).
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

    @property
    def n_wires(self) -> int:
        """The number of wires the noise covers (one calibrated qubit each)."""
        return len(self.fidelity_1q)

    def depolarizing(self, gate: str, wires: tuple[int, ...]) -> float:
        """Lambda of the depolarizing channel after ``gate`` on ``wires``."""
        t = self.durations[gate]
        relax = 1.0
        for w in wires:
            relax *= relaxation_process_fidelity(self.t1[w], self.t2[w], t)
        dim = 2 ** len(wires)
        fid = self.fidelity_1q[wires[0]] if len(wires) == 1 else self.fidelity_2q[tuple(sorted(wires))]
        return depolarizing_parameter(fid, len(wires), (dim * relax + 1) / (dim + 1))

    def noise_superop(self, gate: str, wires: tuple[int, ...], dtype, device) -> torch.Tensor | None:
        """(4^k, 4^k) superoperator of the noise after ``gate`` on ``wires`` (relaxation after
        depolarizing), on the index (rows of the wires, columns of the wires); None when the
        gate is virtual. Kept across runs: the calibration of this object does not change."""
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


def blocks(ops: Sequence[Op], max_wires: int = MAX_BLOCK_WIRES) -> list[tuple[tuple[int, ...], list[int]]]:
    """Cut ``ops`` into blocks: ``(wires, op indices)`` in an order equivalent to the circuit's.

    Each wire belongs to at most one open block. An op merges the open blocks on its wires into
    one block with it when their wires together fit in ``max_wires``; otherwise the blocks that
    reach outside its wires are closed (emitted) and it starts a block with the ones inside.
    Emitted and open blocks never share a wire, so emitting earlier than circuit order changes
    nothing. An op wider than ``max_wires`` is a block of its own.
    """
    emitted: list[tuple[tuple[int, ...], list[int]]] = []
    owner: dict[int, dict] = {}  # wire -> its open block {"wires": set, "ops": list}

    def close(block: dict) -> None:
        emitted.append((tuple(sorted(block["wires"])), sorted(block["ops"])))
        for w in block["wires"]:
            del owner[w]

    for i, op in enumerate(ops):
        touching = list({id(owner[w]): owner[w] for w in op.wires if w in owner}.values())
        wires = set(op.wires).union(*(b["wires"] for b in touching))
        if len(wires) > max_wires:
            for b in touching:
                if not b["wires"] <= set(op.wires):
                    close(b)
            touching = [b for b in touching if b["wires"] <= set(op.wires)]
            wires = set(op.wires).union(*(b["wires"] for b in touching))
        block = {"wires": wires, "ops": [i, *(j for b in touching for j in b["ops"])]}
        for w in wires:
            owner[w] = block
    for block in list({id(b): b for b in owner.values()}.values()):
        close(block)
    return emitted


class NoisyCircuit:
    """A circuit compiled with its noise into fused superoperator blocks (module docstring).

    ``noise`` needs ``noise_superop(gate, wires, dtype, device) -> (4^k, 4^k) | None`` (the
    channel after that gate; None: noiseless). Build one per circuit and keep it: its constant
    blocks are computed on the first run for each dtype and device and reused by every later run.
    """

    def __init__(self, circuit: Circuit, noise, max_wires: int = MAX_BLOCK_WIRES):
        self.circuit, self.noise = circuit, noise
        self.blocks = blocks(circuit.ops, max_wires)
        self._constant = [
            all(isinstance(p, Const) for i in ops for p in circuit.ops[i].params) for _, ops in self.blocks
        ]
        self._cache: dict[tuple, list[torch.Tensor | None]] = {}

    def _op_superop(self, op: Op, matrix: torch.Tensor, dtype, device) -> torch.Tensor:
        channel = unitary_superop(matrix)
        after = self.noise.noise_superop(op.gate, op.wires, dtype, device)
        return channel if after is None else after @ channel

    def _block_superop(self, k: int, mats: list, dtype, device) -> torch.Tensor:
        wires, ops = self.blocks[k]
        out = None
        for i in ops:
            op = self.circuit.ops[i]
            s = embed(self._op_superop(op, mats[i], dtype, device), op.wires, wires)
            out = s if out is None else s @ out
        return out

    def superops(self, inputs, weights, dtype, device) -> list[torch.Tensor]:
        """Every block's superoperator on the index (rows of its wires, columns of its wires):
        (4^m, 4^m), or (batch, 4^m, 4^m) where an angle reads inputs or batched weights."""
        return [
            to_pairs(s, len(w), inverse=True)
            for s, (w, _) in zip(self._pair_superops(inputs, weights, dtype, device), self.blocks)
        ]

    def _pair_superops(self, inputs, weights, dtype, device) -> list[torch.Tensor]:
        """:meth:`superops` on the index (row, column) of each wire in turn (:func:`to_pairs`),
        the constant ones kept."""
        cached = self._cache.setdefault((dtype, device), [None] * len(self.blocks))
        rebuilt = [k for k in range(len(self.blocks)) if cached[k] is None or not self._constant[k]]
        varying = [i for k in rebuilt for i in self.blocks[k][1]]
        mats: list = [None] * len(self.circuit.ops)
        ops = [self.circuit.ops[i] for i in varying]
        for i, m in zip(varying, op_matrices(self.circuit, ops, inputs, weights, dtype, device)):
            mats[i] = m
        out = []
        for k, (wires, _) in enumerate(self.blocks):
            if cached[k] is not None:
                out.append(cached[k])
                continue
            s = to_pairs(self._block_superop(k, mats, dtype, device), len(wires))
            if self._constant[k]:
                cached[k] = s
            out.append(s)
        return out

    def _evolve(self, inputs, weights, dtype, device) -> tuple[torch.Tensor, list[int]]:
        """The final density matrices as (batch, 4, ..., 4): one axis per wire holding its (row,
        column) pair, the axes in the order of the returned wire list.

        A block is one matrix product over its wires' axes brought to the front; the axes stay
        where the product leaves them (the next block moves only what it needs), so each block
        costs one copy of rho at most, of 4-element runs rather than 2-element ones.
        """
        c = self.circuit
        n = c.n_qubits
        batch, device = resolve_batch(c, inputs, weights, device)
        # rho has 4^n entries: the same memory as a statevector of 2n qubits.
        check_memory(2 * n, batch, dtype, device, len(self.blocks))
        if c.amplitude_encoding:
            psi = initial_state(c, inputs, batch, dtype, device).reshape(batch, -1)
            rho = (psi.unsqueeze(-1) * psi.conj().unsqueeze(-2)).reshape((batch,) + (2,) * (2 * n))
            rho = rho.permute([0] + [a for w in range(n) for a in (1 + w, 1 + n + w)])
        else:  # |0...0><0...0|: the first entry
            rho = torch.zeros(batch, 4**n, dtype=dtype, device=device)
            rho[:, 0] = 1
        layout = list(range(n))  # layout[k]: the wire on axis k + 1
        for (wires, _), s in zip(self.blocks, self._pair_superops(inputs, weights, dtype, device)):
            if layout[: len(wires)] != list(wires):
                layout_next = list(wires) + [w for w in layout if w not in wires]
                rho = rho.reshape((batch,) + (4,) * n).permute([0] + [1 + layout.index(w) for w in layout_next])
                layout = layout_next
            rho = s @ rho.reshape(batch, 4 ** len(wires), -1)  # (batch, 4^m, rest)
        return rho.reshape((batch,) + (4,) * n), layout

    def run(self, inputs=None, weights=None, *, dtype=torch.complex64, device=None) -> torch.Tensor:
        """Final density matrices, (batch, 2, ..., 2, 2, ..., 2): n row axes, then n column axes."""
        rho, layout = self._evolve(inputs, weights, dtype, device)
        n, batch = len(layout), rho.shape[0]
        bits = rho.reshape((batch,) + (2,) * (2 * n))  # axis k + 1 -> row and column of layout[k]
        rows = [1 + 2 * layout.index(w) for w in range(n)]
        return bits.permute([0] + rows + [r + 1 for r in rows])

    def probabilities(self, inputs=None, weights=None, *, dtype=torch.complex64, device=None) -> torch.Tensor:
        """The diagonal of :meth:`run`'s density matrices, (batch, 2^n) real, wire 0 the most
        significant bit, without building the full matrices in that order."""
        rho, layout = self._evolve(inputs, weights, dtype, device)
        return rho.reshape(rho.shape[0], -1)[:, _diagonal(tuple(layout)).to(rho.device)].real


@functools.lru_cache(maxsize=64)
def _diagonal(layout: tuple[int, ...]) -> torch.Tensor:
    """Flat indices, into (4, ..., 4) with axis k holding wire layout[k], of the diagonal entries
    rho[b, b] in the order of the basis states b (wire 0 the most significant bit)."""
    n = len(layout)
    states = torch.arange(2**n)
    index = torch.zeros(2**n, dtype=torch.int64)
    for k, w in enumerate(layout):
        bit = (states >> (n - 1 - w)) & 1
        index += 3 * bit * 4 ** (n - 1 - k)  # (row, column) = (bit, bit): pair index 3 * bit
    return index


def to_pairs(superop: torch.Tensor, m: int, inverse: bool = False) -> torch.Tensor:
    """A superoperator on m wires from the index (rows, columns) to (row, column) of each wire
    in turn, or back with ``inverse``: ``(..., 4^m, 4^m)``."""
    if m == 1:
        return superop
    lead = superop.shape[:-2]
    pairs = [a for k in range(m) for a in (k, m + k)]  # (r_0, c_0, r_1, c_1, ...) from (r..., c...)
    order = [pairs.index(a) for a in range(2 * m)] if inverse else pairs
    axes = list(range(len(lead))) + [len(lead) + a for a in order] + [len(lead) + 2 * m + a for a in order]
    return superop.reshape(lead + (2,) * (4 * m)).permute(axes).reshape(lead + (4**m, 4**m))
