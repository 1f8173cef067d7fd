"""Experiment tracking: ``report_to`` reaches transformers' integrations, and the quantum values
(backend, shots, circuits / jobs / shots per step and in total, QPU spend so far) are logged beside
the losses. TensorBoard is checked for real (its event files, read back with tensorboard's own
EventAccumulator); MLflow with a local file store; Weights & Biases in offline mode. The counts are
checked against ``qpeft plan`` and the run's job ledger, the spend against the plan's cost."""

import dataclasses
import json

import pytest
from tiny_runs import tiny_run_config

from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.summary import totals
from qpeft.testing import tiny_model_dir
from qpeft.tracking import report_to_list
from qpeft.train import TrainConfig, plan, train


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-llama")))


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_report_to_all_names_every_installed_integration():
    pytest.importorskip("tensorboard")
    assert "tensorboard" in report_to_list("all")  # as transformers reads "all"


def test_report_to_names_are_checked():
    assert report_to_list("none") == [] and report_to_list(None) == [] and report_to_list("") == []
    assert report_to_list("tensorboard, mlflow", check_installed=False) == ["tensorboard", "mlflow"]
    with pytest.raises(ValueError, match=r"`report_to`: unknown tracker\(s\) \['tensorbord'\]"):
        TrainConfig(report_to="tensorbord")
    with pytest.raises(ValueError, match="`report_to`"):
        TrainConfig(report_to="none,wandb")
    with pytest.raises(ValueError, match="comma-separated string or a list"):
        report_to_list(3)
    pytest.importorskip("transformers")
    from transformers.integrations import get_available_reporting_integrations

    if "clearml" not in get_available_reporting_integrations():
        with pytest.raises(ValueError, match="clearml not installed; pip install clearml"):
            report_to_list("clearml")


