"""StepBatch: the input-free circuits of many QuantumLayers run as one backend call per forward
pass, with the results (outputs, gradients, samples, whole training runs) the layers give when
each runs alone."""

import copy
import pickle

import pytest
import torch
from torch import nn

from qpeft.adapters import get_model
from qpeft.backends import get_backend
from qpeft.qnn import QuantumLayer, batch_layers
from qpeft.quantum import build_ansatz
from qpeft.testing import BATCH_TOL, tiny_causal_lm

C128 = {"dtype": "complex128"}
#: (backend, diff_method, backend options) of the layers under test
SETTINGS = {
    "torch-backprop": ("torch", "backprop", C128),
    "torch-shift": ("torch", "parameter_shift", C128),
    "noisy-model": ("noisy", "backprop", {**C128, "noise": {"depolarizing": 0.02, "depolarizing_2q": 0.05}}),
    "wukong72-hybrid": ("noisy", "hybrid", {**C128, "noise": "wukong72"}),
}


def make_layers(setting: str, n: int = 4, seed: int = 0) -> nn.ModuleList:
    backend, diff_method, options = SETTINGS[setting]
    if options.get("noise") == "wukong72":
        pytest.importorskip("qiskit")
    circuit = build_ansatz("hardware_efficient", 3, 2, encoding=None)
    torch.manual_seed(seed)
    layers = [QuantumLayer(circuit, backend, diff_method, "probs", 1.0, dict(options)) for _ in range(n)]
    return nn.ModuleList(layers).double()


def loss_of(outputs: list[torch.Tensor]) -> torch.Tensor:
    """A loss that weighs every layer's output differently, so swapped rows would show."""
    return sum((k + 1) * (out * torch.arange(out.numel(), dtype=out.dtype)).sum() for k, out in enumerate(outputs))


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_batched_outputs_and_gradients_equal_each_layer_alone(setting):
    alone, batched = make_layers(setting), make_layers(setting)
    assert batch_layers(batched) is not None
    assert len({id(layer.backend) for layer in batched}) == 1  # built alike: one shared backend
    outs = {}
    for name, layers in (("alone", alone), ("batched", batched)):
        outputs = [layer() for layer in layers]
        loss_of(outputs).backward()
        outs[name] = (torch.stack(outputs), torch.stack([layer.weights.grad for layer in layers]))
    torch.testing.assert_close(outs["batched"][0], outs["alone"][0], **BATCH_TOL)
    torch.testing.assert_close(outs["batched"][1], outs["alone"][1], **BATCH_TOL)
    assert outs["alone"][1].abs().sum(-1).min() > 0  # every layer has a gradient to compare


def spy_on(backend) -> list:
    calls = []
    run = backend.run

    def counted(circuit, inputs, weights, observable="z"):
        calls.append(tuple(weights.shape))
        return run(circuit, inputs, weights, observable)

    backend.run = counted
    return calls


def test_one_backend_call_per_group_and_forward_pass_with_current_weights():
    layers = make_layers("torch-backprop", n=5)
    circuit = build_ansatz("hardware_efficient", 2, 1, encoding=None)
    other = QuantumLayer(circuit, observable="probs", backend_options=C128).double()  # another circuit, one backend
    model = nn.ModuleList([*layers, other])
    batch_layers(model)
    calls = spy_on(layers[0].backend)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        outputs = [layer() for layer in model]
        assert calls == [(5, layers[0].weights.numel()), (1, other.weights.numel())]  # one call per circuit shape
        with torch.no_grad():
            for layer, out in zip(layers, outputs):  # each row is its layer's, at its current weights
                alone = layer.evaluate(None, layer.weights).reshape(-1)
                torch.testing.assert_close(out, alone, **BATCH_TOL)
        loss_of(outputs).backward()
        opt.step()
        opt.zero_grad()
        calls.clear()


