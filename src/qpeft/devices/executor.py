"""Run qpeft circuits as a device would: transpile (once per circuit structure), simulate the
transpiled circuit with the device's noise, read out with its readout error, optionally
sample shots and mitigate the readout. The noisy backend delegates here when it is given a
device (``NoisyBackend(noise="wukong72")``).

Per circuit structure the executor keeps a :class:`Compiled`: the transpiled circuit, its
calibrated noise, and the transpiled circuit compiled with that noise into fused superoperator
blocks (:class:`qpeft.quantum.superop.NoisyCircuit`, whose constant blocks are built on the
first run and reused by every later one). Giving the executor a recalibrated device
(``executor.device = new``) drops them all: the next run transpiles and fuses again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from qpeft.devices.device import Device
from qpeft.devices.mitigation import fold_gates, mitigate_readout, richardson_weights
from qpeft.devices.noise import calibrated_noise
from qpeft.devices.transpile import DEFAULT_OPTIMIZATION_LEVEL, DeviceCircuit, transpile
from qpeft.quantum.circuit import Circuit
from qpeft.quantum.density import apply_readout_error, marginal_probabilities
from qpeft.quantum.shots import check_shots, sample_counts
from qpeft.quantum.statevector import check_memory, expval_z_from_probs
from qpeft.quantum.superop import CalibratedNoise, NoisyCircuit


@dataclass
class Compiled:
    """What the executor keeps per circuit structure."""

    transpiled: DeviceCircuit
    noise: CalibratedNoise
    """the calibrated noise on the transpiled circuit's wires"""
    fused: NoisyCircuit
    """the transpiled circuit with its noise, fused"""
    folded: dict[int, NoisyCircuit] = field(default_factory=dict)
    """zero-noise extrapolation: noise scale -> the gate-folded circuit, fused"""


