"""Zero-noise extrapolation: Richardson weights extrapolate every polynomial of degree below the
number of scales exactly to scale 0, for any set of scale factors (an even number of scales
included, where a sign error in the weights flips the whole estimate), and the noisy backend's
extrapolation over scales (1, 3) and (1, 3, 5) lands closer to the noiseless value than the
unmitigated run."""

import numpy as np
import pytest
import torch

from qpeft.backends import get_backend
from qpeft.devices.mitigation import richardson_weights
from qpeft.quantum.simulator import simulate
from qpeft.quantum.statevector import expval_z
from qpeft.testing import random_circuit

SCALE_SETS = [(1, 3), (1, 2), (2, 5), (1, 2, 3), (1, 3, 5), (1, 1.5, 2, 2.5), (1, 3, 5, 7), (1, 2, 4, 8, 16)]


@pytest.mark.parametrize("scales", SCALE_SETS, ids=str)
def test_richardson_weights_extrapolate_polynomials_of_the_fitted_order_exactly(scales):
    weights = np.array(richardson_weights(scales))
    s = np.array(scales, dtype=np.float64)
    rng = np.random.default_rng(len(scales))
    for degree in range(len(scales)):  # degree < number of scales: exact
        for _ in range(3):
            coeffs = rng.normal(size=degree + 1)  # f(s) = c0 + c1 s + ... ; f(0) = c0
            values = np.polynomial.polynomial.polyval(s, coeffs)
            assert weights @ values == pytest.approx(coeffs[0], rel=1e-9, abs=1e-9)
    # one degree more is not exact: the weights are the fitted order's, not any that sum to 1
    over = np.polynomial.polynomial.polyval(s, np.eye(len(scales) + 1)[-1])  # f(s) = s^len
    assert abs(weights @ over) > 1e-6


def test_richardson_weights_of_known_scale_sets():
    # linear through (1, f1), (3, f3): f(0) = 1.5 f1 - 0.5 f3
    assert richardson_weights([1, 3]) == pytest.approx([1.5, -0.5])
    assert richardson_weights([1, 2]) == pytest.approx([2.0, -1.0])
    assert richardson_weights([1, 3, 5]) == pytest.approx([15 / 8, -5 / 4, 3 / 8])
    assert richardson_weights([1, 2, 3]) == pytest.approx([3.0, -3.0, 1.0])


@pytest.mark.parametrize("scales", [(1, 3), (1, 3, 5), (1, 5)], ids=str)
def test_device_extrapolation_moves_toward_the_noiseless_value(scales):
    pytest.importorskip("qiskit")  # the wukong72 noise model transpiles the circuit for the chip
    c = random_circuit(2, 8, seed=3, n_inputs=0, gates=["RX", "RY", "RZ", "CZ"])
    w = torch.randn(3, c.n_weights, generator=torch.Generator().manual_seed(5))
    exact = expval_z(simulate(c, None, w))
    plain = get_backend("noisy", noise="wukong72", mitigate_readout=True).run(c, None, w)
    zne = get_backend("noisy", noise="wukong72", mitigate_readout=True, zne_scales=scales).run(c, None, w)
    assert (zne - exact).abs().mean() < 0.5 * (plain - exact).abs().mean()
