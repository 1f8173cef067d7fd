"""``QuantumLayer``: a parameterized circuit as a ``torch.nn.Module``, and :class:`StepBatch`,
which runs the input-free circuits of many such layers as one batched backend call.

It sits above the backends (it runs its circuit on one) and below the adapters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from qpeft.backends.base import Backend, get_backend
from qpeft.quantum.circuit import Circuit
from qpeft.quantum.shift import parameter_shift
from qpeft.quantum.statevector import check_memory

DIFF_METHODS = ("backprop", "parameter_shift", "hybrid")


class _Hybrid(torch.autograd.Function):
    """Forward on any backend; gradient from the exact simulator at the same angles."""

    @staticmethod
    def forward(ctx, inputs, weights, circuit: Circuit, backend: Backend, observable: str):
        ctx.circuit, ctx.observable = circuit, observable
        ctx.save_for_backward(inputs, weights)
        with torch.no_grad():
            return backend.run(circuit, inputs if inputs.shape[-1] else None, weights, observable)

    @staticmethod
    def backward(ctx, grad_out):
        inputs, weights = ctx.saved_tensors
        with torch.enable_grad():
            x = inputs.detach().requires_grad_(ctx.needs_input_grad[0])
            w = weights.detach().requires_grad_(True)
            dtype = torch.complex128 if w.dtype == torch.float64 else torch.complex64
            out = get_backend("torch", dtype=dtype).run(ctx.circuit, x if x.shape[-1] else None, w, ctx.observable)
            wanted = [t for t in (x, w) if t.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
        grad_x = next(grads) if x.requires_grad else None
        grad_w = next(grads)
        return grad_x, grad_w, None, None, None


class QuantumLayer(nn.Module):
    """A circuit whose weights are trainable parameters.

    ``forward(inputs)`` takes ``(..., n_inputs)`` features (nothing for a circuit without
    inputs) and returns ``(..., n_qubits)`` Z expectations (``observable="z"``) or
    ``(..., 2**n_qubits)`` probabilities (``observable="probs"``).

    diff_method: ``backprop`` (autograd through the simulator), ``parameter_shift`` (two or
    four circuit runs per angle, works on any backend), ``hybrid`` (forward on the backend,
    gradient from the exact simulator).

    A layer without inputs that belongs to a :class:`StepBatch` (``self.batch``, set by
    :func:`batch_layers`) runs its circuit together with the other layers of the batch.
    """

    def __init__(
        self,
        circuit: Circuit,
        backend: str | Backend = "torch",
        diff_method: str = "backprop",
        observable: str = "z",
        init_std: float | None = None,
        backend_options: dict | None = None,
    ):
        super().__init__()
        if diff_method not in DIFF_METHODS:
            raise ValueError(f"unknown diff_method {diff_method!r}; choose one of {DIFF_METHODS}")
        Backend.check_observable(observable)
        self.backend = get_backend(backend, **(backend_options or {}))
        if diff_method == "backprop" and not self.backend.supports_backprop:
            raise ValueError(
                f"backend {self.backend.name!r} is not differentiable by autograd; use "
                f"diff_method='parameter_shift' or 'hybrid'"
            )
        check_memory(circuit.n_qubits, 1)
        self.circuit, self.diff_method, self.observable = circuit, diff_method, observable
        # What runs: the readouts are in the computational basis, so final phases are dropped.
        self.executed_circuit = circuit.without_final_diagonal()
        self.batch: StepBatch | None = None
        if init_std is None:
            init = torch.rand(circuit.n_weights) * 2 * math.pi
        else:
            init = torch.randn(circuit.n_weights) * init_std
        self.weights = nn.Parameter(init)

    def forward(self, inputs: torch.Tensor | None = None) -> torch.Tensor:
        c = self.executed_circuit
        if c.n_inputs == 0:
            if inputs is not None:
                raise ValueError("this circuit reads no inputs; call the layer without arguments")
            if self.batch is not None:
                return self.batch(self)
            return self.evaluate(None, self.weights).reshape(-1)
        if inputs is None or inputs.shape[-1] != c.n_inputs:
            got = None if inputs is None else tuple(inputs.shape)
            raise ValueError(f"QuantumLayer expects inputs of shape (..., {c.n_inputs}), got {got}")
        lead, x = inputs.shape[:-1], inputs.reshape(-1, c.n_inputs)
        out = self.evaluate(x, self.weights.to(x.dtype))
        return out.reshape(lead + (out.shape[-1],))

    def evaluate(self, inputs: torch.Tensor | None, weights: torch.Tensor) -> torch.Tensor:
        """Run the executed circuit on this layer's backend, differentiable by its diff_method.

        inputs: ``(batch, n_inputs)`` or None (a circuit without inputs); weights:
        ``(n_weights,)`` or one row per circuit, ``(batch, n_weights)`` (the other layers of a
        :class:`StepBatch` pass theirs this way). Returns ``(batch, n_out)``.
        """
        c = self.executed_circuit
        if self.diff_method == "backprop":
            return self.backend.run(c, inputs, weights, self.observable)
        if self.diff_method == "parameter_shift":
            backend, observable = self.backend, self.observable

            def executor(circuit, xs, ws):
                return backend.run(circuit, xs, ws, observable)

            return parameter_shift(c, inputs, weights, executor)
        empty = torch.zeros(1, 0, dtype=weights.dtype, device=weights.device)
        return _Hybrid.apply(inputs if inputs is not None else empty, weights, c, self.backend, self.observable)


def _keep(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class _Result:
    """One layer's row of a batched run, and what it was computed from."""

    output: torch.Tensor
    weights: torch.Tensor
    version: int
    backend: Backend
    grad: bool

    def fits(self, layer: QuantumLayer) -> bool:
        """Whether the row is still this layer's output: same weights (tensor and in-place
        version: an optimizer step bumps it), same backend, same autograd mode."""
        w = layer.weights
        return (
            self.weights is w
            and self.version == w._version
            and self.backend is layer.backend
            and self.grad == torch.is_grad_enabled()
        )


