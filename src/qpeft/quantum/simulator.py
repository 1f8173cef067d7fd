"""Batched statevector simulation. Two paths give the same numbers:

* ``gates``: every op is one ``einsum`` on the (batch, 2, ..., 2) state.
* ``fast``: the leading one-qubit ops act on ``|0...0>`` wire by wire (a product state:
  per-wire 2-vectors, then one Kronecker product); every following run of
  input-independent ops is folded into one ``2^n x 2^n`` unitary per forward and applied
  to the whole batch as a single matrix product. Thousands of circuits per call become
  one GEMM; building the unitary costs ``4^n`` per op, independent of the batch.

``simulate_probabilities`` reads out basis probabilities; for an amplitude-encoded circuit
(real input states, input-free gates) it never leaves real arithmetic: with the block's
unitary folded, ``psi @ U^T = psi @ Re(U^T) + i psi @ Im(U^T)``, so one real GEMM against
``[Re(U^T) | Im(U^T)]`` (or ``Re(U^T)`` alone when every gate is real) gives the amplitudes.

Gate matrices are built group-wise (one ``gate_matrix`` call per gate type) rather than
op by op, which keeps the Python overhead of a forward + backward small.
"""

from __future__ import annotations

import functools

import torch

from qpeft.quantum.circuit import Circuit, Const, Input, Op
from qpeft.quantum.gates import GATES, gate_matrix
from qpeft.quantum.statevector import (
    amplitude_state,
    apply_gate,
    check_memory,
    initial_state,
    probabilities,
    real_dtype_of,
    resolve_batch,
)

METHODS = ("auto", "fast", "gates")


