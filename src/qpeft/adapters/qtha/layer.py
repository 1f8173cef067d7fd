"""QTHA layer: MPO down -> quantum (or control) bottleneck -> MPO up.

activation mode: ``h = A x``; ``q = QNN(h)`` per token (angle encoding: <Z> of the r wires;
amplitude encoding: ``r * p - 1`` from the r basis probabilities); fusion ``z = h + gamma*q``
(linear) or ``z = h * (1 + gamma*q)`` (weighted); ``delta = B z``.

weights mode: the input-free QNN's ``r^2`` probabilities give ``M = (r^2 p - 1) / r``
(centred: a uniform distribution gives M = 0); ``delta = B (I + M) A x``, linear in x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from qpeft.adapters.base import AdapterLayer
from qpeft.adapters.mpo.layer import make_factors
from qpeft.adapters.qtha.config import QTHAConfig
from qpeft.backends.torch_sim import TorchBackend
from qpeft.qnn import QuantumLayer
from qpeft.quantum.ansatz import build_ansatz
from qpeft.quantum.simulator import amplitude_probabilities, amplitude_readout

QNN_INIT_STD = 0.1  # small angles: the circuit starts close to its encoding, no barren plateau


def build_qnn(config: QTHAConfig) -> QuantumLayer:
    """The quantum layer of a QTHA config: its ansatz on ``n_qubits`` wires, with the config's
    backend, gradient method, shots, noise and backend options.

    Args:
        config: the adapter's :class:`~qpeft.adapters.qtha.config.QTHAConfig`.

    Returns:
        A :class:`~qpeft.qnn.QuantumLayer` whose weights start small (std ``QNN_INIT_STD``). In
        weights mode the circuit takes no input and reads out basis probabilities; in activation
        mode it encodes the features (angle: <Z> per wire; amplitude: basis probabilities).

    Raises:
        ValueError: the backend refuses an option (the backend checks them against its
            constructor's signature).
        ImportError: the backend's SDK is not installed (naming the extra).
    """
    weights_mode = config.qnn_mode == "weights"
    encoding = None if weights_mode else config.encoding
    circuit = build_ansatz(config.ansatz, config.n_qubits, config.qnn_layers, encoding=encoding)
    observable = "z" if encoding == "angle" else "probs"
    options = dict(config.backend_options)
    if config.shots is not None:
        options["shots"] = config.shots
    if config.noise is not None:
        options["noise"] = config.noise
    return QuantumLayer(
        circuit,
        config.backend,
        config.diff_method,
        observable,
        init_std=QNN_INIT_STD,
        backend_options=options,
    )


class MLPBranch(nn.Module):
    """Classical control with (about) the QNN's trainable-parameter count.

    activation mode: ``q = tanh(W2 tanh(W1 h))``, bias-free, hidden = n_params / (2 r).
    weights mode: ``p = softmax(W2 tanh(W1))`` from a constant input, hidden = n_params / (r^2 + 1).
    """

    def __init__(self, r: int, n_params: int, weights_mode: bool, dtype=None, device=None):
        super().__init__()
        self.weights_mode = weights_mode
        d_in, d_out = (1, r * r) if weights_mode else (r, r)
        hidden = max(1, round(n_params / (d_in + d_out)))
        self.hidden = nn.Linear(d_in, hidden, bias=False, dtype=dtype, device=device)
        self.out = nn.Linear(hidden, d_out, bias=False, dtype=dtype, device=device)

    def forward(self, h: torch.Tensor | None = None) -> torch.Tensor:
        if self.weights_mode:
            one = torch.ones(1, dtype=self.hidden.weight.dtype, device=self.hidden.weight.device)
            return torch.softmax(self.out(torch.tanh(self.hidden(one))), dim=-1)
        return torch.tanh(self.out(torch.tanh(self.hidden(h))))


class QTHALayer(AdapterLayer):
    """A frozen linear layer plus a QTHA delta (the module docstring gives the math).

    ``mpo_A`` (d_in -> r) and ``mpo_B`` (r -> d_out) are tensor trains; between them runs the
    branch ``config.branch`` selects: the quantum layer ``qnn`` (a
    :class:`~qpeft.qnn.QuantumLayer` built by :func:`build_qnn`), the classical control ``mlp``
    of the same parameter count, or nothing. Activation mode also has ``gamma`` (r,), the fusion
    scale, initialised to 1. In weights mode the delta is ``B (I + M) A x``, linear in x and so
    mergeable; a job-engine step runner (``step_runner``) may run the module's circuit together
    with every other module's. ``B``'s last core starts at zero: a fresh adapter changes nothing.

    Args:
        base_layer: the ``nn.Linear`` (or GPT-2 ``Conv1D``) to wrap; its weights stay frozen.
        config: the :class:`~qpeft.adapters.qtha.config.QTHAConfig`.
    """

    def __init__(self, base_layer: nn.Module, config: QTHAConfig):
        super().__init__(base_layer, config)
        self.mpo_A, self.mpo_B = make_factors(self, config)
        kw = {"dtype": self.weight_dtype, "device": self.weight_device}
        self.weights_mode = config.qnn_mode == "weights"
        self.qnn = self.mlp = None
        self.step_runner = None  # weights mode: a qpeft.jobs.step.StepRunner batches all modules' circuits
        if config.branch != "none":
            qnn = build_qnn(config)
            if config.branch == "qnn":
                self.qnn = qnn.to(self.weight_device)
            else:
                self.mlp = MLPBranch(config.r, qnn.weights.numel(), self.weights_mode, **kw)
        if config.branch != "none" and not self.weights_mode:
            self.gamma = nn.Parameter(torch.ones(config.r, **kw))

    def _checkpointed(self, fn, h: torch.Tensor, worth_it: bool = True) -> torch.Tensor:
        if worth_it and self.config.checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(fn, h, use_reentrant=False)
        return fn(h)

    @property
    def _recompute_qnn(self) -> bool:
        # Only for the in-process exact simulator (elsewhere the circuits would run twice), and
        # only for states large enough to matter (2^6 amplitudes per token and up).
        return (
            self.qnn is not None
            and self.config.backend == "torch"
            and self.config.diff_method == "backprop"
            and self.config.n_qubits >= 6
        )

    def _branch(self, h: torch.Tensor | None = None) -> torch.Tensor:
        """q (activation mode, (..., r)) or the r^2 probabilities (weights mode)."""
        if self.mlp is not None:
            return self.mlp(h)
        if self.weights_mode:
            return self.qnn() if self.step_runner is None else self.step_runner(self.qnn)
        return self._circuit_q(self.qnn(h.float()), h.dtype)  # the simulator works in complex64 / float32

    def _circuit_q(self, out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Activation mode: q from the circuit's readout, <Z> as it is (angle encoding) or
        ``r p - 1`` from the basis probabilities (amplitude encoding), in ``dtype``."""
        if self.config.encoding == "amplitude":
            out = self.config.r * out - 1
        return out.to(dtype)

    def _fuse(self, h: torch.Tensor, gamma: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Activation mode: ``z`` from the bottleneck ``h`` and the branch's ``q`` (``config.fusion``)."""
        return h + gamma * q if self.config.fusion == "linear" else h * (1 + gamma * q)

    def mixing(self) -> torch.Tensor:
        """weights mode: the (r, r) mixing matrix M."""
        r = self.config.r
        probs = self._branch()
        return ((r * r * probs - 1) / r).reshape(r, r).to(self.weight_dtype)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        # The MPO factors checkpoint themselves, only where their contraction order saves
        # large intermediates (TensorTrain.recompute).
        h = self.mpo_A(x.to(self.weight_dtype))  # (..., r)
        if self.config.branch == "none":
            return self.mpo_B(h)
        if self.weights_mode:
            mix = torch.eye(self.config.r, dtype=h.dtype, device=h.device) + self.mixing()  # (r, r)
            if self.mpo_B.dense_is_cheaper(h.numel() // self.config.r):
                return h @ (self.mpo_B.dense() @ mix).T  # B (I + M) folded: one GEMM on the tokens
            return self.mpo_B(h @ mix.T)
        q = self._checkpointed(self._branch, h, worth_it=self._recompute_qnn)
        return self.mpo_B(self._fuse(h, self.gamma, q))

    def not_mergeable_reason(self) -> str:
        """Why activation-mode QTHA cannot merge: its circuit runs on each token's features, so its
        delta is not linear in x; names ``qnn_mode='weights'`` as the mergeable alternative."""
        return (
            "QTHA in activation mode applies the quantum circuit to each token's features, so its delta "
            "is not linear in x; use qnn_mode='weights' (preset qtha-weights) for a mergeable adapter"
        )

    def delta_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.config.mergeable:
            raise ValueError(self.not_mergeable_reason())
        a, b = self.mpo_A.dense(), self.mpo_B.dense()  # (r, d_in), (d_out, r)
        if self.config.branch == "none":
            return a, b
        eye = torch.eye(self.config.r, dtype=a.dtype, device=a.device)
        return a, b @ (eye + self.mixing())

    def cacheable(self) -> bool:
        """Linear deltas (weights mode, no branch) as every mergeable adapter, and activation mode
        when its branch is deterministic: the MLP control, or an amplitude-encoded circuit on the
        exact in-process simulator, whose input-free gates fold into one matrix
        (:func:`~qpeft.quantum.simulator.amplitude_readout`). Not while a job-engine step runner
        runs the circuit (it keeps its own results per step), nor on a sampling, noisy or remote
        backend (each run is a new estimate, or the circuit must run where it is sent)."""
        if self.step_runner is not None:
            return False
        if self.config.mergeable:
            return super().cacheable() and (self.qnn is None or getattr(self.qnn.backend, "shots", None) is None)
        return self.qnn is None or self._foldable_circuit()

    def _foldable_circuit(self) -> bool:
        return type(self.qnn.backend) is TorchBackend and self.qnn.executed_circuit.amplitude_encoding

    def cache_contents(self) -> tuple:
        """Activation mode: ``(A, scaling * B, gamma, R)`` with the MPO factors contracted to
        (r, d_in) and (d_out, r) matrices and ``R`` the folded circuit (None for the MLP
        control, which runs per token: it is two small GEMMs)."""
        if self.config.mergeable:
            return super().cache_contents()
        down, up = self.mpo_A.dense(), self.mpo_B.dense() * self.scaling
        readout = None
        if self.qnn is not None:
            weights = self.qnn.weights.float()  # as the uncached forward runs it: float32 inputs
            readout = amplitude_readout(self.qnn.executed_circuit, weights, dtype=self.qnn.backend.dtype)
        return down.detach(), up.detach(), self.gamma.detach(), readout

    def cached_delta(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.mergeable:
            return super().cached_delta(x)
        down, up, gamma, readout = self.cached_contents()
        h = F.linear(x.to(down.dtype), down)  # (..., r)
        if readout is None:
            q = self.mlp(h)
        else:  # h's basis probabilities through the folded circuit, from the float32 features
            # the uncached forward feeds the circuit (also on complex128)
            q = self._circuit_q(amplitude_probabilities(self.qnn.executed_circuit, h.float(), readout), h.dtype)
        return F.linear(self._fuse(h, gamma, q), up)  # fused as the uncached forward: the same rounding

    def delta_cache_key(self) -> tuple:
        # the backend object itself: swapping it (emulate.evaluate_on_device) changes the delta
        return (*super().delta_cache_key(), self.qnn.backend if self.qnn is not None else None)
