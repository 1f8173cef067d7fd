"""Input-independent blocks of a circuit, for the fast path of :mod:`qpeft.quantum.simulator`.

A block's ops become *steps* (:func:`block_steps`): layers of one-qubit gates (runs on a wire
pre-multiplied), runs of angle-free permutation gates with phases (CZ, CNOT, SWAP: one
"monomial" each) and any other gate on its own. A block is then either folded into one
``2^n x 2^n`` unitary (:func:`block_unitary_t`, applied to the whole batch as one GEMM) or its
steps are applied to the batch directly (:func:`apply_steps`: a one-qubit layer as Kronecker
factors of at most 64 x 64); :func:`fold_is_cheaper` chooses. The leading one-qubit ops of a
circuit act on ``|0...0>`` as a product state (:func:`product_state`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from qpeft.quantum.circuit import Op
from qpeft.quantum.gates import GATES, gate_matrix
from qpeft.quantum.statevector import apply_gate


def fold_is_cheaper(n: int, batch: int, steps: list) -> bool:
    """Folding a block costs one (batch, 2^n) x (2^n, 2^n) GEMM (compute-bound); applying its
    steps costs a few small GEMMs per one-qubit layer plus a pass per other step over the
    batch (memory-bound, weighted 3x). Folding wins only for few qubits."""
    dim = 2**n
    layer_cost = sum(2 ** (hi - lo) for lo, hi in _groups(n))
    per_row = 0
    for kind, _ in steps:
        per_row += layer_cost if kind == "layer" else (1 if kind == "monomial" else 4)
    return dim * dim * batch <= 3 * batch * dim * per_row


def apply_steps(psi: torch.Tensor, n: int, steps: list) -> torch.Tensor:
    """Apply a block's steps to the (batch, 2^n) states without building its unitary: a
    one-qubit layer is K_left (x) K_right, applied as two GEMMs of size 2^(n/2)."""
    batch, dim = psi.shape
    for kind, payload in steps:
        if kind == "monomial":
            src, phase = _monomial(n, payload)
            if not torch.equal(src, torch.arange(dim)):
                psi = psi[:, src.to(psi.device)]
            if not torch.equal(phase, torch.ones_like(phase)):
                psi = psi * phase.to(dtype=psi.dtype, device=psi.device)
        elif kind == "layer":
            psi = _apply_layer(psi, n, payload)
        else:
            wires, m = payload
            psi = apply_gate(psi.reshape((batch,) + (2,) * n), m, wires).reshape(batch, dim)
    return psi


MAX_GROUP = 6  # wires per Kronecker factor: matrices of at most 64 x 64


def _groups(n: int) -> list[tuple[int, int]]:
    """Wire ranges [lo, hi) of the Kronecker factors of a one-qubit layer, as even as possible."""
    n_groups = -(-n // MAX_GROUP)
    bounds = [round(k * n / n_groups) for k in range(n_groups + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _apply_layer(psi: torch.Tensor, n: int, layer: dict[int, torch.Tensor]) -> torch.Tensor:
    """A layer of one-qubit gates as a product of Kronecker factors over groups of wires,
    each applied as one (batched) GEMM; the last group's is a plain GEMM on the last axis."""
    batch, dim = psi.shape
    eye = torch.eye(2, dtype=psi.dtype, device=psi.device)
    for lo, hi in reversed(_groups(n)):
        mats = [layer.get(w) for w in range(lo, hi)]
        if all(m is None for m in mats):
            continue
        kron = _kron_matrices([eye if m is None else m for m in mats])  # acts on wires lo..hi-1
        if hi == n:
            psi = (psi.reshape(-1, 2 ** (hi - lo)) @ kron.T).reshape(batch, dim)
        else:
            x = psi.reshape(batch * 2**lo, 2 ** (hi - lo), 2 ** (n - hi))
            psi = torch.einsum("ij,ajc->aic", kron, x).reshape(batch, dim)  # fewer copies than kron @ x
    return psi


