"""Noise-aware training (qtha-weights with its circuits on noisy:wukong72 with shots) and the
side-by-side evaluation: exact circuits, the chip's noise, noise + readout mitigation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qpeft.adapters import QTHAConfig, get_model, load_adapter
from qpeft.data.formats import Example
from qpeft.emulate import evaluate_on_device
from qpeft.evaluate import evaluate_loss
from qpeft.testing import tiny_causal_lm, tiny_tokenizer

pytest.importorskip("qiskit")


def weights_config(**fields) -> QTHAConfig:
    return QTHAConfig(r=4, bond_dim=2, target_modules=["q_proj"], qnn_mode="weights", **fields)


@pytest.mark.parametrize("diff_method", ["parameter_shift", "hybrid"])
def test_qtha_weights_trains_on_the_emulated_chip(diff_method):
    config = weights_config(backend="noisy", noise="wukong72", shots=256, diff_method=diff_method)
    model = get_model(tiny_causal_lm("llama"), config)
    qnn = next(iter(model.adapter_layers.values())).qnn
    assert qnn.backend.device_executor.device.name == "wukong72"
    start = qnn.weights.detach().clone()
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(qnn.weights, start)
    probs = qnn()
    assert torch.all((probs * 256 - (probs * 256).round()).abs() < 1e-3)  # frequencies of 256 shots


def test_config_accepts_device_names_only_on_the_noisy_backend():
    with pytest.raises(ValueError, match="not a known device; choose one of wukong72"):
        weights_config(backend="noisy", noise="wukong", diff_method="parameter_shift")
    with pytest.raises(ValueError, match="only by backend 'noisy'"):
        weights_config(backend="torch", noise="wukong72")
    with pytest.raises(ValueError, match="need a device"):  # mitigation needs a device's readout error
        get_model(
            tiny_causal_lm("llama"),
            weights_config(backend="noisy", noise={"depolarizing": 0.01}, backend_options={"mitigate_readout": True}),
        )


def test_evaluation_side_by_side_exact_noisy_mitigated():
    torch.manual_seed(0)
    model = get_model(tiny_causal_lm("llama"), weights_config(backend="torch"))
    qnn = next(iter(model.adapter_layers.values())).qnn
    with torch.no_grad():  # a circuit far from uniform, so noise moves the loss
        qnn.weights.copy_(torch.rand_like(qnn.weights) * 3)
        for layer in model.adapter_layers.values():
            torch.nn.init.normal_(layer.mpo_B.cores[-1], std=0.5)  # not a no-op any more
    tok = tiny_tokenizer()
    examples = [
        Example([{"role": "user", "content": f"{a}+{a}?"}, {"role": "assistant", "content": str(2 * a)}])
        for a in range(6)
    ]
    original = qnn.backend
    result = evaluate_on_device(model, tok, examples, 64, "wukong72")
    assert qnn.backend is original  # restored
    exact, noisy, mitigated = (result[k]["eval_loss"] for k in ("exact", "noisy", "noisy_mitigated"))
    assert exact == pytest.approx(evaluate_loss(model, tok, examples, 64)["eval_loss"])
    assert noisy != pytest.approx(exact, abs=1e-7)
    assert abs(mitigated - exact) < abs(noisy - exact)
    circuits = result["circuits"]
    assert circuits["circuits"] == len(model.adapter_layers) and circuits["two_qubit_gates"] > 0
    assert 0 < circuits["success_probability"] < 1


def test_device_noise_survives_save_and_load(tmp_path):
    config = weights_config(backend="noisy", noise="wukong72", backend_options={"mitigate_readout": True})
    get_model(tiny_causal_lm("llama"), config).save_adapter(tmp_path)
    layer = next(iter(load_adapter(tiny_causal_lm("llama"), tmp_path).adapter_layers.values()))
    executor = layer.qnn.backend.device_executor
    assert (layer.config.noise, executor.device.name, executor.mitigate) == ("wukong72", "wukong72", True)


def test_job_engine_local_provider_runs_on_the_emulated_chip():
    """The jobs' local provider with backend 'noisy:wukong72' gives the device's noisy
    probabilities (what NoisyBackend(noise='wukong72') computes), not the exact ones."""
    from qpeft.backends import get_backend
    from qpeft.jobs.base import BoundCircuit
    from qpeft.jobs.local import LocalProvider
    from qpeft.quantum.ansatz import build_ansatz

    circuit = build_ansatz("hardware_efficient", 3, 1, encoding=None)
    rows = torch.randn(2, circuit.n_weights, dtype=torch.float64)
    bound = [BoundCircuit(circuit, tuple(r.tolist())) for r in rows]
    provider = LocalProvider("noisy:wukong72")
    job = provider.submit(bound, None, "devices-test")
    assert provider.status(job).state.terminal
    ours = np.stack(provider.result(job, bound, None))
    expected = get_backend("noisy", noise="wukong72").run(circuit, None, rows, "probs").double().numpy()
    exact = get_backend("torch").run(circuit, None, rows, "probs").double().numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    assert np.abs(ours - exact).max() > 1e-3