def test_a_layer_that_runs_again_gets_a_new_run():
    layers = make_layers("torch-backprop", n=3)
    batch_layers(layers)
    calls = spy_on(layers[0].backend)
    layers[0]()
    layers[0]()  # before the others used their rows: the group runs again
    assert len(calls) == 2
    with torch.no_grad():
        layers[1].weights.add_(0.3)  # changed since its row was computed (an optimizer step): not used
    out = layers[1]()
    assert len(calls) == 3
    torch.testing.assert_close(out, layers[1].evaluate(None, layers[1].weights).reshape(-1), **BATCH_TOL)
    before = len(calls)
    with torch.no_grad():
        layers[2]()  # computed with autograd, asked for without: not used
    assert len(calls) == before + 1


def test_sampled_rows_are_the_draws_of_each_layer_in_turn():
    pytest.importorskip("qiskit")
    options = {**C128, "noise": "wukong72", "shots": 256, "seed": 7}
    circuit = build_ansatz("hardware_efficient", 3, 1, encoding=None)
    torch.manual_seed(0)
    layers = nn.ModuleList([QuantumLayer(circuit, "noisy", "hybrid", "probs", 1.0, options) for _ in range(4)]).double()
    batch_layers(layers)
    with torch.no_grad():
        batched = torch.stack([layer() for layer in layers])
        backend = get_backend("noisy", **options)  # the same seed, one layer after another
        alone = torch.stack([backend.run(layer.executed_circuit, None, layer.weights, "probs")[0] for layer in layers])
    torch.testing.assert_close(batched, alone, rtol=0, atol=0)
    assert not torch.equal(batched[0], batched[1])


def train(model, steps: int = 3) -> list[float]:
    ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def qtha_model(batched: bool, **fields):
    torch.manual_seed(0)
    model = get_model(tiny_causal_lm("llama"), "qtha-weights", r=4, bond_dim=2, **fields).double()
    model.train()
    layers = [m for m in model.modules() if isinstance(m, QuantumLayer)]
    with torch.no_grad():
        for layer in model.adapter_layers.values():
            nn.init.normal_(layer.mpo_B.cores[-1], std=0.3)  # not a no-op: the circuits get gradients
    assert all(layer.batch is layers[0].batch is not None for layer in layers)
    if not batched:
        for layer in layers:
            layer.batch = None
    return model, layers


@pytest.mark.parametrize(
    "fields",
    [
        {"backend_options": C128},
        {"backend": "noisy", "noise": "wukong72", "diff_method": "hybrid", "backend_options": C128},
    ],
    ids=["exact", "wukong72-hybrid"],
)
def test_training_with_batched_circuits_matches_training_each_alone(fields):
    if fields.get("noise") == "wukong72":
        pytest.importorskip("qiskit")
    (model, layers), (ref, ref_layers) = qtha_model(True, **fields), qtha_model(False, **fields)
    calls = spy_on(layers[0].backend)
    losses, ref_losses = train(model), train(ref)
    assert len(calls) == 3  # one simulation of all modules' circuits per step
    assert losses == pytest.approx(ref_losses, abs=1e-12, rel=0)
    for a, b in zip(layers, ref_layers):
        torch.testing.assert_close(a.weights, b.weights, **BATCH_TOL)
    assert not torch.equal(layers[0].weights, qtha_model(True, **fields)[1][0].weights)  # they did train


def test_activation_checkpointing_recomputes_without_changing_gradients():
    grads = []
    for checkpointing in (False, True):
        model, layers = qtha_model(True, backend_options=C128, target_modules="all-linear")
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(1))
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append(torch.stack([layer.weights.grad for layer in layers]))
    torch.testing.assert_close(grads[1], grads[0], **BATCH_TOL)
    assert grads[0].abs().max() > 0


def test_copies_drop_unused_rows():
    layers = make_layers("torch-backprop", n=3)
    batch_layers(layers)
    layers[0]()  # the others' rows wait, with their autograd graph
    for clone in (copy.deepcopy(layers), pickle.loads(pickle.dumps(layers))):
        assert clone[1].batch is clone[0].batch is not layers[0].batch
        assert clone[0].batch.layers[1] is clone[1]
        torch.testing.assert_close(clone[2](), layers[2](), **BATCH_TOL)