def product_state(n: int, ops: list[Op], mats: list[torch.Tensor], batch: int, dtype, device) -> torch.Tensor:
    """|0...0> evolved by one-qubit ops only: per-wire vectors, then their Kronecker product.
    Runs of shared (unbatched) matrices on a wire are multiplied together first."""
    vecs: list[torch.Tensor | None] = [None] * n  # None is |0>; else (2,) or (batch, 2)
    pending: dict[int, torch.Tensor] = {}
    for op, m in zip(ops, mats):
        w = op.wires[0]
        if m.dim() == 2:
            pending[w] = m @ pending[w] if w in pending else m
            continue
        if w in pending:
            vecs[w] = _apply_1q(pending.pop(w), vecs[w])
        vecs[w] = _apply_1q(m, vecs[w])
    for w, m in pending.items():
        vecs[w] = _apply_1q(m, vecs[w])
    zero = torch.tensor([1, 0], dtype=dtype, device=device)
    return _kron_vectors([zero if v is None else v for v in vecs], batch)


def _apply_1q(m: torch.Tensor, vec: torch.Tensor | None) -> torch.Tensor:
    """m @ vec for (..., 2, 2) m and (..., 2) vec; m|0> is m's first column, no product."""
    if vec is None:
        return m[..., :, 0]
    if m.dim() == 2:
        return vec @ m.T
    return torch.einsum("...ij,...j->...i", m, vec)


def _kron_vectors(vecs: list[torch.Tensor], batch: int) -> torch.Tensor:
    """Kronecker product of per-wire (2,) or (batch, 2) vectors, wire 0 most significant.

    Built from two halves with one batched outer product, so the backward pass touches the
    full (batch, 2^n) tensor twice instead of once per wire.
    """
    if len(vecs) == 1:
        v = vecs[0]
        return v if v.dim() == 2 else v.expand(batch, 2)
    half = len(vecs) // 2
    left = _kron_vectors(vecs[:half], batch)  # (batch, 2^half)
    right = _kron_vectors(vecs[half:], batch)  # (batch, 2^(n-half))
    return _Outer.apply(left, right).reshape(batch, -1)


class _Outer(torch.autograd.Function):
    """Batched outer product (batch, i), (batch, j) -> (batch, i, j) whose backward is two
    batched matrix-vector products (autograd's own goes through broadcast mul + sum)."""

    @staticmethod
    def forward(ctx, left, right):
        ctx.save_for_backward(left, right)
        return left.unsqueeze(-1) * right.unsqueeze(-2)

    @staticmethod
    def backward(ctx, grad):
        left, right = ctx.saved_tensors
        grad_left = torch.bmm(grad, right.conj().unsqueeze(-1)).squeeze(-1)
        grad_right = torch.bmm(grad.transpose(1, 2), left.conj().unsqueeze(-1)).squeeze(-1)
        return grad_left, grad_right


def _is_monomial(op: Op) -> bool:
    """An angle-free permutation with phases (CZ, CNOT, SWAP, ...): a run of them is one."""
    gate = GATES[op.gate]
    return gate.permutation and gate.n_params == 0


def block_unitary_t(n: int, steps: list, dtype, device) -> torch.Tensor:
    """U^T of an input-independent block: row k is U|k>.

    While only angle-free monomial runs have acted, the rows are kept as a permutation with
    phases (no tensor work); the first layer of one-qubit gates then becomes a row gather
    of a Kronecker product, and later monomial runs are column gathers. Anything else is
    applied gate by gate to the rows.
    """
    dim = 2**n
    row_src = torch.arange(dim)  # lazy rows: row k = row_phase[k] * e_{row_src[k]}
    row_phase = torch.ones(dim, dtype=torch.complex128)
    basis = None
    for kind, payload in steps:
        if kind == "monomial":
            src, phase = _monomial(n, payload)
            if basis is None:
                inverse = torch.empty_like(src)
                inverse[src] = torch.arange(dim)
                row_src = inverse[row_src]
                row_phase = row_phase * phase[row_src]
            else:
                basis = basis[:, src.to(device)] * phase.to(dtype=dtype, device=device)
            continue
        if basis is None and kind == "layer":
            eye = torch.eye(2, dtype=dtype, device=device)
            kron_t = _kron_matrices([payload[w].T if w in payload else eye for w in range(n)])
            basis = kron_t[row_src.to(device)] * row_phase.to(dtype=dtype, device=device).unsqueeze(1)
            continue
        if basis is None:
            basis = _monomial_rows(row_src, row_phase, dtype, device)
        shaped = basis.reshape((dim,) + (2,) * n)
        gates = payload.items() if kind == "layer" else [payload]
        for w, m in gates:
            shaped = apply_gate(shaped, m, (w,) if isinstance(w, int) else w)
        basis = shaped.reshape(dim, dim)
    return _monomial_rows(row_src, row_phase, dtype, device) if basis is None else basis


