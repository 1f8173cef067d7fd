"""qtha-weights trained through the job engine: the plan's counts equal the ledger's after a
real run on a local provider; a few steps on IBM's local testing mode (a fake backend, the
provider's real Sampler path) and on Origin with a stand-in for the QCloud service (patched
in at the SDK's service class, the network boundary): the loss goes down and the ledger
totals match `qpeft plan`."""

import json

import pytest
from standins import StandInQCloudService
from tiny_runs import tiny_run_config

from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.summary import totals
from qpeft.testing import tiny_model_dir
from qpeft.train import plan, train


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-llama")))


_config = tiny_run_config


def _check_against_plan(config):
    records = read_ledger(f"{config.out}/jobs/ledger.jsonl")
    got = totals(records)
    expected = plan(config)
    assert got["circuits"] == expected["circuits_per_run"] and got["jobs"] == expected["jobs_per_run"]
    assert got["shots"] == expected["shots_per_run"] and got["failures"] == got["retries"] == 0
    per_step = [r for r in records if r["event"] == "submitted" and r["scope"] == "train-1"]
    assert len(per_step) == expected["jobs_per_step"] > 1
    return got, expected


@pytest.mark.parametrize("method", ["parameter_shift", "spsa", "hybrid"])
def test_plan_counts_equal_the_ledger_on_a_local_provider(tiny_dir, tmp_path, method):
    config = _config(
        tiny_dir,
        tmp_path / method,
        quantum_backend="local:shots",
        shots=500,
        diff_method=method,
        quantum_options={"max_circuits": 3 if method != "parameter_shift" else 20, "poll_interval": 0.001},
    )
    summary = train(config)
    assert summary["finished"]
    _, expected = _check_against_plan(config)
    assert expected["modules"] == 4  # q_proj and v_proj of 2 layers
    if method == "hybrid":
        assert expected["circuits_per_module"] == 1


def test_plan_counts_periodic_evaluations(tiny_dir, tmp_path):
    """(--eval-steps 2 over 4 steps: two evaluations during training, each a forward pass of every
    module's circuit at new weights, besides the final one; the plan counted only the final one)"""
    config = _config(
        tiny_dir,
        tmp_path / "evals",
        steps=4,
        eval_steps=2,
        quantum_backend="local:shots",
        shots=200,
        diff_method="spsa",
        quantum_options={"max_circuits": 4, "poll_interval": 0.001},
    )
    assert train(config)["finished"]
    got, expected = _check_against_plan(config)
    assert expected["eval_passes"] == 3 and expected["eval_circuits"] == 3 * expected["modules"]
    submitted = [r for r in read_ledger(f"{config.out}/jobs/ledger.jsonl") if r["event"] == "submitted"]
    evals = {r["scope"]: r["circuits"] for r in submitted if not r["scope"].startswith("train-")}
    assert evals == {"eval-step-2": 4, "eval-step-4": 4, "eval": 4}  # each its own scope in the ledger


def _losses(out):
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "loss" in r]


def test_ibm_local_testing_mode_trains(tiny_dir, tmp_path):
    pytest.importorskip("qiskit_ibm_runtime")
    config = _config(
        tiny_dir,
        tmp_path / "ibm",
        quantum_backend="ibm:fake_nairobi",
        shots=400,
        steps=4,
        quantum_options={"poll_interval": 0.01},
    )
    summary = train(config)
    losses = _losses(tmp_path / "ibm")
    assert summary["finished"] and losses[-1] < losses[0]
    ledger = totals(read_ledger(tmp_path / "ibm" / "jobs" / "ledger.jsonl"))
    expected = plan(config)
    assert ledger["circuits"] == expected["circuits_per_run"] and ledger["jobs"] == expected["jobs_per_run"]
    assert ledger["providers"] == ["ibm:fake_nairobi"]


def test_origin_with_a_stand_in_service_trains(tiny_dir, tmp_path, monkeypatch):
    qcloud = pytest.importorskip("pyqpanda3.qcloud")
    service = StandInQCloudService()
    # the network boundary: the SDK's service object and its job-by-id constructor
    monkeypatch.setattr(qcloud, "QCloudService", lambda api_key: service)
    monkeypatch.setattr(qcloud, "QCloudJob", service.job)
    monkeypatch.setenv("QPEFT_ORIGIN_API_KEY", "test-key")
    config = _config(
        tiny_dir,
        tmp_path / "origin",
        quantum_backend="origin",
        shots=300,
        steps=4,
        quantum_options={"poll_interval": 0.001},
    )
    summary = train(config)
    losses = _losses(tmp_path / "origin")
    assert summary["finished"] and losses[-1] < losses[0]
    ledger = totals(read_ledger(tmp_path / "origin" / "jobs" / "ledger.jsonl"))
    expected = plan(config)
    assert ledger["circuits"] == expected["circuits_per_run"] and ledger["jobs"] == expected["jobs_per_run"]
    assert ledger["providers"] == ["origin:WK_C180"]
    assert sum(n for n, _ in service.submissions) == ledger["circuits"] and {s for _, s in service.submissions} == {300}
