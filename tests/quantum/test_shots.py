"""Finite shots: estimates within 4 standard errors; the error shrinks as 1/sqrt(shots)."""

import pytest
import torch

from qpeft.quantum import expval_pauli, expval_z, hardware_efficient, simulate
from qpeft.quantum.shots import sample_counts, sample_expval_pauli, sample_expval_z
from qpeft.testing import random_circuit


def _state(seed=0, batch=4):
    c = hardware_efficient(3, 2)
    g = torch.Generator().manual_seed(seed)
    return simulate(
        c,
        torch.rand(batch, 3, generator=g) * 3,
        torch.rand(c.n_weights, generator=g) * 6,
        dtype=torch.complex128,
    )


def test_z_estimates_within_four_standard_errors():
    state = _state()
    exact = expval_z(state)
    est = sample_expval_z(state, 4000, torch.Generator().manual_seed(1))
    assert est.mean.shape == exact.shape == est.stderr.shape
    assert ((est.mean - exact).abs() <= 4 * est.stderr + 1e-12).all()
    # the reported standard error is the binomial one
    torch.testing.assert_close(est.stderr, ((1 - exact**2) / 4000).sqrt(), atol=2e-3, rtol=0.1)


def test_pauli_string_estimates_within_four_standard_errors():
    c = random_circuit(3, 20, seed=4)
    g = torch.Generator().manual_seed(4)
    x, w = torch.rand(2, c.n_inputs, generator=g), torch.rand(c.n_weights, generator=g)
    state = simulate(c, x, w, dtype=torch.complex128)
    paulis = ["XYZ", "IIX", "YIY", "ZZI"]
    exact = expval_pauli(state, paulis)
    est = sample_expval_pauli(state, paulis, 5000, torch.Generator().manual_seed(2))
    assert ((est.mean - exact).abs() <= 4 * est.stderr + 1e-12).all()


def test_error_shrinks_as_one_over_sqrt_shots():
    state = _state(batch=1)
    exact = expval_z(state)[0]
    gen = torch.Generator().manual_seed(3)
    spread = {}
    for shots in (100, 10_000):
        runs = torch.stack([sample_expval_z(state, shots, gen).mean[0] for _ in range(200)])
        spread[shots] = (runs - exact).pow(2).mean(0).sqrt()  # RMS error per wire
    ratio = spread[100] / spread[10_000]
    # 100x the shots -> 10x smaller error; 200 repeats estimate each RMS to ~5 %
    assert ((ratio > 8) & (ratio < 12.5)).all(), ratio


def test_counts_sum_to_shots_and_bad_shots():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    counts = sample_counts(probs, 1000, torch.Generator().manual_seed(0))
    assert counts.sum() == 1000 and counts[0, 2:].sum() == 0
    with pytest.raises(ValueError, match="`shots` must be a positive integer, got 0"):
        sample_counts(probs, 0)
