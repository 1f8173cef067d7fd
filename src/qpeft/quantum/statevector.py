"""Statevector primitives: pure functions on complex ``(batch, 2, ..., 2)`` tensors
(states, gate application, op matrices, readouts, memory estimates). The simulation
paths that use them are in :mod:`qpeft.quantum.simulator`."""

from __future__ import annotations

import functools
import os
import string

import torch

from qpeft.quantum.circuit import Circuit, Op
from qpeft.quantum.gates import gate_matrix

_LETTERS = string.ascii_letters


def real_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """The real dtype that goes with a complex state dtype: float64 for complex128, else float32."""
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
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


SMALL_BYTES = 256 * 2**20


def estimate_bytes(n_qubits: int, batch: int, dtype: torch.dtype, n_ops: int = 0) -> int:
    """Rough peak bytes of one simulated forward + backward: autograd keeps about one state
    per op."""
    item = torch.empty((), dtype=dtype).element_size()
    return batch * 2**n_qubits * item * (n_ops + 3)


def check_memory(n_qubits: int, batch: int, dtype: torch.dtype = torch.complex64, device=None, n_ops: int = 0) -> None:
    """Refuse, before allocating, a simulation that cannot fit in memory."""
    need = estimate_bytes(n_qubits, batch, dtype, n_ops)
    if need < SMALL_BYTES:  # no need to ask the system (a file read) for small simulations
        return
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


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """``features`` (..., d) divided by their norms over the last axis (a zero row stays zero)."""
    return features / features.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(features.dtype).tiny)


def amplitude_state(features: torch.Tensor, n_qubits: int, dtype=torch.complex64) -> torch.Tensor:
    """Normalised (batch, 2^n) real features as (batch, 2, ..., 2) amplitudes."""
    return unit_rows(features).to(dtype).reshape((-1,) + (2,) * n_qubits)


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
    """The matrix of one op of ``circuit`` with its angles taken from constants, ``inputs`` and
    ``weights``.

    Args:
        circuit: the circuit the op belongs to (it maps the op's angle sources).
        op: the op.
        inputs: ``(batch, n_inputs)`` or None.
        weights: ``(n_weights,)`` or ``(batch, n_weights)``.
        dtype: the complex dtype of the matrix.
        device: its device.

    Returns:
        ``(2^k, 2^k)``, or ``(batch, 2^k, 2^k)`` when an angle differs per row (k = the op's wires).
    """
    angles = circuit.angles(op, inputs, weights, real_dtype_of(dtype), device)
    return gate_matrix(op.gate, angles, dtype=dtype, device=device)


def resolve_batch(circuit: Circuit, inputs, weights, device):
    """The batch size and device of a simulation of ``circuit``.

    Args:
        circuit: the circuit (it checks the arguments' shapes first).
        inputs: ``(batch, n_inputs)`` or None.
        weights: ``(n_weights,)`` or ``(batch, n_weights)`` or None.
        device: the requested device, or None to take the arguments'.

    Returns:
        ``(batch, device)``: the rows of ``inputs``, else of 2-D ``weights``, else 1; the given
        device, else that of the tensor the batch came from.

    Raises:
        ValueError: inputs or weights of the wrong shape for the circuit (saying what to pass).
    """
    circuit.check_args(inputs, weights)
    if inputs is not None and inputs.dim() == 2:
        batch, device = inputs.shape[0], device or inputs.device
    elif weights is not None and weights.dim() == 2:
        batch, device = weights.shape[0], device or weights.device
    else:
        batch = 1
        device = device or (weights.device if weights is not None else None)
    return batch, device


def initial_state(circuit: Circuit, inputs, batch, dtype, device) -> torch.Tensor:
    """|0...0>, or the normalised inputs of an amplitude-encoded circuit: (batch, 2, ..., 2)."""
    if circuit.amplitude_encoding:
        return amplitude_state(inputs, circuit.n_qubits, dtype)
    return zero_state(circuit.n_qubits, batch, dtype, device)


# ---- readouts ----------------------------------------------------------------------------


class _Probabilities(torch.autograd.Function):
    """|psi|^2 with a one-pass backward: dL/dpsi = 2 * dL/dp * psi (PyTorch's convention
    for complex inputs of a real loss), instead of autograd's chain through real/imag."""

    @staticmethod
    def forward(ctx, flat):
        ctx.save_for_backward(flat)
        return flat.real.square() + flat.imag.square()

    @staticmethod
    def backward(ctx, grad):
        (flat,) = ctx.saved_tensors
        return flat * (2 * grad).to(flat.dtype)


def probabilities(state: torch.Tensor) -> torch.Tensor:
    """Basis probabilities, (batch, 2^n) real, index = bits of wires 0..n-1 (wire 0 first)."""
    return _Probabilities.apply(state.reshape(state.shape[0], -1))


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