def op_matrices(circuit: Circuit, ops: list[Op], inputs, weights, dtype, device) -> list[torch.Tensor]:
    """The matrix of every op: (d, d), or (batch, d, d) when it reads inputs / batched weights.

    Ops of the same gate whose angles come from the same kinds of source share one call.
    """
    real = real_dtype_of(dtype)
    groups: dict[tuple, list[int]] = {}
    for i, op in enumerate(ops):
        groups.setdefault((op.gate, tuple(type(p) for p in op.params)), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(ops)
    for (gate, kinds), members in groups.items():
        angles = []
        for j, kind in enumerate(kinds):
            refs = [ops[i].params[j] for i in members]
            if kind is Const:
                a = torch.tensor([p.value for p in refs], dtype=real, device=device)  # (k,)
            elif kind is Input:
                a = inputs[:, [p.index for p in refs]].T.to(real)  # (k, batch)
            else:
                a = weights[..., [p.index for p in refs]].to(real)
                a = a.T if a.dim() == 2 else a  # (k,) or (k, batch)
            angles.append(a)
        if any(a.dim() == 2 for a in angles):
            angles = [a if a.dim() == 2 else a.unsqueeze(1) for a in angles]
        if angles:
            mats = gate_matrix(gate, angles, dtype=dtype, device=device)  # (k, [batch,] d, d)
            for pos, i in enumerate(members):
                out[i] = mats[pos]
        else:
            m = gate_matrix(gate, dtype=dtype, device=device)
            for i in members:
                out[i] = m
    return out


def simulate(
    circuit: Circuit,
    inputs: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    *,
    method: str = "auto",
    dtype: torch.dtype = torch.complex64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Final states, shape (batch, 2, ..., 2).

    inputs: (batch, n_inputs); weights: (n_weights,) shared by the batch, or
    (batch, n_weights). ``method`` is "fast", "gates" or "auto" (the same as "fast"). The
    fast path folds one set of weights, so with per-row weights every method runs gate by
    gate. On the fast path a cost model decides, block by block, whether folding into a
    unitary beats applying the block's gates (:func:`_fold_is_cheaper`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown simulation method {method!r}; choose one of {METHODS}")
    batch, device = resolve_batch(circuit, inputs, weights, device)
    check_memory(circuit.n_qubits, batch, dtype, device, len(circuit.ops))
    batched_weights = weights is not None and weights.dim() == 2
    if method == "auto":  # the fast path needs one set of weights for the whole batch
        method = "gates" if batched_weights else "fast"
    if method == "fast" and not batched_weights:
        return _simulate_fast(circuit, inputs, weights, batch, dtype, device)
    state = initial_state(circuit, inputs, batch, dtype, device)
    for op, m in zip(circuit.ops, op_matrices(circuit, circuit.ops, inputs, weights, dtype, device)):
        state = apply_gate(state, m, op.wires)
    return state


#: Gates whose matrices are real for real angles: a circuit of only these keeps real states real.
REAL_GATES = frozenset({"RY", "H", "X", "Z", "CZ", "CNOT", "SWAP", "CRY"})


def simulate_probabilities(
    circuit: Circuit,
    inputs: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    *,
    method: str = "auto",
    dtype: torch.dtype = torch.complex64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Basis probabilities of the final states, (batch, 2^n) real, wire 0 most significant.

    The same numbers as ``probabilities(simulate(...))``; an amplitude-encoded circuit on real
    inputs with shared weights takes the real path (see the module docstring) when folding
    its gates into one unitary is the cheaper fast path.
    """
    real_path = (
        method != "gates"
        and circuit.amplitude_encoding
        and inputs is not None
        and not inputs.is_complex()
        and (weights is None or weights.dim() == 1)
    )
    if real_path:
        batch, device = resolve_batch(circuit, inputs, weights, device)
        steps = list(_steps(circuit.ops, op_matrices(circuit, circuit.ops, inputs, weights, dtype, device)))
        if _fold_is_cheaper(circuit.n_qubits, batch, steps):
            return _real_amplitude_probabilities(circuit, inputs, steps, dtype, device)
    return probabilities(simulate(circuit, inputs, weights, method=method, dtype=dtype, device=device))


def _real_amplitude_probabilities(circuit: Circuit, inputs, steps, dtype, device) -> torch.Tensor:
    n, dim = circuit.n_qubits, 2**circuit.n_qubits
    check_memory(n, inputs.shape[0], dtype, device, 2)
    real = real_dtype_of(dtype)
    psi = amplitude_state(inputs.to(real), n, real).reshape(-1, dim)  # (batch, 2^n), real
    unitary_t = _block_unitary_t(n, steps, dtype, device)  # (2^n, 2^n)
    if all(op.gate in REAL_GATES for op in circuit.ops):
        return (psi @ unitary_t.real).square()
    amps = psi @ torch.cat([unitary_t.real, unitary_t.imag], dim=1)  # (batch, 2 * 2^n): Re | Im
    return amps.square().reshape(-1, 2, dim).sum(1)


def _simulate_fast(circuit: Circuit, inputs, weights, batch, dtype, device) -> torch.Tensor:
    n, ops = circuit.n_qubits, circuit.ops
    dim = 2**n
    mats = op_matrices(circuit, ops, inputs, weights, dtype, device)
    i = 0
    if circuit.amplitude_encoding:
        psi = amplitude_state(inputs, n, dtype).reshape(batch, dim)
    else:
        while i < len(ops) and len(ops[i].wires) == 1:
            i += 1
        psi = _product_state(n, ops[:i], mats[:i], batch, dtype, device)  # (batch, 2^n)
    while i < len(ops):
        if ops[i].depends_on_input:
            psi = apply_gate(psi.reshape((batch,) + (2,) * n), mats[i], ops[i].wires).reshape(batch, dim)
            i += 1
            continue
        j = i
        while j < len(ops) and not ops[j].depends_on_input:
            j += 1
        steps = list(_steps(ops[i:j], mats[i:j]))
        if _fold_is_cheaper(n, batch, steps):
            transposed_u = _block_unitary_t(n, steps, dtype, device)  # (2^n, 2^n)
            psi = psi @ transposed_u  # (batch, 2^n): one GEMM for the whole block
        else:
            psi = _apply_steps(psi, n, steps)
        i = j
    return psi.reshape((batch,) + (2,) * n)


def _fold_is_cheaper(n: int, batch: int, steps: list) -> bool:
    """Folding a block costs one (batch, 2^n) x (2^n, 2^n) GEMM (compute-bound); applying its
    steps costs a few small GEMMs per one-qubit layer plus a pass per other step over the
    batch (memory-bound, weighted 3x). Folding wins only for few qubits."""
    dim = 2**n
    layer_cost = sum(2 ** (hi - lo) for lo, hi in _groups(n))
    per_row = 0
    for kind, _ in steps:
        per_row += layer_cost if kind == "layer" else (1 if kind == "monomial" else 4)
    return dim * dim * batch <= 3 * batch * dim * per_row


def _apply_steps(psi: torch.Tensor, n: int, steps: list) -> torch.Tensor:
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


def _product_state(n: int, ops: list[Op], mats: list[torch.Tensor], batch: int, dtype, device):
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


def _block_unitary_t(n: int, steps: list, dtype, device) -> torch.Tensor:
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


def _steps(ops: list[Op], mats: list[torch.Tensor]):
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
