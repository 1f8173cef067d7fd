"""``QuantumLayer``: a parameterized circuit as a ``torch.nn.Module``.

It sits above the backends (it runs its circuit on one) and below the adapters.
"""

from __future__ import annotations

import math

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
            lead, x = (), None
        else:
            if inputs is None or inputs.shape[-1] != c.n_inputs:
                got = None if inputs is None else tuple(inputs.shape)
                raise ValueError(f"QuantumLayer expects inputs of shape (..., {c.n_inputs}), got {got}")
            lead, x = inputs.shape[:-1], inputs.reshape(-1, c.n_inputs)
        w = self.weights.to(x.dtype) if x is not None else self.weights
        if self.diff_method == "backprop":
            out = self.backend.run(c, x, w, self.observable)
        elif self.diff_method == "parameter_shift":
            observable = self.observable
            backend = self.backend

            def executor(circuit, xs, ws):
                return backend.run(circuit, xs, ws, observable)

            out = parameter_shift(c, x, w, executor)
        else:
            empty = torch.zeros(1, 0, dtype=w.dtype, device=w.device)
            out = _Hybrid.apply(x if x is not None else empty, w, c, self.backend, self.observable)
        return out.reshape(lead + (out.shape[-1],)) if x is not None else out.reshape(-1)
