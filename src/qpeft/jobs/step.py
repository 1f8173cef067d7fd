"""One submission per training step for input-free circuits (QTHA ``qnn_mode="weights"``).

Each adapted module owns a circuit with no inputs, so everything a step needs is known when
the first module runs its forward: the forward circuit of every module and, when training,
its gradient circuits. :class:`StepRunner` sends all of them through the job engine in one
call (``batching="step"``), instead of a forward call plus a gradient call per module
(``batching="module"``, kept to measure the difference). Gradient methods and circuits per
module per step (the count :func:`step_circuits` returns; ``qpeft plan`` uses it too):

* ``parameter_shift``: 1 + 2 per angle slot (4 for controlled rotations), exact in expectation;
* ``spsa``: 1 + 2 whatever the number of angles: both circuits shift every angle by
  ``+-spsa_step * delta`` with a random sign vector ``delta`` (seeded by the step);
* ``hybrid``: 1; the gradient comes from the exact simulator at the same angles.

A module joins by having a ``step_runner`` attribute (set by :meth:`StepRunner.attach`) and a
``qnn`` whose ``executed_circuit``, ``weights`` and ``observable`` define its circuit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from qpeft.backends.torch_sim import TorchBackend
from qpeft.jobs.base import BoundCircuit, Provider, digest
from qpeft.jobs.distributed import RankZeroEngine, world
from qpeft.jobs.engine import EngineOptions, JobEngine
from qpeft.jobs.keys import template_content
from qpeft.jobs.pin import pinned_spec
from qpeft.jobs.providers import connect, parse_spec
from qpeft.quantum.circuit import Circuit
from qpeft.quantum.gates import get_gate
from qpeft.quantum.statevector import expval_z_from_probs

GRAD_METHODS = ("parameter_shift", "spsa", "hybrid")
BATCHING = ("step", "module")


@dataclass
class _Template:
    forward: Circuit  # what runs for the forward pass
    expanded: Circuit  # every angle its own weight slot (for shifted copies)
    weight_of_slot: list[int]
    rules: list  # shift rule of every slot


def _template(circuit: Circuit) -> _Template:
    if circuit.n_inputs:
        raise ValueError(
            "the step runner takes input-free circuits (QTHA qnn_mode='weights'); a circuit that reads "
            "inputs runs once per token, which is for simulators only"
        )
    expanded, _, weight_of_slot = circuit.expand_slots()
    rules = [get_gate(op.gate).shift_rule for op in expanded.ops for _ in op.params]
    return _Template(circuit, expanded, weight_of_slot, rules)


def step_circuits(
    circuit: Circuit,
    weights: np.ndarray,
    diff_method: str | None,
    spsa_step: float = 0.1,
    seed: str = "",
    template: _Template | None = None,
) -> tuple[list[BoundCircuit], list[tuple]]:
    """The circuits of one module for one step: the forward circuit, then the gradient circuits
    of ``diff_method`` (None: forward only), and how to combine them: one (slot or 'spsa',
    coefficient, sign) entry per gradient circuit. ``template``: ``_template(circuit)``, reused."""
    if diff_method not in (*GRAD_METHODS, None):
        raise ValueError(f"unknown diff_method {diff_method!r}; choose one of {', '.join(GRAD_METHODS)}")
    t = template or _template(circuit)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    out = BoundCircuit.batch(t.forward, w[None, :])
    combine: list[tuple] = []
    if diff_method == "parameter_shift":
        slots, shifts = [], []
        for slot, rule in enumerate(t.rules):
            for coeff, shift in rule:
                for sign in (1.0, -1.0):
                    slots.append(slot)
                    shifts.append(sign * shift)
                    combine.append((slot, sign * coeff))
        shifted = np.tile(w[t.weight_of_slot], (len(slots), 1))  # every angle its own slot
        shifted[np.arange(len(slots)), slots] += shifts
        out += BoundCircuit.batch(t.expanded, shifted)
    elif diff_method == "spsa":
        used = sorted(set(t.weight_of_slot))
        rng = np.random.default_rng(int(digest(seed)[:16], 16))
        delta = np.zeros(len(w))
        delta[used] = rng.choice([-1.0, 1.0], size=len(used))
        out += BoundCircuit.batch(t.forward, np.stack([w + spsa_step * delta, w - spsa_step * delta]))
        combine += [("spsa", sign / (2 * spsa_step), delta) for sign in (1.0, -1.0)]
    return out, combine


def jacobian(t: _Template, n_weights: int, results: list[np.ndarray], combine: list[tuple]) -> np.ndarray:
    """d probs / d weights, (2^n, n_weights), from the gradient circuits' results."""
    jac = np.zeros((len(results[0]), n_weights))
    for probs, (slot, coeff, *rest) in zip(results, combine):
        if slot == "spsa":
            jac += coeff * np.outer(probs, rest[0])  # 1 / delta_k = delta_k for signs
        else:
            jac[:, t.weight_of_slot[slot]] += coeff * probs
    return jac


