"""`qpeft compare` on a tiny model: SIGTERM stops the whole comparison with a resumable
checkpoint, and the same call again reuses finished cells and resumes the interrupted one."""

import json
import os
import signal

import pytest
from transformers import TrainerCallback

from qpeft.report import compare, machine_lines
from qpeft.sysinfo import describe, machine
from qpeft.testing import tiny_model_dir
from qpeft.train import TrainConfig


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-report")))


class SigtermIn(TrainerCallback):
    """Sends this process SIGTERM after step ``k`` of the run in directory ``run`` only."""

    def __init__(self, run, k):
        self.run, self.k = run, k

    def on_step_end(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.run) and state.global_step == self.k:
            os.kill(os.getpid(), signal.SIGTERM)


def _loss_steps(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def test_sigterm_stops_the_comparison_and_the_same_call_resumes_it(tiny_dir, tmp_path):
    base = TrainConfig(
        model=tiny_dir,
        data="arithmetic:1",
        adapter={"r": 2, "bond_dim": 2},
        steps=4,
        batch_size=2,
        max_examples=30,
        max_length=64,
        eval_examples=2,
        progress=False,
    )
    out = tmp_path / "cmp"
    stopped = compare(base, ["lora", "qtha"], [0, 1], out, callbacks=[SigtermIn("qtha-seed0", 2)])
    assert stopped["interrupted"] == out / "qtha-seed0"
    assert [r["finished"] for r in stopped["results"]["lora"]] == [True, True]
    assert (out / "qtha-seed0" / "checkpoint-2").is_dir()
    assert not (out / "qtha-seed1").exists() and not (out / "report.md").exists()  # nothing ran after it
    stamps = {seed: (out / f"lora-seed{seed}" / "results.json").stat().st_mtime for seed in (0, 1)}

    report = compare(base, ["lora", "qtha"], [0, 1], out)
    assert "interrupted" not in report and (out / "report.md").is_file()
    assert all(r["finished"] and r["global_step"] == 4 for runs in report["results"].values() for r in runs)
    assert {s: (out / f"lora-seed{s}" / "results.json").stat().st_mtime for s in (0, 1)} == stamps  # reused
    assert _loss_steps(out / "qtha-seed0") == [1, 2, 3, 4]  # resumed at step 3, not started again
    assert _loss_steps(out / "qtha-seed1") == [1, 2, 3, 4]

    # every run records its machine, and the report's Machine line comes from those records
    here = describe(machine())
    assert f"Machine: {here}; report written" in (out / "report.md").read_text()
    # a reused run that trained elsewhere: the report lists both machines with their runs
    elsewhere = out / "lora-seed1" / "results.json"
    recorded = json.loads(elsewhere.read_text())
    assert recorded["machine"] == machine()
    recorded["machine"] = {**recorded["machine"], "accelerator": "NVIDIA H200 (CUDA)"}
    elsewhere.write_text(json.dumps(recorded))
    compare(base, ["lora", "qtha"], [0, 1], out)
    text = (out / "report.md").read_text()
    assert "Machine:" not in text and "the runs trained on 2 different machines" in text
    assert f"- {here}: lora seed 0, qtha seed 0, qtha seed 1" in text
    assert f"- {describe(recorded['machine'])}: lora seed 1" in text
    assert "trained on NVIDIA H200 (CUDA) (torch" in text


def _summary(method_seed: int, recorded: dict | None) -> dict:
    return {"config": {"seed": method_seed}, **({"machine": recorded} if recorded is not None else {})}


def test_machine_lines_name_every_machine_and_runs_that_recorded_none():
    a = {"cpu": "Xeon", "platform": "Linux-6", "accelerator": "the CPU", "torch": "2.13.0"}
    assert machine_lines({"lora": [_summary(0, a), _summary(1, a)]})[0].startswith(
        "Machine: Xeon, Linux-6, trained on the CPU (torch 2.13.0); report written "
    )
    lines = machine_lines({"lora": [_summary(0, a)], "qtha": [_summary(0, None), _summary(1, a)]})
    assert lines[0].startswith("Machines: the runs trained on 2 different machines")
    assert lines[2:] == [
        "- Xeon, Linux-6, trained on the CPU (torch 2.13.0): lora seed 0, qtha seed 1",
        "- not recorded (a run from a qpeft that did not record its machine): qtha seed 0",
    ]
