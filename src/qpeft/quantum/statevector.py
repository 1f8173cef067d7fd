"""Batched statevector simulation: pure functions on complex ``(batch, 2, ..., 2)`` tensors.

Two paths give the same numbers:

* ``gates``: every op is one ``einsum`` on the state.
* ``fast``: the leading one-qubit ops act on ``|0...0>`` wire by wire (a product state,
  built with ``n`` outer products); every following run of input-independent ops is folded
  into one ``2^n x 2^n`` unitary per forward and applied to the whole batch as a single
  matrix product. Thousands of circuits per call become one GEMM.
"""

from __future__ import annotations

import functools
import string

import torch

from qpeft.quantum.circuit import Circuit, Op
from qpeft.quantum.gates import gate_matrix

_LETTERS = string.ascii_letters
METHODS = ("auto", "fast", "gates")


def real_dtype_of(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.complex128 else torch.float32


# ---- memory ------------------------------------------------------------------------------


def available_bytes(device: torch.device | str | None = None) -> int:
    """Free memory on ``device``: MemAvailable on CPU, cudaMemGetInfo on CUDA."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_bytes(n_qubits: int, batch: int, dtype: torch.dtype, n_ops: int = 0, fast: bool = False) -> int:
    """Rough peak bytes of one simulated forward + backward.

    Autograd keeps about one state per op (plus one unitary per folded op on the fast path).
    """
    item = torch.empty((), dtype=dtype).element_size()
    dim = 2**n_qubits
    state = batch * dim * item * (n_ops + 3)
    unitary = dim * dim * item * (n_ops + 2) if fast else 0
    return state + unitary


def check_memory(
    n_qubits: int, batch: int, dtype: torch.dtype = torch.complex64, device=None, n_ops: int = 0
) -> None:
    """Refuse, before allocating, a simulation that cannot fit in memory."""
    need = estimate_bytes(n_qubits, batch, dtype, n_ops)
    have = available_bytes(device)
    if need > have:
        raise ValueError(
            f"simulating {n_qubits} qubits for a batch of {batch} needs about {need / 2**30:.3g} GiB "
            f"({2**n_qubits} amplitudes per state, {dtype}), but only {have / 2**30:.3g} GiB are "
            f"available on {torch.device(device or 'cpu')}; use fewer qubits (each one doubles "
            f"the memory), a smaller batch, or a shots / hardware backend"
        )


# ---- states and gates --------------------------------------------------------------------


def zero_state(n_qubits: int, batch: int = 1, dtype=torch.complex64, device=None) -> torch.Tensor:
    """|0...0> for each batch element: (batch, 2, ..., 2)."""
    state = torch.zeros((batch, 2**n_qubits), dtype=dtype, device=device)
    state[:, 0] = 1
    return state.reshape((batch,) + (2,) * n_qubits)


def amplitude_state(features: torch.Tensor, n_qubits: int, dtype=torch.complex64) -> torch.Tensor:
    """Normalised (batch, 2^n) real features as (batch, 2, ..., 2) amplitudes."""
    norm = features.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(features.dtype).tiny)
    return (features / norm).to(dtype).reshape((-1,) + (2,) * n_qubits)


def apply_gate(state: torch.Tensor, matrix: torch.Tensor, wires: tuple[int, ...] | list[int]) -> torch.Tensor:
    """Apply a (d, d) or batched (batch, d, d) matrix to ``wires`` of a (batch, 2, ..., 2) state."""
    n = state.dim() - 1
    k = len(wires)
    axes = _LETTERS[:n]
    out = list(axes)
    new = _LETTERS[n : n + k]
    for w, letter in zip(wires, new):
        out[w] = letter
    old = "".join(axes[w] for w in wires)
    mat = matrix.reshape(matrix.shape[:-2] + (2,) * (2 * k))
    batch = "Z" if mat.dim() > 2 * k else ""
    return torch.einsum(f"{batch}{''.join(new)}{old},Z{axes}->Z{''.join(out)}", mat, state)


def op_matrix(circuit: Circuit, op: Op, inputs, weights, dtype, device) -> torch.Tensor:
    angles = circuit.angles(op, inputs, weights, real_dtype_of(dtype), device)
    return gate_matrix(op.gate, angles, dtype=dtype, device=device)


def resolve_batch(circuit: Circuit, inputs, weights, device):
    circuit.check_args(inputs, weights)
    if inputs is not None and inputs.dim() == 2:
        batch, device = inputs.shape[0], device or inputs.device
    elif weights is not None and weights.dim() == 2:
        batch, device = weights.shape[0], device or weights.device
    else:
        batch = 1
        device = device or (weights.device if weights is not None else None)
    return batch, device


def _initial_state(circuit: Circuit, inputs, batch, dtype, device) -> torch.Tensor:
    if circuit.amplitude_encoding:
        return amplitude_state(inputs, circuit.n_qubits, dtype)
    return zero_state(circuit.n_qubits, batch, dtype, device)


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
    (batch, n_weights). ``method`` is "fast", "gates" or "auto" (fast when it is cheaper).
    """
    if method not in METHODS:
        raise ValueError(f"unknown simulation method {method!r}; choose one of {METHODS}")
    batch, device = resolve_batch(circuit, inputs, weights, device)
    check_memory(circuit.n_qubits, batch, dtype, device, len(circuit.ops))
    batched_weights = weights is not None and weights.dim() == 2
    if method == "auto":
        method = "gates" if batched_weights else choose_method(circuit, batch, dtype, device)
    if method == "fast" and not batched_weights:
        return _simulate_fast(circuit, inputs, weights, batch, dtype, device)
    state = _initial_state(circuit, inputs, batch, dtype, device)
    for op in circuit.ops:
        state = apply_gate(state, op_matrix(circuit, op, inputs, weights, dtype, device), op.wires)
    return state


def choose_method(circuit: Circuit, batch: int, dtype, device) -> str:
    """Pick the cheaper path from a flop count (a GEMM runs ~4x closer to peak than einsums)."""
    dim = 2**circuit.n_qubits
    n_ops = max(len(circuit.ops), 1)
    fast_cost = dim * dim * (batch + 4 * n_ops)
    gates_cost = 4 * batch * dim * 2 * n_ops
    fits = estimate_bytes(circuit.n_qubits, batch, dtype, n_ops, fast=True) < available_bytes(device)
    return "fast" if fits and fast_cost <= gates_cost else "gates"


def _simulate_fast(circuit: Circuit, inputs, weights, batch, dtype, device) -> torch.Tensor:
    n = circuit.n_qubits
    dim = 2**n
    ops = circuit.ops
    i = 0
    if circuit.amplitude_encoding:
        psi = amplitude_state(inputs, n, dtype).reshape(batch, dim)
    else:
        # Leading one-qubit ops keep |0...0> a product state: evolve each wire's 2-vector.
        wire_vecs: list[torch.Tensor] = [torch.tensor([1, 0], dtype=dtype, device=device)] * n
        while i < len(ops) and len(ops[i].wires) == 1:
            op = ops[i]
            m = op_matrix(circuit, op, inputs, weights, dtype, device)
            w = op.wires[0]
            wire_vecs[w] = torch.einsum("...ij,...j->...i", m, wire_vecs[w])
            i += 1
        psi = _kron_vectors(wire_vecs, batch)  # (batch, 2^n)
    while i < len(ops):
        if ops[i].depends_on_input:
            op = ops[i]
            m = op_matrix(circuit, op, inputs, weights, dtype, device)
            psi = apply_gate(psi.reshape((batch,) + (2,) * n), m, op.wires).reshape(batch, dim)
            i += 1
            continue
        j = i
        while j < len(ops) and not ops[j].depends_on_input:
            j += 1
        transposed_u = _block_unitary_t(circuit, ops[i:j], weights, dtype, device)  # (2^n, 2^n)
        psi = psi @ transposed_u  # (batch, 2^n): one GEMM for the whole block
        i = j
    return psi.reshape((batch,) + (2,) * n)


def _kron_vectors(vecs: list[torch.Tensor], batch: int) -> torch.Tensor:
    """Kronecker product of per-wire (2,) or (batch, 2) vectors, wire 0 most significant."""
    out = vecs[0] if vecs[0].dim() == 2 else vecs[0].expand(batch, 2)
    for v in vecs[1:]:
        out = (out.unsqueeze(-1) * v.unsqueeze(-2)).reshape(batch, -1)
    return out


def _block_unitary_t(circuit: Circuit, ops: list[Op], weights, dtype, device) -> torch.Tensor:
    """U^T of an input-independent block: row k is U|k>, built by evolving the identity."""
    n = circuit.n_qubits
    dim = 2**n
    basis = torch.eye(dim, dtype=dtype, device=device).reshape((dim,) + (2,) * n)
    for matrix, wires in _fused(circuit, ops, weights, dtype, device):
        basis = apply_gate(basis, matrix, wires)
    return basis.reshape(dim, dim)


def _fused(circuit: Circuit, ops: list[Op], weights, dtype, device):
    """Yield (matrix, wires) with runs of one-qubit gates on the same wire pre-multiplied."""
    pending: dict[int, torch.Tensor] = {}
    for op in ops:
        m = op_matrix(circuit, op, None, weights, dtype, device)
        if len(op.wires) == 1:
            w = op.wires[0]
            pending[w] = m @ pending[w] if w in pending else m
            continue
        for w in op.wires:
            if w in pending:
                yield pending.pop(w), (w,)
        yield m, op.wires
    for w, m in pending.items():
        yield m, (w,)


# ---- readouts ----------------------------------------------------------------------------


def probabilities(state: torch.Tensor) -> torch.Tensor:
    """Basis probabilities, (batch, 2^n) real, index = bits of wires 0..n-1 (wire 0 first)."""
    flat = state.reshape(state.shape[0], -1)
    return flat.real**2 + flat.imag**2


@functools.lru_cache(maxsize=64)
def _z_signs_cpu(n_qubits: int, dtype: torch.dtype) -> torch.Tensor:
    idx = torch.arange(2**n_qubits)
    shifts = torch.arange(n_qubits - 1, -1, -1)
    bits = (idx.unsqueeze(1) >> shifts) & 1
    return (1 - 2 * bits).to(dtype)


def z_signs(n_qubits: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(2^n, n) table of the eigenvalue of Z on each wire for each basis state."""
    return _z_signs_cpu(n_qubits, dtype).to(device)


def expval_z_from_probs(probs: torch.Tensor, n_qubits: int) -> torch.Tensor:
    """<Z_w> for every wire from (batch, 2^n) probabilities: (batch, n)."""
    return probs @ z_signs(n_qubits, probs.dtype, probs.device)


def expval_z(state: torch.Tensor) -> torch.Tensor:
    """<Z_w> for every wire w: (batch, n_qubits), real."""
    return expval_z_from_probs(probabilities(state), state.dim() - 1)


def apply_pauli_string(state: torch.Tensor, pauli: str) -> torch.Tensor:
    """P|psi> for a Pauli string such as "XIZ" (one letter per wire)."""
    n = state.dim() - 1
    if len(pauli) != n or set(pauli.upper()) - set("IXYZ"):
        raise ValueError(f"Pauli string must have {n} letters from I, X, Y, Z, got {pauli!r}")
    for w, letter in enumerate(pauli.upper()):
        if letter != "I":
            state = apply_gate(state, gate_matrix(letter, dtype=state.dtype, device=state.device), (w,))
    return state


def expval_pauli(state: torch.Tensor, paulis: list[str] | tuple[str, ...]) -> torch.Tensor:
    """<psi|P|psi> for each Pauli string: (batch, len(paulis)), real."""
    flat = state.reshape(state.shape[0], -1)
    cols = []
    for pauli in paulis:
        moved = apply_pauli_string(state, pauli).reshape(flat.shape)
        cols.append((flat.conj() * moved).sum(-1).real)
    return torch.stack(cols, dim=-1)
