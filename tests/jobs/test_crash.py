"""A training run whose circuits run on a slow local job service is killed with SIGKILL in
the middle of a step, then resumed: it re-attaches to the jobs in its ledger, submits nothing
twice, and ends with the same adapter weights as a run that was never interrupted.

The job service is ``python -m qpeft.jobs.spool`` in its own process, so jobs outlive the
killed trainer as they would on a QPU service."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qpeft.jobs.ledger import read_ledger
from qpeft.testing import tiny_model_dir

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _train_cmd(tiny, out, spool, resume=False):
    options = {"spool": str(spool), "poll_interval": 0.01, "max_poll_interval": 0.05, "max_circuits": 20}
    cmd = [sys.executable, "-m", "qpeft.cli", "train", "--model", tiny, "--data", "arithmetic:1"]
    cmd += ["--method", "qtha-weights", "--adapter", json.dumps({"r": 4, "bond_dim": 2, "qnn_layers": 1})]
    cmd += ["--out", str(out), "--steps", "4", "--batch-size", "4", "--max-examples", "12", "--max-length", "64"]
    cmd += ["--save-steps", "1", "--eval-examples", "2", "--lr", "0.02", "--no-progress"]
    cmd += ["--quantum-backend", "local:shots", "--shots", "200", "--quantum-options", json.dumps(options)]
    return cmd + (["--resume"] if resume else [])


def _serve(spool):
    spool.mkdir(parents=True)
    return subprocess.Popen([sys.executable, "-m", "qpeft.jobs.spool", str(spool), "--delay", "0.5"], env=ENV)


def _stop(server, spool):
    (spool / "stop").touch()
    server.wait(timeout=30)


def _ledger(out):
    path = out / "jobs" / "ledger.jsonl"
    return read_ledger(path) if path.is_file() else []


@pytest.mark.slow
def test_sigkill_mid_step_then_resume(tmp_path):
    tiny = str(tiny_model_dir(tmp_path / "tiny"))
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    spool_a, spool_b = tmp_path / "spool-a", tmp_path / "spool-b"

    server = _serve(spool_a)
    subprocess.run(_train_cmd(tiny, straight, spool_a), env=ENV, check=True, capture_output=True)
    _stop(server, spool_a)

    server = _serve(spool_b)
    trainer = subprocess.Popen(_train_cmd(tiny, crashed, spool_b), env=ENV, stderr=subprocess.DEVNULL)
    in_flight = []
    deadline = time.monotonic() + 600  # (a loaded machine can take minutes to import and reach step 3)
    while time.monotonic() < deadline:  # wait until the third step's jobs are submitted and not yet done
        records = _ledger(crashed)
        submitted = [r for r in records if r["event"] == "submitted" and r["scope"] == "train-2"]
        done = {r["job_id"] for r in records if r["event"] == "done"}
        in_flight = [r for r in submitted if r["job_id"] not in done]
        if in_flight:
            break
        time.sleep(0.05)
    os.kill(trainer.pid, signal.SIGKILL)
    trainer.wait()
    assert in_flight, "the run never reached step 3"
    assert not (crashed / "adapter").exists()

    subprocess.run(_train_cmd(tiny, crashed, spool_b, resume=True), env=ENV, check=True, capture_output=True)
    _stop(server, spool_b)

    records = _ledger(crashed)
    submitted = [r for r in records if r["event"] == "submitted"]
    assert set(Counter(r["key"] for r in submitted).values()) == {1}  # no job submitted twice
    done = {r["job_id"] for r in records if r["event"] == "done"}
    assert {r["job_id"] for r in in_flight} <= done  # the open jobs were re-attached and finished
    served = [json.loads(line) for line in (spool_b / "served.jsonl").read_text().splitlines()]
    assert sorted(s["job_id"] for s in served) == sorted(r["job_id"] for r in submitted)
    assert len(submitted) == sum(r["event"] == "submitted" for r in _ledger(straight))

    a = load_file(straight / "adapter" / "adapter_model.safetensors")
    b = load_file(crashed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
