"""What a chip's noise costs a trained model: held-out loss with exact circuits, with the
device's noise (transpiled circuits, calibrated gate noise, readout error), and with noise
plus readout mitigation, side by side, and what its circuits look like on the chip.

It sits above the backends, the devices, the quantum layers and the evaluation (it swaps the
backend of every quantum layer of a model and evaluates it), so none of those imports it."""

from __future__ import annotations

import statistics
from collections.abc import Iterator

from torch import nn

from qpeft.backends import get_backend
from qpeft.data.formats import Example
from qpeft.devices.device import Device
from qpeft.devices.presets import get_device
from qpeft.evaluate import evaluate_loss
from qpeft.qnn import QuantumLayer


def quantum_layers(model: nn.Module) -> Iterator[QuantumLayer]:
    """The modules of ``model`` that run circuits on a backend (QTHA's quantum layers)."""
    for module in model.modules():
        if isinstance(module, QuantumLayer):
            yield module


def circuit_report(model: nn.Module, device: str | Device) -> dict:
    """Mean two-qubit gates, depth, swaps and estimated success probability of the model's
    circuits transpiled for ``device``, with the physical qubits of the first one."""
    layers = list(quantum_layers(model))
    if not layers:
        raise ValueError("the model runs no quantum circuits (a QTHA adapter with branch='qnn' does)")
    executor = get_backend("noisy", noise=get_device(device)).device_executor
    reports = [executor.transpiled(layer.executed_circuit)[0].report for layer in layers]
    return {
        "circuits": len(reports),
        "two_qubit_gates": statistics.fmean(r.two_qubit_gates for r in reports),
        "depth": statistics.fmean(r.depth for r in reports),
        "swaps_added": statistics.fmean(r.swaps_added for r in reports),
        "success_probability": statistics.fmean(r.success_probability for r in reports),
        "physical_qubits": list(reports[0].physical_qubits),
    }


def evaluate_on_device(
    model: nn.Module,
    tokenizer,
    examples: list[Example],
    max_length: int,
    device_name: str | Device,
    *,
    shots: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> dict:
    """Held-out loss of ``model`` with its circuits run exactly, on ``device_name``'s noise, and
    on its noise with readout mitigation (``shots=None``: exact noisy expectations; else
    that many shots per circuit). The model's own backends are restored afterwards.

    Returns ``{"device", "shots", "exact", "noisy", "noisy_mitigated", "circuits"}``; the three
    middle entries are :func:`qpeft.evaluate.evaluate_loss` results.
    """
    device = get_device(device_name)
    layers = list(quantum_layers(model))
    circuits = circuit_report(model, device)
    settings = {
        "exact": lambda: get_backend("torch"),
        "noisy": lambda: get_backend("noisy", noise=device, shots=shots, seed=seed),
        "noisy_mitigated": lambda: get_backend("noisy", noise=device, shots=shots, seed=seed, mitigate_readout=True),
    }
    original = [layer.backend for layer in layers]
    out = {"device": device.name, "shots": shots}
    try:
        for name, make in settings.items():
            backend = make()  # one backend for all layers: one transpilation per circuit shape
            for layer in layers:
                layer.backend = backend
            out[name] = evaluate_loss(model, tokenizer, examples, max_length, batch_size)
    finally:
        for layer, backend in zip(layers, original):
            layer.backend = backend
    out["circuits"] = circuits
    return out
