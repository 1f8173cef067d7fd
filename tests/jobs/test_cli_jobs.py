"""`qpeft plan`, `qpeft jobs RUN_DIR` and `qpeft eval --quantum-backend`."""

import json

import numpy as np
import pytest

from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine, LocalProvider
from qpeft.quantum.circuit import Circuit, Weight
from qpeft.testing import tiny_model_dir
from qpeft.train import TrainConfig, train


def test_jobs_prints_ledger_totals(tmp_path, capsys):
    circuit = Circuit(1).add("RY", [0], Weight(0))
    engine = JobEngine(LocalProvider("shots", max_circuits=4), tmp_path, poll_interval=0.001, progress=False)
    engine.run([BoundCircuit(circuit, (float(t),)) for t in np.linspace(0, 1, 10)], 50)
    assert main(["jobs", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["jobs"], got["circuits"], got["shots"], got["failures"]) == (3, 10, 500, 0)
    assert got["providers"] == ["local:shots"]
    assert main(["jobs", str(tmp_path / "nothing")]) == 2
    assert "no job ledger" in capsys.readouterr().err


def test_jobs_open_lists_the_jobs_that_may_still_run(tmp_path, capsys):
    """--open: the submitted jobs with no end, and the submissions of unknown outcome, with what a
    user needs to find them in the provider's console; finished ones are not listed."""
    from qpeft.jobs.ledger import Ledger

    ledger = Ledger(tmp_path / "jobs" / "ledger.jsonl")
    base = dict(provider="origin", backend="WK_C180", circuits=3, shots=1000, attempt=1)
    ledger.append("intent", key="k1", tag="k1.1", scope="train-3", **base)
    ledger.append("submitted", key="k1", tag="k1.1", job_id="JOB-A", scope="train-3", **base)
    ledger.append("intent", key="k2", tag="k2.1", scope="train-3", **base)  # a crash cut it off: no id
    ledger.append("intent", key="k3", tag="k3.1", scope="train-2", **base)
    ledger.append("submitted", key="k3", tag="k3.1", job_id="JOB-DONE", scope="train-2", **base)
    ledger.append("done", key="k3", tag=None, job_id="JOB-DONE", scope="train-2", **base)
    ledger.append("left", key="k1", tag="k1.1", job_id="JOB-A", why="other shots (switch_shots)")
    ledger.close()
    assert main(["jobs", str(tmp_path), "--open"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("JOB-A  origin:WK_C180  train-3  3 circuits, 1000 shots")
    assert "went on without" in lines[0]
    assert lines[1].startswith("tag k2.1 (outcome unknown: `--resolve k2.1`") and "went on" not in lines[1]
    assert "JOB-DONE" not in out and "2 open job(s)" in lines[2]
    assert main(["jobs", str(tmp_path), "--open", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [(j["job_id"], j["tag"], j["left"]) for j in got] == [("JOB-A", "k1.1", True), (None, "k2.1", False)]
    assert main(["jobs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["left_open"] == 1


def test_plan_needs_a_quantum_backend(capsys):
    assert main(["plan", "--method", "qtha-weights"]) == 2
    assert "needs --quantum-backend" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-jobs")
    tiny = str(tiny_model_dir(root / "tiny"))
    config = TrainConfig(
        model=tiny,
        data="arithmetic:1",
        method="qtha-weights",
        adapter={"r": 4, "bond_dim": 2, "qnn_layers": 1},
        out=str(root / "run"),
        steps=2,
        batch_size=2,
        max_examples=8,
        max_length=64,
        eval_examples=2,
        progress=False,
        quantum_backend="local:shots",
        shots=100,
        quantum_options={"poll_interval": 0.001},
    )
    train(config)
    return config


def test_plan_and_eval_on_the_command_line(trained, capsys):
    flags = ["--model", trained.model, "--method", "qtha-weights", "--adapter", json.dumps(trained.adapter)]
    flags += ["--quantum-backend", "origin", "--shots", "1000", "--steps", "10", "--diff-method", "spsa"]
    assert main(["plan", *flags, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["modules"], plan["circuits_per_step"], plan["jobs_per_step"]) == (4, 12, 1)
    assert plan["circuits_per_run"] == 10 * 12 + 4 and not plan["rate_official"]
    assert main(["plan", *flags]) == 0
    assert "NO official figures" in capsys.readouterr().out

    adapter = f"{trained.out}/adapter"
    args = ["eval", "--adapter", adapter, "--data", "arithmetic:1", "--examples", "2", "--max-length", "64"]
    assert main([*args, "--quantum-backend", "local:shots", "--shots", "100"]) == 0
    ledger = [json.loads(line) for line in open(f"{trained.out}/jobs/ledger.jsonl")]
    assert [r["circuits"] for r in ledger if r["event"] == "submitted" and r["scope"] == "eval-adapter"] == [4]


def test_plan_says_activation_mode_is_impractical_on_an_ibm_chip(trained, capsys):
    pytest.importorskip("qiskit_ibm_runtime")
    activation = ["--model", trained.model, "--method", "qtha", "--quantum-backend", "ibm:fake_torino"]
    assert main(["plan", *activation, "--shots", "100"]) == 0
    assert "impractical on hardware" in capsys.readouterr().out


def test_credentials_are_not_options(capsys):
    args = ["plan", "--method", "qtha-weights", "--quantum-backend", "origin", "--shots", "10"]
    assert main([*args, "--quantum-options", '{"api_key": "sk-x"}']) == 2
    err = capsys.readouterr().err
    assert "QPEFT_ORIGIN_API_KEY" in err and "sk-x" not in err


def test_a_job_past_its_deadline_is_a_clear_error_and_a_rerun_continues(trained, capsys):
    adapter = f"{trained.out}/adapter"
    args = ["eval", "--adapter", adapter, "--data", "arithmetic:1", "--examples", "2", "--max-length", "64"]
    args += ["--quantum-backend", "local:shots", "--shots", "77"]  # shots no other test uses: nothing cached
    slow = {"workers": 1, "delay": 1.0, "poll_interval": 0.001, "deadline": 0.05}  # a queue slower than the deadline
    assert main([*args, "--quantum-options", json.dumps(slow)]) == 3
    err = capsys.readouterr().err
    assert "deadline of 0.05 s reached" in err and "rerun the same command" in err and "Traceback" not in err
    assert main([*args, "--quantum-options", json.dumps({"poll_interval": 0.001})]) == 0
