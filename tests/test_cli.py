"""The qpeft command line on a tiny model: train, eval, generate, export, compare, --help."""

import dataclasses
import json
import re

import pytest
import torch

import qpeft.data
import qpeft.evaluate
import qpeft.models
from qpeft.adapters import QTHAConfig, field_help
from qpeft.cli import build_parser, main
from qpeft.data import example_key, read_chat_jsonl
from qpeft.testing import tiny_model_dir
from qpeft.train import TrainConfig, adapter_config


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
    assert capsys.readouterr().out.strip()  # the decoded completion is not empty
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
    where = f"trained on {torch.cuda.get_device_name()} (CUDA)" if torch.cuda.is_available() else "trained on the CPU"
    assert where in report
    assert (out / "loss.png").stat().st_size > 1000
    assert "report:" in printed and "loss plot:" in printed
    # a second run reuses the finished runs instead of training again
    stamp = (out / "lora-seed0" / "results.json").stat().st_mtime
    assert main(["compare", *_common(tiny_dir), "--methods", "lora", "--seeds", "0", "--out", str(out)]) == 0
    assert (out / "lora-seed0" / "results.json").stat().st_mtime == stamp


@pytest.fixture
def recorded(monkeypatch):
    """What training encodes (its training examples) and what every evaluate() call gets;
    both still run the real code."""
    seen = {"train": [], "eval": []}

    class Recording(qpeft.data.EncodedDataset):
        def __init__(self, tokenizer, examples, max_length):
            seen["train"].append(list(examples))
            super().__init__(tokenizer, examples, max_length)

    real = qpeft.evaluate.evaluate

    def evaluate(model, tokenizer, examples, max_length, **kw):
        seen["eval"].append(list(examples))
        return real(model, tokenizer, examples, max_length, **kw)

    monkeypatch.setattr(qpeft.data, "EncodedDataset", Recording)
    monkeypatch.setattr(qpeft.evaluate, "evaluate", evaluate)
    return seen


def _keys(examples):
    return [example_key(e) for e in examples]


def test_eval_uses_the_runs_held_out_split(tiny_dir, tmp_path, recorded, capsys):
    # level-2 arithmetic, a non-default seed and max_examples: what `qpeft eval` used to
    # ignore (it split all 2000 problems with seed 0, so most of its examples were trained on)
    out = tmp_path / "run"
    flags = ["--model", tiny_dir, "--data", "arithmetic", "--seed", "3", "--max-examples", "200", "--steps", "2"]
    flags += ["--batch-size", "2", "--max-length", "96", "--eval-examples", "16", "--no-progress", "--out", str(out)]
    assert main(["train", "--method", "lora", *flags]) == 0
    (trained,), (final_eval,) = recorded["train"], recorded["eval"]
    assert len(trained) == 180 and len(final_eval) == 16
    capsys.readouterr()

    assert main(["eval", "--adapter", str(out / "adapter")]) == 0
    evaluated = recorded["eval"][-1]
    assert _keys(evaluated) == _keys(final_eval)  # the run's own held-out examples
    assert not set(_keys(evaluated)) & set(_keys(trained))
    assert json.loads(capsys.readouterr().out)["examples"] == 16

    # a flag that overrides the run's split is obeyed, with a warning that counts the overlap
    assert main(["eval", "--adapter", str(out / "adapter"), "--seed", "0", "--examples", "8"]) == 0
    evaluated = recorded["eval"][-1]
    shared = len([k for k in _keys(evaluated) if k in set(_keys(trained))])
    assert len(evaluated) == 8 and shared > 0
    assert f"{shared} of the 8 evaluated examples were training examples of this run" in capsys.readouterr().err


def test_eval_split_all_uses_every_example_of_a_test_file(tiny_dir, tmp_path, recorded, capsys):
    out = tmp_path / "run"
    assert main(["train", *_common(tiny_dir, adapter='{"r": 2}'), "--method", "lora", "--out", str(out)]) == 0
    test_file = tmp_path / "test.jsonl"
    questions = [f"What is {k} + {k}?" for k in range(5)]
    test_file.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": str(2 * k)}]})
            + "\n"
            for k, q in enumerate(questions)
        )
    )
    capsys.readouterr()
    assert main(["eval", "--adapter", str(out / "adapter"), "--data", str(test_file), "--split", "all"]) == 0
    assert _keys(recorded["eval"][-1]) == _keys(read_chat_jsonl(test_file))
    assert json.loads(capsys.readouterr().out)["examples"] == 5
    assert main(["eval", "--adapter", str(out / "adapter"), "--data", str(test_file)]) == 0  # default: held-out
    assert len(recorded["eval"][-1]) == 1  # the run's val_fraction 0.1 of 5 examples


def test_eval_bad_adapter_fails_before_loading_a_model(tmp_path, monkeypatch, capsys):
    def load_model(*args, **kwargs):
        raise AssertionError("load_model must not be called for a bad --adapter")

    monkeypatch.setattr(qpeft.models, "load_model", load_model)
    assert main(["eval", "--adapter", str(tmp_path / "no-such-run" / "adapter")]) == 2
    assert "no-such-run/adapter: no such directory" in capsys.readouterr().err
    assert main(["eval", "--adapter", str(tmp_path)]) == 2
    assert "no adapter_config.json in it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--adapter", str(tmp_path), "--examples", "0"])
    assert "--examples: must be a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("rank", ["0", "1"])
def test_eval_under_torchrun_is_refused_on_every_rank_before_loading_a_model(rank, monkeypatch, capsys):
    def load_model(*args, **kwargs):
        raise AssertionError("load_model must not be called under torchrun")

    monkeypatch.setattr(qpeft.models, "load_model", load_model)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    assert main(["eval", "--quantum-backend", "local", "--shots", "100", "--adapter", "runs/x/adapter"]) == 2
    assert "qpeft eval runs in one process: run it without torchrun" in capsys.readouterr().err


