"""Multi-process data parallel on CPU (gloo) through torchrun: 2 processes x batch 2 against
one process x batch 4 (the same global batch)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qpeft.testing import tiny_model_dir


def _config(tmp_path, model, out, batch):
    cfg = {
        "model": model,
        "data": "arithmetic:1",
        "method": "qtha",
        "adapter": {"r": 4, "bond_dim": 2},
        "out": str(out),
        "steps": 4,
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


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_two_processes_match_one(tmp_path):
    model = str(tiny_model_dir(tmp_path / "model"))
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    ddp = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29561",
        str(worker),
        str(_config(tmp_path, model, ddp, 2)),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = load_file(ddp / "rank0.safetensors"), load_file(ddp / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and rank0
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key  # gradients were all-reduced every step

    single = tmp_path / "single"
    done = subprocess.run(
        [sys.executable, str(worker), str(_config(tmp_path, model, single, 4))],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ddp_loss = json.loads((ddp / "results.json").read_text())["losses"]
    one_loss = json.loads((single / "results.json").read_text())["losses"]
    assert [s for s, _ in ddp_loss] == [s for s, _ in one_loss] == [1, 2, 3, 4]
    # the same global batch of 4, sampled in a different order: the step losses agree closely
    for (_, a), (_, b) in zip(ddp_loss, one_loss):
        assert abs(a - b) / b < 0.05, (ddp_loss, one_loss)
