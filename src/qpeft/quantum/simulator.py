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
op by op, which keeps the Python overhead of a forward + backward small. How a block of
input-independent ops is cut into steps, folded or applied is in :mod:`qpeft.quantum.fold`.
"""

from __future__ import annotations

import torch

from qpeft.quantum.circuit import Circuit, Const, Input, Op
from qpeft.quantum.fold import apply_steps, block_steps, block_unitary_t, fold_is_cheaper, product_state
from qpeft.quantum.gates import gate_matrix
from qpeft.quantum.statevector import (
    amplitude_state,
    apply_gate,
    check_memory,
    initial_state,
    probabilities,
    real_dtype_of,
    resolve_batch,
    unit_rows,
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
    unitary beats applying the block's gates (:func:`fold_is_cheaper`).
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
        steps = list(block_steps(circuit.ops, op_matrices(circuit, circuit.ops, inputs, weights, dtype, device)))
        if fold_is_cheaper(circuit.n_qubits, batch, steps):
            return _real_amplitude_probabilities(circuit, inputs, steps, dtype, device)
    return probabilities(simulate(circuit, inputs, weights, method=method, dtype=dtype, device=device))


def _real_amplitude_probabilities(circuit: Circuit, inputs, steps, dtype, device) -> torch.Tensor:
    check_memory(circuit.n_qubits, inputs.shape[0], dtype, device, 2)
    readout = _readout_matrix(circuit, block_unitary_t(circuit.n_qubits, steps, dtype, device))
    return amplitude_probabilities(circuit, inputs, readout)


def amplitude_readout(circuit: Circuit, weights: torch.Tensor | None = None, *, dtype=torch.complex64, device=None):
    """The input-independent part of an amplitude-encoded circuit, folded once: a real matrix
    ``R`` with ``amplitude_probabilities(circuit, inputs, R) == simulate_probabilities(circuit,
    inputs, weights)`` for every batch of real ``inputs``. ``R`` is ``Re(U^T)`` (2^n, 2^n) when
    every gate is real, else ``[Re(U^T) | Im(U^T)]`` (2^n, 2 * 2^n). For callers that run the
    same weights on many inputs (generation: one token at a time): building ``R`` is the whole
    cost of a small circuit's forward; applying it is one GEMM.

    Raises:
        ValueError: the circuit is not amplitude-encoded, or ``weights`` is batched.
    """
    if not circuit.amplitude_encoding:
        raise ValueError("amplitude_readout needs an amplitude-encoded circuit (its gates read no inputs)")
    if weights is not None and weights.dim() != 1:
        raise ValueError(f"amplitude_readout folds one set of weights, shape (n_weights,); got {tuple(weights.shape)}")
    device = device if device is not None else (weights.device if weights is not None else None)
    steps = list(block_steps(circuit.ops, op_matrices(circuit, circuit.ops, None, weights, dtype, device)))
    return _readout_matrix(circuit, block_unitary_t(circuit.n_qubits, steps, dtype, device))


def _readout_matrix(circuit: Circuit, unitary_t: torch.Tensor) -> torch.Tensor:
    if all(op.gate in REAL_GATES for op in circuit.ops):
        return unitary_t.real
    return torch.cat([unitary_t.real, unitary_t.imag], dim=1)


def amplitude_probabilities(circuit: Circuit, inputs: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """Basis probabilities (..., 2^n) of real ``inputs`` (..., 2^n) through the folded
    ``readout`` of :func:`amplitude_readout`, in ``readout``'s dtype. Few operations, for
    callers that run it once per token: normalise, one GEMM, square (and add Re^2 + Im^2)."""
    dim = 2**circuit.n_qubits
    if inputs.shape[-1] != dim:
        n = circuit.n_qubits
        raise ValueError(f"an amplitude-encoded {n}-qubit circuit takes {dim} features, got {inputs.shape[-1]}")
    amps = (unit_rows(inputs.to(readout.dtype)) @ readout).square()  # (..., 2^n): Re^2, or (..., 2 * 2^n): Re^2 | Im^2
    return amps if amps.shape[-1] == dim else amps[..., :dim] + amps[..., dim:]


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
        psi = product_state(n, ops[:i], mats[:i], batch, dtype, device)  # (batch, 2^n)
    while i < len(ops):
        if ops[i].depends_on_input:
            psi = apply_gate(psi.reshape((batch,) + (2,) * n), mats[i], ops[i].wires).reshape(batch, dim)
            i += 1
            continue
        j = i
        while j < len(ops) and not ops[j].depends_on_input:
            j += 1
        steps = list(block_steps(ops[i:j], mats[i:j]))
        if fold_is_cheaper(n, batch, steps):
            transposed_u = block_unitary_t(n, steps, dtype, device)  # (2^n, 2^n)
            psi = psi @ transposed_u  # (batch, 2^n): one GEMM for the whole block
        else:
            psi = apply_steps(psi, n, steps)
        i = j
    return psi.reshape((batch,) + (2,) * n)
