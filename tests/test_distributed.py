"""Multi-process data parallel on CPU (gloo) through torchrun: the gradient that 2 processes
apply at steps 1 and 2 (each on its own batch of 2, averaged by DDP) equals the gradient of
one process on the union of their batches; and on a QPU (the spool job service, in its own
process, whose served.jsonl is the bill) only rank 0 submits: the 2 processes pay for exactly
the jobs one process pays for with the same global batch, write the same ledger, and
`qpeft plan` equals it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qpeft.adapters import load_adapter
from qpeft.jobs.distributed import world
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.summary import totals
from qpeft.testing import DDP_GRAD_TOL, tiny_model_dir
from qpeft.train import TrainConfig, plan


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


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, (0, 1)), ({"WORLD_SIZE": "1"}, (0, 1)), ({"RANK": "3", "WORLD_SIZE": "4"}, (3, 4))],
)
def test_world_reads_torchruns_rank_and_world_size(env, expected, monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert world() == expected


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two', not an integer"),
        ({"RANK": "", "WORLD_SIZE": "2"}, "RANK='', not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 and WORLD_SIZE=2"),
        ({"WORLD_SIZE": "0"}, "RANK=0 and WORLD_SIZE=0"),
        ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK=-1 and WORLD_SIZE=2"),
    ],
)
def test_world_names_a_bad_rank_or_world_size_and_how_to_fix_it(env, says, monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="unset (it|both) to run in one process") as err:
        world()
    assert says in str(err.value)


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


def _served(spool: Path) -> list[dict]:
    path = spool / "served.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _per_scope(records: list[dict]) -> dict:
    """scope -> (jobs, circuits) submitted."""
    out: dict = {}
    for r in records:
        if r["event"] == "submitted":
            jobs, circuits = out.get(r["scope"], (0, 0))
            out[r["scope"]] = (jobs + 1, circuits + r["circuits"])
    return out


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_under_torchrun_rank_0_submits_and_the_bill_is_one_processs(tmp_path):
    import qpeft

    model_dir = tiny_model_dir(tmp_path / "model")
    src = str(Path(qpeft.__file__).resolve().parents[1])  # the processes run the code this test imports
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    runs = {}
    for name, batch, launcher in (
        ("single", 4, [sys.executable]),
        ("ddp", 2, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]),
    ):
        spool = tmp_path / f"spool-{name}"
        spool.mkdir()
        server = subprocess.Popen([sys.executable, "-m", "qpeft.jobs.spool", str(spool)], env=env)
        options = {"spool": str(spool), "max_circuits": 4, "poll_interval": 0.01, "max_poll_interval": 0.05}
        config = TrainConfig(
            model=str(model_dir),
            data="arithmetic:1",
            method="qtha-weights",
            adapter={"r": 4, "bond_dim": 2, "qnn_layers": 1},
            out=str(tmp_path / name),
            steps=2,
            eval_steps=1,  # periodic evaluations (all ranks take part) besides the final one (rank 0)
            batch_size=batch,
            max_examples=24,
            max_length=64,
            eval_examples=4,
            save_steps=100,
            lr=2e-2,
            progress=False,
            quantum_backend="local:shots",
            shots=200,
            diff_method="spsa",
            quantum_options=options,
        )
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config.__dict__))
        try:
            done = subprocess.run(
                [*launcher, "-m", "qpeft.cli", "train", "--config", str(path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
        finally:
            (spool / "stop").touch()
            server.wait(timeout=60)
        assert done.returncode == 0, done.stderr[-3000:]
        records = read_ledger(tmp_path / name / "jobs" / "ledger.jsonl")
        runs[name] = (config, records, _served(spool))

    single, ddp = runs["single"], runs["ddp"]
    config, records, served = ddp
    submitted = [r for r in records if r["event"] == "submitted"]
    # one submitter: every job the service ran is one the ledger recorded once, nothing twice
    assert sorted(s["job_id"] for s in served) == sorted(r["job_id"] for r in submitted)
    assert len({r["key"] for r in submitted}) == len(submitted)
    # the bill of one process with the same global batch, scope by scope (training steps, evaluations)
    assert len(served) == len(single[2]) and _per_scope(records) == _per_scope(single[1])
    assert {"eval-step-1", "eval-step-2", "eval"} <= set(_per_scope(records))
    expected = plan(config)
    got = totals(records)
    assert (got["jobs"], got["circuits"], got["shots"]) == (
        expected["jobs_per_run"],
        expected["circuits_per_run"],
        expected["shots_per_run"],
    )
