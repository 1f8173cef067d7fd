"""One submission per training step: gradients of the step runner against autograd through
the exact simulator, circuit counts per gradient method, and jobs per step on SmolLM2-135M
shapes (60 qtha-weights modules) before and after step batching."""

import math

import pytest
import torch
from torch import nn

from qpeft.adapters import QTHAConfig
from qpeft.adapters.presets import preset
from qpeft.adapters.qtha.layer import QTHALayer
from qpeft.backends.torch_sim import TorchBackend
from qpeft.jobs import JobEngine, LocalProvider
from qpeft.jobs.step import StepRunner, circuits_per_module
from qpeft.jobs.summary import totals
from qpeft.qnn import QuantumLayer
from qpeft.quantum.ansatz import build_ansatz
from qpeft.quantum.circuit import Circuit, Weight
from qpeft.testing import TOL

FAST = dict(poll_interval=0.001, max_poll_interval=0.004, progress=False)


class Holder(nn.Module):
    """The duck-typed contract a module meets to join a StepRunner."""

    def __init__(self, qnn):
        super().__init__()
        self.qnn, self.weights_mode, self.step_runner = qnn, True, None


def _qnn(seed, controlled=False):
    torch.manual_seed(seed)
    circuit = build_ansatz("hardware_efficient", 3, 2, encoding=None)
    if controlled:  # a four-term shift rule
        circuit.add("CRX", [0, 2], Weight(circuit.n_weights)).add("H", [1])
    return QuantumLayer(circuit, "torch", "backprop", "probs", init_std=0.7)


def _exact_grad(qnn, g):
    w = qnn.weights.detach().double().requires_grad_(True)
    probs = TorchBackend(dtype=torch.complex128).run(qnn.executed_circuit, None, w, "probs").reshape(-1)
    (grad,) = torch.autograd.grad((probs * g).sum(), w)
    return probs.detach(), grad


@pytest.mark.parametrize("method", ["parameter_shift", "hybrid"])
def test_gradients_match_autograd_through_the_simulator(method):
    qnns = [_qnn(0), _qnn(1, controlled=True), _qnn(2)]  # the first and last: one circuit, other weights
    model = nn.ModuleList(Holder(q) for q in qnns)
    runner = StepRunner(JobEngine(LocalProvider("torch"), None, **FAST), None, method)
    assert runner.attach(model) == 3
    assert len({id(t) for t in runner._templates.values()}) == 2  # equal circuits share their template
    gs = [torch.randn(2**3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    loss = sum((m.step_runner(m.qnn) * g).sum() for m, g in zip(model, gs))
    loss.backward()
    for qnn, g in zip(qnns, gs):
        probs, grad = _exact_grad(qnn, g.double())
        torch.testing.assert_close(runner._entries[id(qnn)].probs.double(), probs, **TOL[torch.complex64])
        torch.testing.assert_close(qnn.weights.grad.double(), grad, **TOL[torch.complex64])
    assert totals(runner.engine.ledger.records)["jobs"] == 1  # all modules, forward and gradient: one job


def test_spsa_averages_to_the_gradient():
    qnn = _qnn(2)
    model = nn.ModuleList([Holder(qnn)])
    runner = StepRunner(JobEngine(LocalProvider("torch"), None, **FAST), None, "spsa", spsa_step=0.01)
    runner.attach(model)
    g = torch.randn(8, generator=torch.Generator().manual_seed(3))
    total = torch.zeros_like(qnn.weights)
    n = 400
    for k in range(n):
        runner.scope = f"step-{k}"  # a new sign vector every step
        runner._entries.clear()
        qnn.weights.grad = None
        (model[0].step_runner(qnn) * g).sum().backward()
        total += qnn.weights.grad
    _, exact = _exact_grad(qnn, g.double())
    used = exact.abs() > 0
    err = (total / n - exact.float())[used].norm() / exact.norm()
    assert err < 0.2


def test_circuits_per_module():
    circuit = build_ansatz("hardware_efficient", 6, 2, encoding=None).without_final_diagonal()
    slots = sum(len(op.params) for op in circuit.ops)  # every angle here has a two-term rule
    assert circuits_per_module(circuit, "parameter_shift") == 1 + 2 * slots
    assert circuits_per_module(circuit, "spsa") == 3
    assert circuits_per_module(circuit, "hybrid") == circuits_per_module(circuit, None) == 1
    controlled = build_ansatz("hardware_efficient", 2, 1, encoding=None).add("CRZ", [0, 1], Weight(9))
    assert circuits_per_module(controlled, "parameter_shift") == 1 + 2 * 4 + 4  # CRZ: four-term rule
    with pytest.raises(ValueError, match="input-free circuits"):
        circuits_per_module(build_ansatz("hardware_efficient", 2, 1, encoding="angle"), "spsa")
    fixed = Circuit(1).add("H", [0])  # no weights at all: a forward circuit, nothing to differentiate
    assert [circuits_per_module(fixed, m) for m in (None, "parameter_shift", "spsa")] == [1, 1, 3]


@pytest.mark.parametrize("method", ["parameter_shift", "spsa"])
def test_jobs_per_step_on_smollm2_shapes(method, tmp_path):
    config = preset("qtha-weights", diff_method="parameter_shift", backend="torch")
    assert isinstance(config, QTHAConfig)
    torch.manual_seed(0)
    layers = nn.ModuleList(QTHALayer(nn.Linear(576, 576 if i % 2 == 0 else 192), config) for i in range(60))
    per_module = circuits_per_module(layers[0].qnn.executed_circuit, method)
    limit = 200  # Origin's programs per batch
    counts = {}
    for batching in ("module", "step"):
        engine = JobEngine(LocalProvider("torch", max_circuits=limit), tmp_path / batching, **FAST)
        runner = StepRunner(engine, 1000, method, batching=batching)
        assert runner.attach(layers) == 60
        runner.scope = "train-0"
        x = torch.randn(2, 576)
        loss = sum(layer(x).square().mean() for layer in layers)
        loss.backward()
        t = totals(engine.ledger.records)
        assert t["circuits"] == 60 * per_module
        counts[batching] = t["jobs"]
        for layer in layers:
            layer.step_runner = None
    assert counts["step"] == math.ceil(60 * per_module / limit)
    assert counts["module"] == 60 * (1 + math.ceil((per_module - 1) / limit))
