"""qtha-weights trained through the job engine on Amazon Braket: on its LocalSimulator (the
provider's real offline path: program sets, counts, the engine's ledger) the loss goes down and
the ledger's circuits, jobs and shots equal `qpeft plan`'s; on a QPU's ARN against a stand-in for
the unreachable service (braket_standin.py, installed at boto3's session: the network boundary),
the same, with the plan's price for the jobs the ledger holds."""

import json

import pytest
from braket_standin import StandInBraketService
from tiny_runs import tiny_run_config

from qpeft.jobs.budget import priced
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.summary import totals
from qpeft.testing import tiny_model_dir
from qpeft.train import plan, train

pytest.importorskip("braket.default_simulator")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-llama")))


def _config(tiny_dir, out, **kw):
    return tiny_run_config(tiny_dir, out, **{"shots": 400, **kw})


def _losses(out):
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "loss" in r]


def _ledger_equals_plan(config):
    records = read_ledger(f"{config.out}/jobs/ledger.jsonl")
    got, expected = totals(records), plan(config)
    assert (got["circuits"], got["jobs"], got["shots"]) == (
        expected["circuits_per_run"],
        expected["jobs_per_run"],
        expected["shots_per_run"],
    )
    assert got["failures"] == got["retries"] == 0
    return records, expected


def test_qtha_weights_trains_on_brakets_local_simulator_and_the_ledger_equals_the_plan(tiny_dir, tmp_path):
    config = _config(
        tiny_dir,
        tmp_path / "local",
        quantum_backend="braket:local",
        diff_method="parameter_shift",
        shots=8000,  # a program set holds 200,000 shots: 25 circuits, so a step's 36 take 2 tasks
        quantum_options={"poll_interval": 0.001},
    )
    assert train(config)["finished"]
    losses = _losses(tmp_path / "local")
    assert losses[-1] < losses[0]
    records, expected = _ledger_equals_plan(config)
    assert totals(records)["providers"] == ["braket:local"] and expected["jobs_per_step"] == 2
    assert expected["cost_per_run"] is None  # (the LocalSimulator is free)


def test_qtha_weights_trains_on_a_braket_qpu_stand_in_and_the_bill_is_the_plans(tiny_dir, tmp_path, monkeypatch):
    service = StandInBraketService(polls=0)
    service.install(monkeypatch)
    config = _config(
        tiny_dir,
        tmp_path / "garnet",
        quantum_backend="braket:iqm_garnet",
        diff_method="spsa",
        steps=2,
        quantum_options={"poll_interval": 0.001, "s3_folder": "s3://results/qpeft"},
    )
    assert train(config)["finished"]
    records, expected = _ledger_equals_plan(config)
    assert len(service.bill) == expected["jobs_per_run"]  # every job the plan counted is one task, no more
    assert priced(records)["braket"]["cost"] == pytest.approx(expected["cost_per_run"])
    assert totals(records)["providers"] == ["braket:iqm_garnet"]
