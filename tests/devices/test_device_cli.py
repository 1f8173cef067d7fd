"""`qpeft eval --emulate DEVICE`: the held-out loss with exact circuits, the chip's noise, and
noise + readout mitigation, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qpeft.cli import main
from qpeft.jobs.ledger import read_ledger
from qpeft.testing import tiny_model_dir

pytest.importorskip("qiskit")


def _trained_run(tmp_path, capsys) -> Path:
    """A tiny qtha-weights run (2 steps); returns its run directory."""
    model = str(tiny_model_dir(tmp_path / "tiny"))
    out = tmp_path / "run"
    flags = ["--model", model, "--data", "arithmetic:1", "--steps", "2", "--batch-size", "2", "--max-examples", "20"]
    flags += ["--max-length", "64", "--eval-examples", "3", "--no-progress", "--adapter", '{"r": 4, "bond_dim": 2}']
    assert main(["train", "--method", "qtha-weights", *flags, "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def test_eval_emulate_reports_the_three_losses(tmp_path, capsys):
    out = _trained_run(tmp_path, capsys)
    args = ["eval", "--adapter", str(out / "adapter"), "--examples", "3", "--emulate", "wukong72"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    emulated = result["emulated"]
    assert emulated["device"] == "wukong72"
    assert emulated["exact"]["eval_loss"] == pytest.approx(result["eval_loss"], rel=1e-5)
    assert emulated["noisy"]["eval_loss"] > 0 and emulated["noisy_mitigated"]["eval_loss"] > 0
    assert emulated["circuits"]["two_qubit_gates"] > 0
    assert main(["eval", "--adapter", str(out / "adapter"), "--emulate", "wukong7"]) != 0
    assert "known devices: wukong72" in capsys.readouterr().err


def test_eval_on_a_noisy_device_backend_reports_the_three_losses(tmp_path, capsys):
    """`--quantum-backend noisy:wukong72` (shorthand for local:noisy:wukong72) runs the held-out
    loss through the job engine on the emulated chip and reports the side-by-side losses too."""
    out = _trained_run(tmp_path, capsys)
    args = ["eval", "--adapter", str(out / "adapter"), "--examples", "2", "--quantum-backend", "noisy:wukong72"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["emulated"]["device"] == "wukong72"
    assert result["emulated"]["noisy"]["eval_loss"] > 0 and result["emulated"]["circuits"]["two_qubit_gates"] > 0
    # the eval forward itself went through the job engine's local provider on the emulated chip
    submitted = [r for r in read_ledger(out / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]
    assert submitted and {(r["provider"], r["backend"]) for r in submitted} == {("local", "noisy:wukong72")}