def _monomial_rows(row_src: torch.Tensor, row_phase: torch.Tensor, dtype, device) -> torch.Tensor:
    """The (2^n, 2^n) matrix whose row k is row_phase[k] * e_{row_src[k]}."""
    dim = row_src.numel()
    rows = torch.zeros(dim, dim, dtype=dtype)
    rows[torch.arange(dim), row_src] = row_phase.to(dtype)
    return rows.to(device)


def _kron_matrices(mats: list[torch.Tensor]) -> torch.Tensor:
    """kron(m_0, ..., m_{k-1}) of square matrices, built from two halves."""
    if len(mats) == 1:
        return mats[0]
    half = len(mats) // 2
    a, b = _kron_matrices(mats[:half]), _kron_matrices(mats[half:])
    return torch.einsum("ij,kl->ikjl", a, b).reshape(a.shape[0] * b.shape[0], -1)


def block_steps(ops: list[Op], mats: list[torch.Tensor]) -> Iterator[tuple[str, object]]:
    """Yield ("layer", {wire: matrix}), ("gate", (wires, matrix)) and ("monomial", ops).

    One-qubit gates are held per wire (runs on a wire pre-multiplied) and released together
    as one layer when a multi-qubit gate touches any held wire: a held gate commutes with
    everything after it on other wires. Runs of angle-free CZ / CNOT / SWAP become one
    permutation with phases.
    """
    pending: dict[int, torch.Tensor] = {}
    run: list[Op] = []
    for op, m in zip(ops, mats):
        if len(op.wires) == 1:
            w = op.wires[0]
            pending[w] = m @ pending[w] if w in pending else m
            continue
        touched = any(w in pending for w in op.wires)
        if run and (touched or not _is_monomial(op)):
            yield "monomial", tuple(run)
            run = []
        if touched:
            yield "layer", pending
            pending = {}
        if _is_monomial(op):
            run.append(op)
        else:
            yield "gate", (op.wires, m)
    if run:
        yield "monomial", tuple(run)
    if pending:
        yield "layer", pending


@functools.lru_cache(maxsize=256)
def _monomial(n: int, run: tuple[Op, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, phase) with (M psi)[i] = phase[i] * psi[src[i]] for the run's unitary M.

    Computed on basis indices (O(2^n) per gate) from each gate's matrix G, which has one
    non-zero per column: G|j> = G[pi(j), j] |pi(j)> on the gate's wires. Tracking where every
    basis state goes, M|k> = c_k |image(k)>, gives src[image(k)] = k, phase[image(k)] = c_k.
    """
    dim = 2**n
    image = torch.arange(dim)
    coeff = torch.ones(dim, dtype=torch.complex128)
    for op in run:
        g = gate_matrix(op.gate, dtype=torch.complex128)  # (d, d), d = 2^len(wires)
        target = g.abs().argmax(dim=0)  # pi(j) for each local column j
        value = g[target, torch.arange(g.shape[1])]
        shifts = [n - 1 - w for w in op.wires]  # wire 0 is the most significant bit
        top = len(shifts) - 1
        local = sum(((image >> s) & 1) << (top - i) for i, s in enumerate(shifts))
        new_local = target[local]
        for i, s in enumerate(shifts):
            image = image & ~(1 << s) | (((new_local >> (top - i)) & 1) << s)
        coeff = coeff * value[local]
    src = torch.empty(dim, dtype=torch.int64)
    src[image] = torch.arange(dim)
    phase = torch.empty(dim, dtype=torch.complex128)
    phase[image] = coeff
    return src, phase