class DeviceExecutor:
    """Transpile + noisy density-matrix simulation of circuits on ``device``.

    The density matrix covers the device qubits the transpiled circuit touches (its wires plus
    any routing ancillas): 4^k complex entries per circuit, so about 12-13 qubits is the limit
    on a machine with tens of GiB; wider circuits raise a ValueError saying so.
    """

    def __init__(
        self,
        device: Device,
        shots: int | None = None,
        generator: torch.Generator | None = None,
        mitigate_readout: bool = False,
        dtype: torch.dtype = torch.complex64,
        optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL,
        seed: int = 0,
        zne_scales: Sequence[int] | None = None,
    ):
        check_shots(shots, allow_none=True)
        if zne_scales is not None:
            scales = list(zne_scales)
            if len(scales) < 2 or len(set(scales)) != len(scales) or any(k < 1 or k % 2 == 0 for k in scales):
                raise ValueError(f"`zne_scales` must be two or more distinct odd positive integers, got {zne_scales}")
        self.zne_scales = None if zne_scales is None else tuple(zne_scales)
        self.device, self.shots, self.generator = device, shots, generator
        self.mitigate, self.dtype = bool(mitigate_readout), dtype
        self.optimization_level, self.seed = optimization_level, seed

    @property
    def device(self) -> Device:
        """The chip. Setting it (e.g. to a recalibrated copy) drops every compiled circuit."""
        return self._device

    @device.setter
    def device(self, device: Device) -> None:
        self._device = device
        self._compiled: dict[tuple, Compiled] = {}

    def compiled(self, circuit: Circuit) -> Compiled:
        """The transpiled circuit, its noise and the fused noisy circuit, built once per
        circuit structure (and device)."""
        key = (circuit.n_qubits, tuple(circuit.ops), circuit.n_inputs, circuit.n_weights, circuit.amplitude_encoding)
        if key not in self._compiled:
            dc = transpile(circuit, self.device, self.optimization_level, self.seed)
            noise = calibrated_noise(self.device, dc.report.physical_qubits)
            self._compiled[key] = Compiled(dc, noise, NoisyCircuit(dc.circuit, noise))
        return self._compiled[key]

    def transpiled(self, circuit: Circuit) -> tuple[DeviceCircuit, CalibratedNoise]:
        """The transpiled circuit and its noise, computed once per circuit structure."""
        compiled = self.compiled(circuit)
        return compiled.transpiled, compiled.noise

    def probabilities(self, circuit: Circuit, inputs, weights) -> torch.Tensor:
        """(batch, 2^n) probabilities of the original wires as the chip would report them:
        readout error included, sampled when ``shots`` is set, mitigated when asked. With
        ``zne_scales``, the linear extrapolation to zero gate noise (entries may leave [0, 1];
        :meth:`run` clips and renormalises them for ``observable="probs"``)."""
        compiled = self.compiled(circuit)
        dc = compiled.transpiled
        angles = dc.slot_weights(inputs, weights)
        if angles.dim() == 1 and inputs is not None:
            angles = angles.expand(inputs.shape[0], -1)
        if self.zne_scales is None:
            return self._measured(circuit, dc, compiled.fused, angles)
        n_angles = angles.shape[-1]
        estimates = []
        for scale in self.zne_scales:
            if scale not in compiled.folded:
                compiled.folded[scale] = NoisyCircuit(fold_gates(dc.circuit, n_angles, scale), compiled.noise)
            both = torch.cat([angles, -angles], dim=-1)  # the inverse gates read the negated angles
            estimates.append(self._measured(circuit, dc, compiled.folded[scale], both))
        return sum(c * p for c, p in zip(richardson_weights(self.zne_scales), estimates))

    def _measured(self, circuit: Circuit, dc: DeviceCircuit, run: NoisyCircuit, angles) -> torch.Tensor:
        n = run.circuit.n_qubits
        batch = angles.shape[0] if angles.dim() == 2 else 1
        try:
            check_memory(2 * n, batch, self.dtype, angles.device, len(run.blocks))
        except ValueError as err:
            raise ValueError(
                f"on {self.device.name} the circuit occupies {n} qubits ({circuit.n_qubits} wires + "
                f"{n - circuit.n_qubits} routing ancillas); a density matrix of {n} qubits has 4^{n} entries per "
                f"circuit, past this machine's memory. Use fewer qubits or the exact 'shots' backend. ({err})"
            ) from err
        probs = marginal_probabilities(run.probabilities(None, angles, dtype=self.dtype), dc.measured_wires)
        measured = [dc.report.physical_qubits[w] for w in dc.measured_wires]
        p01 = [self.device.readout_p01[q] for q in measured]
        p10 = [self.device.readout_p10[q] for q in measured]
        probs = apply_readout_error(probs, p01, p10)
        if self.shots is not None:
            # a seeded generator lives on the CPU: sample there
            sampled = probs.detach().cpu() if self.generator is not None else probs.detach()
            counts = sample_counts(sampled, self.shots, self.generator)
            probs = (counts.to(probs.dtype) / self.shots).to(probs.device)
        if self.mitigate:
            probs = mitigate_readout(probs, p01, p10)
        return probs

    def run(self, circuit: Circuit, inputs, weights, observable: str = "z") -> torch.Tensor:
        """Run ``circuit`` as the chip would and return a readout (the backend interface).

        Args:
            circuit: the logical circuit (transpiled once per structure, then cached).
            inputs: ``(batch, n_inputs)`` or None.
            weights: ``(n_weights,)`` or ``(batch, n_weights)``.
            observable: ``"z"`` for <Z> per wire, ``"probs"`` for basis probabilities.

        Returns:
            ``(batch, n_qubits)`` expectations, or ``(batch, 2^n)`` probabilities of the original
            wires (readout error, shots and mitigation as configured; with ``zne_scales`` the
            extrapolated probabilities are clipped at 0 and renormalised).

        Raises:
            ValueError: the transpiled circuit's density matrix would not fit in memory.
        """
        probs = self.probabilities(circuit, inputs, weights)
        if observable != "probs":
            return expval_z_from_probs(probs, circuit.n_qubits)
        if self.zne_scales is not None:
            probs = probs.clamp_min(0)
            probs = probs / probs.sum(-1, keepdim=True)
        return probs
