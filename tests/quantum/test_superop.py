"""Fused superoperators: a noisy circuit compiled into gate + noise blocks gives the density
matrices of the gate-by-gate, channel-by-channel (Kraus) simulation, its constant blocks are
built once and kept, and its blocks cover every op in an order equivalent to the circuit's."""

import pytest
import torch

from qpeft.quantum import Circuit, NoiseModel, Weight, build_ansatz
from qpeft.quantum.density import (
    amplitude_damping_kraus,
    apply_channel,
    apply_unitary,
    density_probabilities,
    depolarizing_kraus,
    phase_damping_kraus,
    pure_to_density,
    simulate_density,
)
from qpeft.quantum.statevector import apply_gate, initial_state, op_matrix, resolve_batch
from qpeft.quantum.superop import CalibratedNoise, NoisyCircuit, blocks, embed, unitary_superop
from qpeft.testing import BATCH_TOL, random_circuit

C128 = torch.complex128
NOISE = NoiseModel(depolarizing=0.03, depolarizing_2q=0.07, amplitude_damping=0.02, phase_damping=0.04)


def kraus_reference(circuit: Circuit, inputs, weights, noise: NoiseModel) -> torch.Tensor:
    """Gate by gate, then each channel term by term (the unfused simulation)."""
    batch, device = resolve_batch(circuit, inputs, weights, None)
    rho = pure_to_density(initial_state(circuit, inputs, batch, C128, device))
    for op in circuit.ops:
        rho = apply_unitary(rho, op_matrix(circuit, op, inputs, weights, C128, device), op.wires)
        p = noise.depolarizing if len(op.wires) == 1 else noise.depolarizing_2q
        if p:
            rho = apply_channel(rho, depolarizing_kraus(p, len(op.wires), C128, None), op.wires)
        for w in op.wires:
            rho = apply_channel(rho, amplitude_damping_kraus(noise.amplitude_damping, C128, None), [w])
            rho = apply_channel(rho, phase_damping_kraus(noise.phase_damping, C128, None), [w])
    return rho


def calibrated_reference(circuit: Circuit, weights, noise: CalibratedNoise) -> torch.Tensor:
    """One gate, then its calibrated noise channel, op by op (the unfused simulation)."""
    n = circuit.n_qubits
    rho = pure_to_density(initial_state(circuit, None, weights.shape[0], C128, None))
    for op in circuit.ops:
        axes = list(op.wires) + [w + n for w in op.wires]
        rho = apply_gate(rho, unitary_superop(op_matrix(circuit, op, None, weights, C128, None)), axes)
        after = noise.noise_superop(op.gate, op.wires, C128, None)
        if after is not None:
            rho = apply_gate(rho, after, axes)
    return rho


def chip_noise(n: int) -> CalibratedNoise:
    g = torch.Generator().manual_seed(n)

    def draw(lo, hi, k):
        return tuple((lo + (hi - lo) * torch.rand(k, generator=g, dtype=torch.float64)).tolist())

    pairs = {(a, b): f for (a, b), f in zip([(a, b) for a in range(n) for b in range(a + 1, n)], draw(0.9, 0.98, 99))}
    return CalibratedNoise(
        fidelity_1q=draw(0.99, 0.999, n),
        fidelity_2q=pairs,
        t1=draw(10e-6, 20e-6, n),
        t2=draw(1e-6, 5e-6, n),
        durations={"RX": 3e-8, "RY": 3e-8, "RZ": 0.0, "U3": 3e-8, "H": 3e-8, "CZ": 4e-8, "CNOT": 6e-8, "X": 3e-8},
        readout_p01=draw(0.01, 0.05, n),
        readout_p10=draw(0.01, 0.05, n),
    )


