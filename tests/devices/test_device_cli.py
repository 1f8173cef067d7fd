"""`qpeft eval --emulate DEVICE`: the held-out loss with exact circuits, the chip's noise, and
noise + readout mitigation, side by side."""

from __future__ import annotations

import json

import pytest

from qpeft.cli import main
from qpeft.testing import tiny_model_dir

pytest.importorskip("qiskit")


def test_eval_emulate_reports_the_three_losses(tmp_path, capsys):
    model = str(tiny_model_dir(tmp_path / "tiny"))
    out = tmp_path / "run"
    flags = ["--model", model, "--data", "arithmetic:1", "--steps", "2", "--batch-size", "2", "--max-examples", "20"]
    flags += ["--max-length", "64", "--eval-examples", "3", "--no-progress", "--adapter", '{"r": 4, "bond_dim": 2}']
    assert main(["train", "--method", "qtha-weights", *flags, "--out", str(out)]) == 0
    capsys.readouterr()
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