def test_eval_with_a_world_size_that_is_not_a_number_says_so(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "two")
    monkeypatch.delenv("RANK", raising=False)
    assert main(["eval", "--adapter", "runs/x/adapter"]) == 2
    err = capsys.readouterr().err
    assert "WORLD_SIZE='two', not an integer" in err and "Traceback" not in err


@pytest.mark.parametrize(("rank", "says"), [("one", "RANK='one', not an integer"), ("2", "RANK=2 and WORLD_SIZE=2")])
def test_train_with_a_rank_outside_its_world_says_so_before_making_the_run(rank, says, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    out = tmp_path / "run"
    flags = ["--model", str(tmp_path / "no-model"), "--data", "arithmetic:1", "--method", "lora", "--out", str(out)]
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not out.exists()  # (the error comes before the run directory and the model)


def test_train_prints_the_run_directory_of_its_config_file(tiny_dir, tmp_path, capsys):
    out = tmp_path / "from-config"
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"method": "lora", "out": str(out)}))
    assert main(["train", *_common(tiny_dir, adapter='{"r": 2}'), "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"run directory: {out}")
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_adapter_help_example_parses(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    example = re.search(r"--adapter ADAPTER adapter config fields .*? e\.g\. '(.*?)' \(default", text)
    args = parser.parse_args(["train", "--adapter", example.group(1)])  # as the shell passes it, unquoted
    assert args.adapter and adapter_config(TrainConfig(adapter=args.adapter))  # the default method takes it


def test_version(capsys):
    import qpeft

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"qpeft {qpeft.__version__}\n"


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_quantum_options_help_shows_json_that_the_flag_takes(capsys):
    for command in ("train", "eval"):
        text = _help(command, capsys)
        example = re.search(r"--quantum-options QUANTUM_OPTIONS .*? e\.g\. '(.*?)'", text).group(1)
        args = build_parser().parse_args([command, "--quantum-options", example])
        assert args.quantum_options == {"max_parallel": 4, "job_timeout": 3600}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--quantum-options", "{'max_parallel': 4}"])
    err = capsys.readouterr().err
    assert "argument --quantum-options: not valid JSON: \"{'max_parallel': 4}\"" in err
    assert "JSON keys and strings take double quotes" in err and "invalid loads value" not in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--adapter", "[4]"])
    assert "argument --adapter: must be a JSON object ({...}), got '[4]'" in capsys.readouterr().err


def test_plan_help_shows_only_what_changes_the_plan(capsys):
    from qpeft.cli.train import PLAN_FIELDS

    text = _help("plan", capsys)
    shown = {f.name for f in dataclasses.fields(TrainConfig) if f"--{f.name.replace('_', '-')} " in text}
    assert shown == set(PLAN_FIELDS)
    assert {"quantum_backend", "shots", "steps", "method", "diff_method", "batch_size", "max_length"} <= shown
    assert "eval_steps" in shown  # periodic evaluations run the circuits too
    for hidden in ("--lr", "--out", "--save-steps", "--resume", "--progress", "--dtype"):
        assert hidden not in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["plan", "--lr", "0.1"])


def test_generate_and_eval_help_show_their_defaults(capsys):
    text = _help("generate", capsys)
    assert "tokens to generate, greedy (default: 128)" in text
    assert "default: none, the base model alone" in text and "without --adapter, smollm2-135m" in text
    text = _help("eval", capsys)
    assert "(default: held-out)" in text and "--loss-only" in text and "else 64" in text
    text = _help("train", capsys)
    assert "(default: the preset's) (default: None)" not in text  # a default is said once


def test_eval_without_adapter_scores_the_base_model_and_loss_only_skips_generation(
    tiny_dir, tmp_path, recorded, capsys, monkeypatch
):
    generated = []
    real = qpeft.evaluate.generate_answers
    monkeypatch.setattr(
        qpeft.evaluate, "generate_answers", lambda *a, **k: generated.append(len(a[2])) or real(*a, **k)
    )
    flags = ["--model", tiny_dir, "--data", "arithmetic:1", "--examples", "4", "--max-length", "64"]
    assert main(["eval", *flags]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["adapter"] is None and result["model"] == tiny_dir and result["examples"] == 4
    assert result["eval_loss"] > 0 and "accuracy" in result and generated == [4]
    assert f"qpeft eval: base model {tiny_dir} (no adapter): 4 held-out examples: loss, accuracy" in captured.err
    assert "warning" not in captured.err  # no run, so no training split to warn about
    # the examples a default run with these flags holds out (the zero-shot baseline of that run)
    config = TrainConfig(data="arithmetic:1")
    expected = qpeft.data.run_split(config.data, config.seed, config.val_fraction, config.max_examples)[1][:4]
    assert _keys(recorded["eval"][-1]) == _keys(expected)

    assert main(["eval", *flags, "--loss-only"]) == 0
    captured = capsys.readouterr()
    loss_only = json.loads(captured.out)
    assert loss_only["eval_loss"] == pytest.approx(result["eval_loss"]) and "accuracy" not in loss_only
    assert generated == [4]  # no answer generated
    assert "4 held-out examples: loss only" in captured.err
    assert main(["eval", *flags, "--loss-only", "--samples", str(tmp_path / "s.jsonl")]) == 2
    assert "--samples writes generated answers, which --loss-only skips" in capsys.readouterr().err
    assert main(["eval", *flags, "--emulate", "wukong72"]) == 2
    assert "pass --adapter" in capsys.readouterr().err