@dataclass
class _Entry:
    scope: str
    weights: torch.Tensor
    probs: torch.Tensor
    jac: torch.Tensor | None


class _StepFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, runner, qnn):
        ctx.runner, ctx.qnn = runner, qnn
        ctx.save_for_backward(weights)
        return runner._entries[id(qnn)].probs.to(weights.dtype).clone()

    @staticmethod
    def backward(ctx, grad_out):
        (weights,) = ctx.saved_tensors
        return ctx.runner._grad(ctx.qnn, weights, grad_out), None, None


class StepRunner:
    """Runs all attached modules' circuits of a step through ``engine`` (see module docstring).

    ``scope`` names the current step (the training loop sets it, e.g. ``"train-12"``); results
    are cached per scope, so a resumed run re-attaches to or reuses the jobs of its step.
    """

    def __init__(
        self,
        engine: JobEngine | RankZeroEngine,
        shots: int | None,
        diff_method: str = "parameter_shift",
        batching: str = "step",
        spsa_step: float = 0.1,
    ):
        if diff_method not in GRAD_METHODS:
            raise ValueError(f"unknown diff_method {diff_method!r}; choose one of {', '.join(GRAD_METHODS)}")
        if batching not in BATCHING:
            raise ValueError(f"unknown batching {batching!r}; choose one of {', '.join(BATCHING)}")
        self.engine, self.shots, self.diff_method = engine, shots, diff_method
        self.batching, self.spsa_step = batching, spsa_step
        self.scope = "step"
        self.qnns: list = []
        self._entries: dict[int, _Entry] = {}
        self._templates: dict[int, _Template] = {}

    def close(self, raise_errors: bool = True) -> None:
        """Close the engine (:meth:`qpeft.jobs.engine.JobEngine.close`: the finished jobs'
        writes land, the result cache's lock is released); the attached modules' next forward
        raises until a new runner is attached."""
        self.engine.close(raise_errors)

    def __enter__(self) -> StepRunner:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(raise_errors=kind is None)

    def alone(self) -> None:
        """Under torchrun: from now on only this process (rank 0) runs circuits, e.g. the final
        evaluation after training, which the other ranks skip."""
        if isinstance(self.engine, RankZeroEngine):
            self.engine.alone()

    def attach(self, model: torch.nn.Module) -> int:
        """Route every weights-mode quantum module of ``model`` through this runner."""
        shared: dict[str, _Template] = {}  # modules with equal circuits share one template (keyed once)
        for module in model.modules():
            if not hasattr(module, "step_runner") or getattr(module, "qnn", None) is None:
                continue
            if not getattr(module, "weights_mode", False):
                raise ValueError(
                    "a quantum backend needs qnn_mode='weights' (preset qtha-weights): activation mode runs "
                    "one circuit per token and module, far too many jobs for a QPU (see `qpeft plan`)"
                )
            circuit = module.qnn.executed_circuit
            content = template_content(circuit)
            if content not in shared:
                shared[content] = _template(circuit)
            self._templates[id(module.qnn)] = shared[content]
            module.step_runner = self
            self.qnns.append(module.qnn)
        if not self.qnns:
            raise ValueError("the model has no input-free quantum modules to run on a quantum backend")
        return len(self.qnns)

    def __call__(self, qnn) -> torch.Tensor:
        """The module's readout for its current weights, differentiable."""
        need_grad = torch.is_grad_enabled() and qnn.weights.requires_grad
        entry = self._entries.get(id(qnn))
        if self._stale(entry, qnn) or (need_grad and self._missing(entry)):
            self._refresh(need_grad)
        out = _StepFunction.apply(qnn.weights, self, qnn)
        if qnn.observable == "probs":
            return out
        return expval_z_from_probs(out.unsqueeze(0), qnn.executed_circuit.n_qubits).reshape(-1)

    def _stale(self, entry: _Entry | None, qnn) -> bool:
        # a new step samples anew even at unchanged angles (hardware results are reused only if asked)
        return entry is None or entry.scope != self.scope or not torch.equal(entry.weights, qnn.weights.detach())

    def _missing(self, entry: _Entry) -> bool:
        return entry.jac is None and self.diff_method != "hybrid"

    def _refresh(self, need_grad: bool) -> None:
        """Run every stale module's circuits: one engine call (or two per module)."""
        method = self.diff_method if need_grad and self.diff_method != "hybrid" else None
        stale = []
        for i, qnn in enumerate(self.qnns):
            entry = self._entries.get(id(qnn))
            w = qnn.weights.detach()
            if self._stale(entry, qnn) or (method and entry.jac is None):
                circuits, combine = step_circuits(
                    qnn.executed_circuit,
                    w.cpu().double().numpy(),
                    method,
                    self.spsa_step,
                    f"{self.scope}/{i}",
                    self._templates[id(qnn)],
                )
                stale.append((qnn, w.clone(), circuits, combine))
        if self.batching == "step":
            # forward circuits first, then the gradient circuits: each template's circuits in one run
            flat = [circuits[0] for _, _, circuits, _ in stale] + [c for *_, cs, _ in stale for c in cs[1:]]
            results = self.engine.run(flat, self.shots, scope=self.scope)
            rest = iter(results[len(stale) :])
            per_module = [[fwd, *(next(rest) for _ in cs[1:])] for fwd, (*_, cs, _) in zip(results, stale)]
        else:
            per_module = []
            for i, (_, _, circuits, _) in enumerate(stale):
                scope = f"{self.scope}/m{i}"
                res = self.engine.run(circuits[:1], self.shots, scope=scope)
                if len(circuits) > 1:
                    res += self.engine.run(circuits[1:], self.shots, scope=scope)
                per_module.append(res)
        for (qnn, w, _, combine), res in zip(stale, per_module):
            jac = None
            if combine:
                jac = torch.as_tensor(jacobian(self._templates[id(qnn)], w.numel(), res[1:], combine), dtype=w.dtype)
            probs = torch.as_tensor(res[0], dtype=w.dtype, device=w.device)
            self._entries[id(qnn)] = _Entry(self.scope, w, probs, None if jac is None else jac.to(w.device))

    def _grad(self, qnn, weights: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
        if self.diff_method == "hybrid":
            with torch.enable_grad():
                w = weights.detach().double().requires_grad_(True)
                out = TorchBackend(dtype=torch.complex128).run(qnn.executed_circuit, None, w, "probs").reshape(-1)
                (grad,) = torch.autograd.grad(out, w, grad_out.reshape(-1).double())
            return grad.to(weights.dtype)
        entry = self._entries[id(qnn)]
        if entry.jac is None:
            self._refresh(need_grad=True)
            entry = self._entries[id(qnn)]
        return (entry.jac.T @ grad_out.reshape(-1).to(entry.jac.dtype)).to(weights.dtype)


def step_templates(circuit: Circuit, diff_method: str | None) -> list[Circuit]:
    """The templates a module's step circuits use: the forward circuit, and for parameter shift
    the one with every angle its own slot."""
    return [circuit, _template(circuit).expanded] if diff_method == "parameter_shift" else [circuit]


def circuits_per_module(circuit: Circuit, diff_method: str | None) -> int:
    """Circuits one module sends per training step (forward + gradient)."""
    circuits, _ = step_circuits(circuit, np.zeros(circuit.n_weights) + math.pi / 4, diff_method)
    return len(circuits)


def split_options(options: dict | None) -> tuple[dict, dict, dict]:
    """``--quantum-options`` into (provider options, engine options, runner options)."""
    options = dict(options or {})
    secrets = sorted(set(options) & {"api_key", "token"})
    if secrets:
        raise ValueError(
            f"quantum options {secrets} would be saved with the run's config; pass credentials through "
            f"QPEFT_ORIGIN_API_KEY / QPEFT_IBM_TOKEN instead"
        )
    engine_fields = {f.name for f in dataclasses.fields(EngineOptions)}
    engine = {k: options.pop(k) for k in list(options) if k in engine_fields}
    runner = {k: options.pop(k) for k in list(options) if k in ("spsa_step",)}
    return options, engine, runner


def connect_provider(spec: str, shots: int | None, options: dict | None = None, run_dir=None) -> Provider | None:
    """The provider of ``spec`` (``PROVIDER[:BACKEND]``), made before anything else so that a bad
    key, an unknown backend or an unreachable service fails at once (its construction retried
    like any transient call). A spec without a backend gets the one the run's ledger records
    (:mod:`qpeft.jobs.pin`). None on the ranks > 0 of torchrun: rank 0 submits for all."""
    provider_options, engine_options, _ = split_options(options)
    name, _ = parse_spec(spec)
    if name != "local" and shots is None:
        raise ValueError(f"a QPU samples: {spec!r} needs `shots` (e.g. --shots 1000)")
    engine = EngineOptions(**engine_options)  # (checked before anything is made)
    if world()[0] != 0:
        return None
    pinned, filled = (spec, False) if engine.switch_backend else pinned_spec(spec, run_dir)
    try:
        return connect(pinned, engine.max_attempts, engine.poll_interval, engine.max_poll_interval, **provider_options)
    except ValueError as err:
        if not filled:
            raise
        raise ValueError(
            f"{err}. This run's jobs are on {pinned} (its ledger records it): rerun when it is available again, or "
            "move the run with an explicit --quantum-backend PROVIDER:BACKEND and '\"switch_backend\": true' in "
            "--quantum-options"
        ) from None


def build_runner(
    model: torch.nn.Module,
    spec: str,
    shots: int | None,
    diff_method: str,
    run_dir=None,
    options: dict | None = None,
    progress: bool | None = None,
    provider: Provider | None = None,
) -> StepRunner:
    """A provider (``provider``, or one made by :func:`connect_provider`) + engine + step runner
    for ``spec``, attached to ``model``. Under torchrun only rank 0 has a provider and an engine;
    the other ranks receive its results (:class:`qpeft.jobs.distributed.RankZeroEngine`)."""
    _, engine_options, runner_options = split_options(options)
    engine_options.setdefault("progress", progress)
    rank, size = world()
    if provider is None:
        provider = connect_provider(spec, shots, options, run_dir)
    engine = JobEngine(provider, run_dir, **engine_options) if rank == 0 else None
    runner = StepRunner(engine if size == 1 else RankZeroEngine(engine), shots, diff_method, **runner_options)
    runner.attach(model)
    return runner
