"""Finite-shot measurement: sample outcomes, estimate expectations with standard errors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qpeft.quantum.gates import gate_matrix
from qpeft.quantum.statevector import apply_gate, probabilities, z_signs


@dataclass
class ShotEstimate:
    """Expectation values estimated from ``shots`` samples per circuit, with their standard
    errors (``mean`` and ``stderr``: (batch, n_observables))."""

    mean: torch.Tensor
    """(batch, n_observables) sample means"""
    stderr: torch.Tensor
    """(batch, n_observables) standard errors of the means"""
    shots: int


def check_shots(shots: int | None, allow_none: bool = False) -> None:
    """Raise unless ``shots`` is a positive integer (or None, when that means exact)."""
    if shots is None and allow_none:
        return
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        hint = " or None" if allow_none else ""
        raise ValueError(f"`shots` must be a positive integer{hint}, got {shots!r}")


def sample_counts(probs: torch.Tensor, shots: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Counts of each basis outcome, (batch, 2^n) int64, from (batch, 2^n) probabilities."""
    check_shots(shots)
    p = probs.detach().double().clamp_min(0)
    p = p / p.sum(-1, keepdim=True)
    idx = torch.multinomial(p, shots, replacement=True, generator=generator)  # (batch, shots)
    counts = torch.zeros_like(p, dtype=torch.int64)
    return counts.scatter_add_(1, idx, torch.ones_like(idx))


def estimate_from_counts(counts: torch.Tensor, signs: torch.Tensor) -> ShotEstimate:
    """Means and standard errors of +-1 observables with eigenvalue table ``signs`` (2^n, k)."""
    shots = int(counts[0].sum())
    freq = counts.to(signs.dtype) / shots
    mean = freq @ signs
    # An observable with values +-1 has variance 1 - mean^2; the sample variance is
    # shots / (shots - 1) times that.
    var = (1 - mean**2).clamp_min(0) * (shots / max(shots - 1, 1))
    return ShotEstimate(mean, (var / shots).sqrt(), shots)


def sample_expval_z(state: torch.Tensor, shots: int, generator: torch.Generator | None = None) -> ShotEstimate:
    """Shot estimates of <Z_w> on every wire of a (batch, 2, ..., 2) state."""
    n = state.dim() - 1
    counts = sample_counts(probabilities(state), shots, generator)
    return estimate_from_counts(counts, z_signs(n, torch.float64, state.device))


def _to_z_basis(state: torch.Tensor, pauli: str) -> torch.Tensor:
    """Rotate each wire so that measuring Z measures the wire's Pauli letter."""
    dtype, device = state.dtype, state.device
    h = gate_matrix("H", dtype=dtype, device=device)
    s_dag = gate_matrix("S", dtype=dtype, device=device).conj()
    for w, letter in enumerate(pauli):
        if letter == "X":
            state = apply_gate(state, h, (w,))
        elif letter == "Y":
            state = apply_gate(state, h @ s_dag, (w,))
    return state


def sample_expval_pauli(
    state: torch.Tensor,
    paulis: list[str] | tuple[str, ...],
    shots: int,
    generator: torch.Generator | None = None,
) -> ShotEstimate:
    """Shot estimates of Pauli-string expectations (one measurement setting per string)."""
    n = state.dim() - 1
    means, errs = [], []
    for pauli in paulis:
        pauli = pauli.upper()
        if len(pauli) != n or set(pauli) - set("IXYZ"):
            raise ValueError(f"Pauli string must have {n} letters from I, X, Y, Z, got {pauli!r}")
        counts = sample_counts(probabilities(_to_z_basis(state, pauli)), shots, generator)
        mask = torch.tensor([c != "I" for c in pauli], device=state.device)
        # eigenvalue of the string = product of the Z eigenvalues on its non-identity wires
        signs = z_signs(n, torch.float64, state.device)[:, mask].prod(-1, keepdim=True)
        est = estimate_from_counts(counts, signs)
        means.append(est.mean)
        errs.append(est.stderr)
    return ShotEstimate(torch.cat(means, -1), torch.cat(errs, -1), shots)