@pytest.mark.parametrize(("seed", "max_wires"), [(0, 1), (1, 2), (2, 3)])
def test_fused_blocks_equal_the_kraus_simulation(seed, max_wires):
    c = random_circuit(3, 16, seed=seed, gates=["RX", "RY", "RZ", "U3", "H", "CZ", "CNOT", "CRY", "RZZ", "SWAP"])
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, c.n_inputs, dtype=torch.float64, generator=g)
    w = torch.rand(3, c.n_weights, dtype=torch.float64, generator=g)  # one row of weights per circuit
    compiled = NoisyCircuit(c, NOISE, max_wires)
    reference = kraus_reference(c, x, w, NOISE)
    torch.testing.assert_close(compiled.run(x, w, dtype=C128), reference, **BATCH_TOL)
    torch.testing.assert_close(compiled.probabilities(x, w, dtype=C128), density_probabilities(reference), **BATCH_TOL)
    assert len(NoisyCircuit(c, NOISE, max_wires).blocks) < len(c.ops)  # fewer passes than gates
    torch.testing.assert_close(simulate_density(c, x, w[0], NOISE, dtype=C128), kraus_reference(c, x, w[0], NOISE))


def test_fused_blocks_on_an_amplitude_encoded_input():
    c = build_ansatz("strongly_entangling", 3, 2, encoding="amplitude")
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 8, dtype=torch.float64, generator=g)
    w = torch.rand(c.n_weights, dtype=torch.float64, generator=g)
    torch.testing.assert_close(
        NoisyCircuit(c, NOISE).run(x, w, dtype=C128), kraus_reference(c, x, w, NOISE), **BATCH_TOL
    )


def test_fused_blocks_equal_the_per_gate_calibrated_simulation():
    c = random_circuit(5, 40, seed=3, n_inputs=0, gates=["RX", "RZ", "U3", "CZ", "X"])
    noise = chip_noise(5)
    w = torch.rand(4, c.n_weights, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 6
    reference = calibrated_reference(c, w, noise)
    for max_wires in (2, 3):
        compiled = NoisyCircuit(c, noise, max_wires)
        torch.testing.assert_close(compiled.run(None, w, dtype=C128), reference, **BATCH_TOL)
        diagonal = density_probabilities(reference)
        torch.testing.assert_close(compiled.probabilities(None, w, dtype=C128), diagonal, **BATCH_TOL)
    assert max(len(wires) for wires, _ in compiled.blocks) == 3
    for s, (wires, ops) in zip(compiled.superops(None, w, C128, None), compiled.blocks):  # on (rows, columns)
        unfused = None
        for i in ops:
            op = c.ops[i]
            one = unitary_superop(op_matrix(c, op, None, w, C128, None))
            after = noise.noise_superop(op.gate, op.wires, C128, None)
            one = embed(one if after is None else after @ one, op.wires, wires)
            unfused = one if unfused is None else one @ unfused
        torch.testing.assert_close(s.expand_as(unfused), unfused, **BATCH_TOL)


def test_constant_blocks_are_built_once_and_kept():
    c = Circuit(3).add("RX", [0], 0.3).add("CZ", [0, 1]).add("RY", [2], Weight(0)).add("CZ", [1, 2]).add("RX", [1], 1.1)
    built = []

    class Counting(NoiseModel):
        def noise_superop(self, gate, wires, dtype, device):
            built.append((gate, wires))
            return super().noise_superop(gate, wires, dtype, device)

    noise = Counting(depolarizing=0.05, depolarizing_2q=0.1)
    compiled = NoisyCircuit(c, noise)
    assert [wires for wires, _ in compiled.blocks] == [(0, 1), (1, 2)]  # the weight reaches block (1, 2) only
    first = compiled.run(None, torch.tensor([0.5], dtype=torch.float64), dtype=C128)
    assert len(built) == 5
    second = compiled.run(None, torch.tensor([-0.9], dtype=torch.float64), dtype=C128)
    assert built[5:] == [("RY", (2,)), ("CZ", (1, 2)), ("RX", (1,))]  # only the block with the weight again
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, kraus_reference(c, None, torch.tensor([-0.9], dtype=torch.float64), noise))


def test_blocks_cover_every_op_once_within_their_wires():
    c = random_circuit(6, 60, seed=8)
    for max_wires in (1, 2, 3, 4):
        cut = blocks(c.ops, max_wires)
        assert sorted(i for _, ops in cut for i in ops) == list(range(len(c.ops)))
        for wires, ops in cut:
            assert all(set(c.ops[i].wires) <= set(wires) for i in ops)
            assert len(wires) <= max(max_wires, 2)  # an op wider than the limit is a block of its own
