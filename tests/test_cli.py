"""The qpeft command line on a tiny model: train, eval, generate, export, compare, --help."""

import dataclasses
import json

import pytest

from qpeft.adapters import QTHAConfig, field_help
from qpeft.cli import build_parser, main
from qpeft.testing import tiny_model_dir
from qpeft.train import TrainConfig


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-cli")))


def _common(tiny_dir, adapter='{"r": 4, "bond_dim": 2}'):
    return [
        "--model",
        tiny_dir,
        "--data",
        "arithmetic:1",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--max-examples",
        "30",
        "--max-length",
        "96",
        "--eval-examples",
        "4",
        "--no-progress",
        "--adapter",
        adapter,
    ]


def test_help_is_complete(capsys):
    parser = build_parser()
    for command in ("train", "compare", "eval", "generate", "export"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = capsys.readouterr().out
        if command in ("train", "compare"):
            for field in dataclasses.fields(TrainConfig):
                if command == "compare" and field.name in ("method", "seed"):
                    continue
                assert "--" + field.name.replace("_", "-") in text, (command, field.name)
                assert field.metadata["help"].split(":")[0][:20] in " ".join(text.split())
            for name, doc in field_help(QTHAConfig).items():  # --adapter fields, documented once
                assert f"  {name} " in text and doc.split()[0] in text, name


def test_train_eval_generate_export(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *_common(tiny_dir), "--method", "qtha-weights", "--out", str(out)]) == 0
    assert f"run directory: {out}" in capsys.readouterr().out
    summary = json.loads((out / "results.json").read_text())
    assert summary["global_step"] == 3 and summary["finished"]
    assert (
        main(
            [
                "eval",
                "--adapter",
                str(out / "adapter"),
                "--data",
                "arithmetic:1",
                "--examples",
                "4",
                "--max-length",
                "96",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["eval_loss"] > 0 and "accuracy" in result
    assert main(["generate", "--adapter", str(out / "adapter"), "--prompt", "1+1?", "--max-new-tokens", "4"]) == 0
    assert isinstance(capsys.readouterr().out, str)
    assert main(["export", "--adapter", str(out / "adapter"), "--out", str(tmp_path / "peft")]) == 0
    assert (tmp_path / "peft" / "adapter_config.json").is_file()


def test_config_file_and_flag_override(tiny_dir, tmp_path, capsys):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"method": "lora", "steps": 5, "adapter": {"r": 2}}))
    out = tmp_path / "run"
    args = _common(tiny_dir, adapter='{"r": 3}') + ["--config", str(cfg), "--out", str(out)]
    assert main(["train", *args]) == 0  # --steps 3 and --adapter on the command line beat the file
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["steps"] == 3 and saved["method"] == "lora" and saved["adapter"] == {"r": 3}
    bad = _common(tiny_dir, adapter='{"bond_dim": 2}') + ["--method", "lora", "--out", str(tmp_path / "bad")]
    assert main(["train", *bad]) == 2
    assert "preset 'lora' (lora) has no field(s) ['bond_dim']" in capsys.readouterr().err


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "is neither the built-in 'arithmetic' task nor an existing path" in capsys.readouterr().err


def test_compare_writes_report_and_plot(tiny_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *_common(tiny_dir), "--methods", "lora,qtha", "--seeds", "0,1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "| lora |" in report and "| qtha |" in report and "+-" in report
    assert (out / "loss.png").stat().st_size > 1000
    assert "report:" in printed and "loss plot:" in printed
    # a second run reuses the finished runs instead of training again
    stamp = (out / "lora-seed0" / "results.json").stat().st_mtime
    assert main(["compare", *_common(tiny_dir), "--methods", "lora", "--seeds", "0", "--out", str(out)]) == 0
    assert (out / "lora-seed0" / "results.json").stat().st_mtime == stamp
