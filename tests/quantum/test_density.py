"""Density-matrix simulation: zero noise == statevector, channels match closed forms and
PennyLane's default.mixed, gradients flow through the noise."""

import math

import numpy as np
import pytest
import torch

from qpeft.quantum import Circuit, Input, NoiseModel, Weight, expval_z, simulate, simulate_density
from qpeft.quantum.density import density_expval_z, density_probabilities, pure_to_density
from qpeft.testing import DEFAULT_MIXED_TOL, FD_TOL, TOL, random_circuit

C128 = torch.complex128


def test_zero_noise_equals_statevector():
    c = random_circuit(4, 30, seed=5)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, c.n_inputs, dtype=torch.float64, generator=g)
    w = torch.rand(c.n_weights, dtype=torch.float64, generator=g)
    rho = simulate_density(c, x, w, NoiseModel(), dtype=C128)
    psi = simulate(c, x, w, dtype=C128)
    torch.testing.assert_close(rho, pure_to_density(psi), **TOL[C128])
    torch.testing.assert_close(density_expval_z(rho), expval_z(psi), **TOL[C128])


@pytest.mark.parametrize("p", [0.0, 0.05, 0.3, 0.75])
def test_one_qubit_depolarizing_closed_form(p):
    theta = torch.linspace(-3, 3, 7, dtype=torch.float64).unsqueeze(1)
    c = Circuit(1).add("RY", [0], Input(0))
    z = density_expval_z(simulate_density(c, theta, None, NoiseModel(depolarizing=p), dtype=C128))
    torch.testing.assert_close(z[:, 0], (1 - 4 * p / 3) * torch.cos(theta[:, 0]), **TOL[C128])


@pytest.mark.parametrize("p", [0.02, 0.4])
def test_two_qubit_depolarizing_closed_form(p):
    theta = torch.linspace(-3, 3, 5, dtype=torch.float64).unsqueeze(1)
    c = Circuit(2).add("RY", [0], Input(0)).add("CNOT", [0, 1])
    z = density_expval_z(simulate_density(c, theta, None, NoiseModel(depolarizing_2q=p), dtype=C128))
    # every non-identity two-qubit Pauli shrinks by 1 - 16p/15
    expected = (1 - 16 * p / 15) * torch.cos(theta[:, 0])
    torch.testing.assert_close(z, torch.stack([expected, expected], -1), **TOL[C128])


def test_damping_and_readout_closed_forms():
    gamma, lam, p01, p10 = 0.3, 0.2, 0.05, 0.1
    rho = simulate_density(Circuit(1).add("X", [0]), noise=NoiseModel(amplitude_damping=gamma), dtype=C128)
    assert math.isclose(density_probabilities(rho)[0, 1].item(), 1 - gamma, abs_tol=1e-12)
    rho = simulate_density(Circuit(1).add("H", [0]), noise=NoiseModel(phase_damping=lam), dtype=C128)
    coherence = 2 * rho.reshape(2, 2)[0, 1].real.item()  # <X>
    assert math.isclose(coherence, math.sqrt(1 - lam), abs_tol=1e-12)
    readout = NoiseModel(readout_p01=p01, readout_p10=p10)
    rho0 = simulate_density(Circuit(2).add("X", [1]), noise=readout, dtype=C128)
    z = density_expval_z(rho0, readout)[0]
    torch.testing.assert_close(z, torch.tensor([1 - 2 * p01, -(1 - 2 * p10)], dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 24, 37, 46])  # 24, 46: the largest strays seen
def test_matches_pennylane_default_mixed(seed):
    qml = pytest.importorskip("pennylane")
    from qpeft.backends.pennylane import apply_pennylane_ops

    noise = NoiseModel(depolarizing=0.03, amplitude_damping=0.02, phase_damping=0.04)
    c = random_circuit(3, 12, seed=2, gates=["RX", "RY", "RZ", "H", "U3", "S"])
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, c.n_inputs, dtype=torch.float64, generator=g)
    w = torch.rand(c.n_weights, dtype=torch.float64, generator=g)
    rho = simulate_density(c, x, w, noise, dtype=C128).reshape(8, 8)

    @qml.qnode(qml.device("default.mixed", wires=3))
    def theirs():
        for op in c.ops:
            apply_pennylane_ops(Circuit(3, [op]), x[0], w)
            for wire in op.wires:  # one-qubit ops only in this circuit
                qml.DepolarizingChannel(noise.depolarizing, wires=wire)
                qml.AmplitudeDamping(noise.amplitude_damping, wires=wire)
                qml.PhaseDamping(noise.phase_damping, wires=wire)
        return qml.density_matrix(wires=[0, 1, 2])

    np.testing.assert_allclose(rho.numpy(), np.asarray(theirs()), **DEFAULT_MIXED_TOL)


def test_noisy_gradients_match_finite_differences():
    c = Circuit(2).add("RY", [0], Weight(0)).add("CNOT", [0, 1]).add("RX", [1], Weight(1))
    noise = NoiseModel(depolarizing=0.1, depolarizing_2q=0.05, amplitude_damping=0.05, phase_damping=0.02)

    def loss(w):
        return density_expval_z(simulate_density(c, None, w, noise, dtype=C128), noise).sum()

    w = torch.tensor([0.4, -1.1], dtype=torch.float64, requires_grad=True)
    loss(w).backward()
    eps = 1e-6
    fd = [
        (loss(w.detach() + eps * e) - loss(w.detach() - eps * e)).item() / (2 * eps)
        for e in torch.eye(2, dtype=torch.float64)
    ]
    np.testing.assert_allclose(w.grad.numpy(), fd, **FD_TOL)


def test_trace_is_preserved():
    noise = NoiseModel(depolarizing=0.2, depolarizing_2q=0.3, amplitude_damping=0.1, phase_damping=0.1)
    c = random_circuit(3, 20, seed=1)
    g = torch.Generator().manual_seed(1)
    rho = simulate_density(c, torch.rand(2, c.n_inputs, generator=g), torch.rand(c.n_weights, generator=g), noise)
    assert torch.allclose(density_probabilities(rho).sum(-1), torch.ones(2), **TOL[torch.complex64])


def test_noise_probabilities_are_validated():
    with pytest.raises(ValueError, match=r"noise `depolarizing` must be a probability in \[0, 1\], got 1.5"):
        NoiseModel(depolarizing=1.5)
