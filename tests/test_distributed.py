"""Multi-process data parallel on CPU (gloo) through torchrun: the gradient that 2 processes
apply at steps 1 and 2 (each on its own batch of 2, averaged by DDP) equals the gradient of
one process on the union of their batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qpeft.adapters import load_adapter
from qpeft.testing import DDP_GRAD_TOL, tiny_model_dir


def _config(tmp_path, model, out, batch):
    cfg = {
        "model": model,
        "data": "arithmetic:1",
        "method": "qtha",
        "adapter": {"r": 4, "bond_dim": 2},
        "out": str(out),
        "steps": 2,
        "batch_size": batch,
        "max_examples": 48,
        "max_length": 96,
        "eval_examples": 4,
        "lr": 5e-3,
        "progress": False,
        "save_steps": 100,
    }
    path = tmp_path / f"{out.name}.json"
    path.write_text(json.dumps(cfg))
    return path


def _union(a: dict, b: dict, pad_id: int) -> dict:
    """Two right-padded batches as one: pad the narrower with pad id / -100 / mask 0."""
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    fill = {"input_ids": pad_id, "labels": -100, "attention_mask": 0}
    out = {}
    for key, value in fill.items():
        parts = [torch.nn.functional.pad(t[key], (0, width - t[key].shape[1]), value=value) for t in (a, b)]
        out[key] = torch.cat(parts)
    return out


def _one_process_gradient(model_dir: Path, init: Path, batch: dict, max_grad_norm: float) -> dict:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = load_adapter(base, init).train()
    model(**batch).loss.backward()  # token mean over the union batch
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    torch.nn.utils.clip_grad_norm_(list(params.values()), max_grad_norm)  # as the Trainer does
    return {n: p.grad for n, p in params.items()}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_two_processes_apply_the_gradient_of_one_process_on_the_union_batch(tmp_path):
    model_dir = tiny_model_dir(tmp_path / "model")
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    ddp = tmp_path / "ddp"
    # --standalone: a local rendezvous on a free port (parallel test runs do not collide)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, str(worker), str(_config(tmp_path, str(model_dir), ddp, 2))],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from transformers import TrainingArguments

    clip = TrainingArguments(output_dir=str(tmp_path / "unused")).max_grad_norm
    pad_id = json.loads((model_dir / "config.json").read_text())["pad_token_id"]
    for step in (1, 2):
        grads = [load_file(ddp / f"step{step}_rank{r}_grad.safetensors") for r in (0, 1)]
        batches = [load_file(ddp / f"step{step}_rank{r}_batch.safetensors") for r in (0, 1)]
        assert grads[0].keys() == grads[1].keys() and grads[0]
        for key in grads[0]:
            assert torch.equal(grads[0][key], grads[1][key]), key  # all-reduced: every rank applies the same
        assert not torch.equal(batches[0]["input_ids"][:, :8], batches[1]["input_ids"][:, :8])  # different data
        expected = _one_process_gradient(model_dir, ddp / f"step{step}_init", _union(*batches, pad_id), clip)
        assert expected.keys() == grads[0].keys()
        if step == 2:  # from a trained adapter every factor (MPO cores, QNN angles, gamma) has a gradient
            assert all(g.abs().max() > 0 for g in expected.values())
        for key in expected:
            torch.testing.assert_close(grads[0][key], expected[key], **DDP_GRAD_TOL, msg=f"step {step}: {key}")
