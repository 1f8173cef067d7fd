"""In-process simulator backends: exact statevector, finite shots, noisy density matrix."""

from __future__ import annotations

import torch

from qpeft.backends.base import Backend
from qpeft.devices import Device, get_device
from qpeft.devices.executor import DeviceExecutor
from qpeft.quantum.circuit import Circuit
from qpeft.quantum.density import NoiseModel, with_readout
from qpeft.quantum.shots import check_shots, estimate_from_counts, sample_counts
from qpeft.quantum.simulator import METHODS, simulate, simulate_probabilities
from qpeft.quantum.statevector import expval_z_from_probs, probabilities, z_signs
from qpeft.quantum.superop import NoisyCircuit

COMPLEX_DTYPES = {"complex64": torch.complex64, "complex128": torch.complex128}


def complex_dtype(value: torch.dtype | str) -> torch.dtype:
    """torch.complex64 / complex128, also by name (as a JSON config gives it)."""
    dtype = COMPLEX_DTYPES.get(value) if isinstance(value, str) else value
    if dtype not in COMPLEX_DTYPES.values():
        raise ValueError(f"`dtype` must be one of {sorted(COMPLEX_DTYPES)}, got {value!r}")
    return dtype


def _readout(probs: torch.Tensor, n_qubits: int, observable: str) -> torch.Tensor:
    Backend.check_observable(observable)
    return probs if observable == "probs" else expval_z_from_probs(probs, n_qubits)


class TorchBackend(Backend):
    """Exact statevector simulation in PyTorch (CPU or CUDA), differentiable by autograd."""

    name = "torch"
    supports_backprop = True

    def __init__(self, method: str = "auto", dtype: torch.dtype | str = torch.complex64):
        if method not in METHODS:
            raise ValueError(f"unknown simulation method {method!r}; choose one of {METHODS}")
        self.method, self.dtype = method, complex_dtype(dtype)

    def run(self, circuit: Circuit, inputs, weights, observable: str = "z") -> torch.Tensor:
        probs = simulate_probabilities(circuit, inputs, weights, method=self.method, dtype=self.dtype)
        return _readout(probs, circuit.n_qubits, observable)


def _sampled(probs: torch.Tensor, n_qubits: int, shots: int, generator, observable: str):
    counts = sample_counts(probs, shots, generator)
    if observable == "probs":
        return counts.to(probs.dtype) / shots
    signs = z_signs(n_qubits, torch.float64, probs.device)
    return estimate_from_counts(counts, signs).mean.to(probs.dtype)


class ShotsBackend(Backend):
    """Exact simulation followed by ``shots`` samples per circuit (not differentiable:
    use ``diff_method="parameter_shift"``)."""

    name = "shots"

    def __init__(self, shots: int = 1024, seed: int | None = None, method: str = "auto"):
        check_shots(shots)
        self.shots, self.method = shots, method
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def run(self, circuit: Circuit, inputs, weights, observable: str = "z") -> torch.Tensor:
        Backend.check_observable(observable)
        with torch.no_grad():
            probs = probabilities(simulate(circuit, inputs, weights, method=self.method))
        gen = self.generator
        if gen is not None and probs.device.type != "cpu":
            probs = probs.cpu()
        return _sampled(probs, circuit.n_qubits, self.shots, gen, observable).to(probs.device)


class NoisyBackend(Backend):
    """Density-matrix simulation with a :class:`NoiseModel`, or with a device's calibrated noise
    (``noise="wukong72"``, a name from ``qpeft.devices.DEVICES`` or a ``Device``: the circuit is
    transpiled onto the chip first; ``mitigate_readout=True`` inverts its readout error,
    ``zne_scales=(1, 3, 5)`` extrapolates to zero gate noise by gate folding);
    differentiable when exact (``shots=None``)."""

    name = "noisy"

    def __init__(
        self,
        noise: NoiseModel | dict | str | Device | None = None,
        shots: int | None = None,
        seed: int | None = None,
        dtype: torch.dtype | str = torch.complex64,
        mitigate_readout: bool = False,
        zne_scales: tuple[int, ...] | None = None,
    ):
        check_shots(shots, allow_none=True)
        self.shots, self.dtype = shots, complex_dtype(dtype)
        self.supports_backprop = shots is None
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.device_executor = None
        if isinstance(noise, str | Device):
            self.device_executor = DeviceExecutor(
                get_device(noise), shots, self.generator, mitigate_readout, self.dtype, zne_scales=zne_scales
            )
            noise = None  # the device's calibrated noise replaces the uniform model
        elif mitigate_readout or zne_scales:
            raise ValueError("`mitigate_readout` and `zne_scales` need a device's noise, e.g. noise='wukong72'")
        self.noise = NoiseModel(**noise) if isinstance(noise, dict) else (noise or NoiseModel())
        self._compiled: dict[tuple, NoisyCircuit] = {}  # circuit structure -> its fused noisy circuit

    def run(self, circuit: Circuit, inputs, weights, observable: str = "z") -> torch.Tensor:
        Backend.check_observable(observable)
        if self.device_executor is not None:
            return self.device_executor.run(circuit, inputs, weights, observable)
        key = (circuit.n_qubits, tuple(circuit.ops), circuit.n_inputs, circuit.n_weights, circuit.amplitude_encoding)
        if key not in self._compiled:
            self._compiled[key] = NoisyCircuit(circuit, self.noise)
        probs = with_readout(self._compiled[key].probabilities(inputs, weights, dtype=self.dtype), self.noise)
        if self.shots is None:
            return _readout(probs, circuit.n_qubits, observable)
        return _sampled(probs.detach(), circuit.n_qubits, self.shots, self.generator, observable)