class StepBatch:
    """Runs the input-free circuits of many :class:`QuantumLayer` s as one backend call per
    forward pass (QTHA ``qnn_mode="weights"``: one circuit per adapted module).

    Layers with equal executed circuits, one backend instance, one diff_method and observable,
    and weights of one dtype and device form a group. The first layer of a group to run in a
    forward pass runs the circuits of every layer of the group at once: their weights stacked
    into ``(k, n_weights)``, one :meth:`QuantumLayer.evaluate` (one batched simulation, one
    batch of samples, one batched gradient); each layer then takes its row. Gradients reach
    every layer's weights through the stack.

    A row is used once and only while it :meth:`_Result.fits` its layer, so every forward of a
    layer sees its current weights and, on a sampling backend, a fresh sample, as it would
    alone: a layer that runs again (the next forward pass, a recomputation) runs its group
    again. The batched run keeps its own tensors for backward (identity saved-tensor hooks):
    activation checkpointing around one layer must not recompute it for the whole group.
    """

    def __init__(self, layers: list[QuantumLayer]):
        self.layers = list(layers)
        # what makes two circuits one (kept: a layer's executed circuit does not change)
        self._circuits = [
            (c.n_qubits, tuple(c.ops), c.n_weights, c.amplitude_encoding)
            for c in (layer.executed_circuit for layer in self.layers)
        ]
        self._results: dict[int, _Result] = {}

    def __call__(self, layer: QuantumLayer) -> torch.Tensor:
        """The layer's output for its current weights, ``(n_out,)``, differentiable."""
        result = self._results.pop(id(layer), None)
        if result is None or not result.fits(layer):
            self._run_group(layer)
            result = self._results.pop(id(layer))
        return result.output

    def _key(self, k: int) -> tuple:
        layer = self.layers[k]
        w = layer.weights
        return self._circuits[k], id(layer.backend), layer.diff_method, layer.observable, w.dtype, w.device

    def _run_group(self, layer: QuantumLayer) -> None:
        key = self._key(next(k for k, other in enumerate(self.layers) if other is layer))
        group = []
        for k, other in enumerate(self.layers):
            if other is layer or (self._key(k) == key and not self._fresh(other)):
                group.append(other)
        weights = torch.stack([m.weights for m in group])  # (k, n_weights)
        with torch.autograd.graph.saved_tensors_hooks(_keep, _keep):
            out = layer.evaluate(None, weights)  # (k, n_out)
        grad = torch.is_grad_enabled()
        for member, row in zip(group, out.unbind(0)):
            w = member.weights
            self._results[id(member)] = _Result(row, w, w._version, member.backend, grad)

    def _fresh(self, layer: QuantumLayer) -> bool:
        result = self._results.get(id(layer))
        return result is not None and result.fits(layer)

    def __getstate__(self) -> dict:
        # rows hold autograd graphs (not copyable) and belong to one forward pass
        return {**self.__dict__, "_results": {}}


def batch_layers(model: nn.Module) -> StepBatch | None:
    """Give the input-free quantum layers of ``model`` one shared :class:`StepBatch`.

    Layers whose backends were built from the same name and options (see
    :func:`qpeft.backends.get_backend`) get one backend instance, so that they form one group:
    one noise model, transpilation and random stream for all of them. Returns the batch (None
    when the model has no such layer).
    """
    layers = [m for m in model.modules() if isinstance(m, QuantumLayer) and m.executed_circuit.n_inputs == 0]
    if not layers:
        return None
    shared: list[Backend] = []
    for layer in layers:
        spec = layer.backend.spec
        same = next((b for b in shared if spec is not None and b.spec == spec), None)
        if same is None:
            shared.append(layer.backend)
        else:
            layer.backend = same
    batch = StepBatch(layers)
    for layer in layers:
        layer.batch = batch
    return batch