def test_tensorboard_event_files_hold_the_losses_and_the_quantum_values(tiny_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    config = tiny_run_config(tiny_dir, out, quantum_backend="local:shots", shots=200, report_to="tensorboard")
    assert train(config)["finished"]
    expected = plan(config)

    (events,) = (out / "runs").glob("*/events.out.tfevents.*")
    board = EventAccumulator(str(events.parent))
    board.Reload()
    scalars = {tag: [(e.step, e.value) for e in board.Scalars(tag)] for tag in board.Tags()["scalars"]}
    losses = [(r["step"], r["loss"]) for r in _records(out) if "loss" in r]
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([v for _, v in losses], rel=1e-6)

    per_step = {name: expected[f"{name}_per_step"] for name in ("circuits", "jobs", "shots")}
    for name, value in per_step.items():
        assert scalars[f"train/quantum/{name}_per_step"] == [(s, value) for s in (1, 2, 3)], name
        assert scalars[f"train/quantum/{name}"] == [(s, s * value) for s in (1, 2, 3)], name
    assert scalars["train/quantum/shots_per_circuit"] == [(s, 200) for s in (1, 2, 3)]
    assert scalars["train/quantum/failures"] == [(s, 0) for s in (1, 2, 3)]
    # the run's ledger after training (the final evaluation adds its forward circuits) agrees
    ledger = totals(read_ledger(out / "jobs" / "ledger.jsonl"))
    assert ledger["circuits"] == 3 * per_step["circuits"] + expected["eval_circuits"]
    assert any(tag.startswith("train/quantum/backend") for tag in board.Tags()["tensors"])
    assert "quantum/spend_usd_high" not in _records(out)[0]  # a local simulator costs nothing


def test_spend_so_far_follows_the_plan_and_reaches_mlflow(tiny_dir, tmp_path, monkeypatch):
    pytest.importorskip("qiskit_ibm_runtime")
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's file store, offline (it prefers a database)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "qpeft-test")
    out = tmp_path / "ibm"
    config = tiny_run_config(
        tiny_dir,
        out,
        quantum_backend="ibm:fake_nairobi",  # IBM's local testing mode: the real Sampler path, priced as IBM
        shots=200,
        quantum_options={"poll_interval": 0.01},
        report_to="mlflow",
    )
    assert train(config)["finished"]
    # the plan's cost of one step more is the cost of one step (its evaluation part cancels)
    low = [
        plan(tiny_run_config(tiny_dir, out, steps=n, quantum_backend=config.quantum_backend, shots=200)) for n in (1, 2)
    ]
    step_cost = low[1]["cost_per_run"][1] - low[0]["cost_per_run"][1]
    step_seconds = low[1]["qpu_seconds_per_run"][1] - low[0]["qpu_seconds_per_run"][1]
    assert step_cost > 0

    records = [r for r in _records(out) if "loss" in r]
    assert records[0]["quantum/backend"] == "ibm:fake_nairobi"
    for r in records:
        assert r["quantum/spend_usd_high"] == pytest.approx(r["step"] * step_cost, rel=1e-9)
        assert r["quantum/qpu_seconds_high"] == pytest.approx(r["step"] * step_seconds, rel=1e-9)

    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("qpeft-test").experiment_id])
    history = {
        name: [
            (m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        ]
        for name in ("loss", "quantum/spend_usd_high", "quantum/jobs_per_step")
    }
    assert history["loss"] == [(r["step"], pytest.approx(r["loss"])) for r in records]
    assert history["quantum/spend_usd_high"] == [(r["step"], pytest.approx(r["step"] * step_cost)) for r in records]
    assert history["quantum/jobs_per_step"] == [(s, low[0]["jobs_per_step"]) for s in (1, 2, 3)]


def test_in_process_backends_log_their_settings_and_lora_logs_none(tiny_dir, tmp_path):
    qtha = tiny_run_config(
        tiny_dir,
        tmp_path / "qtha",
        steps=1,
        adapter={"r": 4, "bond_dim": 2, "backend": "shots", "shots": 64, "diff_method": "hybrid"},
    )
    assert train(qtha)["finished"]
    (first,) = [r for r in _records(tmp_path / "qtha") if "loss" in r]
    assert first["quantum/backend"] == "shots" and first["quantum/shots_per_circuit"] == 64
    assert "quantum/circuits_per_step" not in first  # no job engine: nothing is counted

    lora = tiny_run_config(tiny_dir, tmp_path / "lora", steps=1, method="lora", adapter={"r": 4})
    assert train(lora)["finished"]
    (first,) = [r for r in _records(tmp_path / "lora") if "loss" in r]
    assert not [k for k in first if k.startswith("quantum/")]


@pytest.mark.slow
def test_wandb_offline_runs_receive_the_quantum_values_one_run_per_training(tiny_dir, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from transformers import TrainerCallback

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")

    class Summary(TrainerCallback):
        """The run's newest value of every key, at the end of training (before the run is finished)."""

        def on_train_end(self, args, state, control, **kwargs):
            self.run_id, self.values = wandb.run.id, dict(wandb.run.summary)

    config = tiny_run_config(tiny_dir, tmp_path / "wb", quantum_backend="local:shots", shots=100, report_to="wandb")
    seen = []
    try:
        for out in ("wb1", "wb2"):  # two trainings in one process, as the cells of `qpeft compare`
            summary = Summary()
            assert train(dataclasses.replace(config, out=str(tmp_path / out)), callbacks=[summary])["finished"]
            seen.append(summary)
            assert wandb.run is None  # finished with its training
    finally:
        if wandb.run is not None:
            wandb.run.finish()
    expected = plan(config)
    for summary in seen:
        assert summary.values["train/quantum/circuits"] == 3 * expected["circuits_per_step"]
        assert summary.values["train/quantum/jobs_per_step"] == expected["jobs_per_step"]
        assert summary.values["train/global_step"] == 3 and "train/loss" in summary.values
    assert seen[0].run_id != seen[1].run_id
    assert len(list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))) == 2
