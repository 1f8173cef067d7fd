"""The tuner (qpeft.tune) on a tiny model: it never trains on or scores a held-out example,
resumes an interrupted search without repeating finished trials, and extends a range whose
best rate sits at its edge; `qpeft compare --tune` runs each method at its own chosen rate."""

import dataclasses
import json
import os
import signal

import pytest
from transformers import TrainerCallback

import qpeft.data.collate as collate
import qpeft.tune
import qpeft.tune.search
import qpeft.tune.split
from qpeft.cli import main
from qpeft.cli.tune import spec_from_args
from qpeft.data import example_key, run_split
from qpeft.testing import tiny_model_dir
from qpeft.train import TrainConfig
from qpeft.tune import TuneSpec, tune

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-tune")))


def _base(tiny_dir, **fields):
    settings = {
        "model": tiny_dir,
        "data": "arithmetic:1",
        "method": "lora",
        "adapter": {"r": 2},
        "steps": 2,
        "batch_size": 2,
        "max_examples": 48,
        "max_length": 64,
        "progress": False,
    }
    return TrainConfig(**{**settings, **fields})


def _spec(**fields):
    return TuneSpec(**{"lrs": [1e-3, 1e-2], "val_examples": 4, "reports": 1, "extend": 0, **fields})


@pytest.fixture
def encoded(monkeypatch):
    """The content of every example the model is given (trained on, scored, or prompted with)."""
    seen = set()
    dataset_init, prompt = collate.EncodedDataset.__init__, collate.encode_prompt

    def spy_dataset(self, tokenizer, examples, max_length):
        seen.update(example_key(e) for e in examples)
        dataset_init(self, tokenizer, examples, max_length)

    def spy_prompt(tokenizer, example):
        seen.add(example_key(example))
        return prompt(tokenizer, example)

    monkeypatch.setattr(collate.EncodedDataset, "__init__", spy_dataset)
    monkeypatch.setattr(collate, "encode_prompt", spy_prompt)
    monkeypatch.setattr("qpeft.evaluate.encode_prompt", spy_prompt)
    return seen


@pytest.mark.parametrize("planted", [False, True], ids=["tuner", "planted-leak"])
def test_the_tuner_never_sees_a_held_out_example(tiny_dir, tmp_path, encoded, monkeypatch, planted):
    base, seeds = _base(tiny_dir), [0, 1]
    held_out = {example_key(e) for s in seeds for e in run_split(base.data, s, base.val_fraction, base.max_examples)[1]}
    if planted:  # a tuner that takes the whole split for its pool: the check below must catch it
        split = run_split

        def leaky(*args):
            train_part, rest = split(*args)
            return train_part + rest, rest

        monkeypatch.setattr(qpeft.tune.split, "run_split", leaky)
    train_part, val = qpeft.tune.tuning_examples(base, seeds, 4, seed=0)
    result = tune(base, _spec(), tmp_path / "search", seeds)
    assert {example_key(e) for e in val} <= encoded  # the spy sees the validation examples
    assert {example_key(e) for e in train_part} <= encoded
    leaked = encoded & held_out
    if planted:
        assert leaked, "the spy did not see the planted leak"
    else:
        assert not leaked, f"{len(leaked)} held-out example(s) reached the tuner"
        assert result["val_examples"] == 4 and all(e.answer is None for e in val)


class SigtermIn(TrainerCallback):
    """Sends this process SIGTERM after step ``k`` of the run in directory ``run`` only."""

    def __init__(self, run, k):
        self.run, self.k = run, k

    def on_step_end(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.run) and state.global_step == self.k:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_search_resumes_without_repeating_finished_trials(tiny_dir, tmp_path, monkeypatch):
    base, spec, out = _base(tiny_dir, steps=3), _spec(lrs=[1e-3, 4e-3, 1.6e-2]), tmp_path / "search"
    stopped = tune(base, spec, out, [0], callbacks=[SigtermIn("trial-001", 1)])
    assert stopped["interrupted"] == out / "trials" / "trial-001"
    assert not (out / "tune.json").exists()

    trained = []
    real_train = qpeft.tune.search.train

    def counting_train(config, callbacks=None, examples=None, samples=8):
        trained.append(config.lr)
        return real_train(config, callbacks, examples=examples, samples=samples)

    monkeypatch.setattr(qpeft.tune.search, "train", counting_train)
    result = tune(base, spec, out, [0])
    # grid order: the middle rate first; it finished before the interrupt and is not run again
    assert trained == [1e-3, 1.6e-2]
    states = {(t["params"]["lr"], t["state"]) for t in result["trials"]}
    assert states >= {(4e-3, "complete"), (1e-3, "interrupted")}
    assert sorted(t["params"]["lr"] for t in result["trials"] if t["state"] != "interrupted") == spec.lrs
    assert json.loads((out / "tune.json").read_text())["chosen"] == result["chosen"]
    assert (out / "trials" / "trial-000" / "samples.jsonl").read_text() == ""  # scored by loss: nothing generated

    trained.clear()
    journal = (out / "optuna.journal").read_bytes()
    assert tune(base, spec, out, [0])["chosen"] == result["chosen"] and trained == []  # finished: nothing runs
    assert (out / "optuna.journal").read_bytes() == journal  # and nothing is written to its journal
    with pytest.raises(ValueError, match="other settings"):
        tune(base, _spec(lrs=[1e-3, 4e-3, 1.6e-2], val_examples=5), out, [0])


def test_a_new_and_a_reopened_search_minimise_with_the_specs_pruner(tiny_dir, tmp_path):
    """The study is created (a new directory) or loaded (a search there) minimising the loss, with
    the pruner the spec asks for: a loaded one does not fall back to Optuna's default pruner."""
    import optuna

    from qpeft.tune.search import Search

    out = tmp_path / "search"
    for prune, pruner in ((False, optuna.pruners.NopPruner), (True, optuna.pruners.MedianPruner)):
        for _ in range(2):  # the first Search creates the study, the others load it
            study = Search(_base(tiny_dir), _spec(prune=prune), out, [0], out / "trials").study
            assert study.direction == optuna.study.StudyDirection.MINIMIZE and isinstance(study.pruner, pruner)


def test_a_search_created_by_another_process_meanwhile_is_loaded(tiny_dir, tmp_path, monkeypatch):
    """Two processes opening one new directory: both find no study; the second one's create fails
    (DuplicatedStudyError) and it loads the study the first one made."""
    import optuna

    from qpeft.tune.search import Search

    out = tmp_path / "search"
    first = Search(_base(tiny_dir), _spec(), out, [0], out / "trials").study
    real_load, calls = optuna.load_study, []

    def not_there_yet(**kwargs):  # the second process looked before the first one created it
        calls.append(kwargs["study_name"])
        if len(calls) == 1:
            raise KeyError(kwargs["study_name"])
        return real_load(**kwargs)

    monkeypatch.setattr(optuna, "load_study", not_there_yet)
    second = Search(_base(tiny_dir), _spec(), out, [0], out / "trials").study
    assert len(calls) == 2 and second._study_id == first._study_id


def test_an_edge_best_rate_extends_the_range(tiny_dir, tmp_path, caplog):
    caplog.set_level("WARNING", logger="qpeft.tune")
    result = tune(_base(tiny_dir), _spec(lrs=[1e-3, 1e-2], extend=1), tmp_path / "search", [0])
    first = {t["params"]["lr"]: t["value"] for t in result["trials"] if t["kind"] == "grid"}
    best = min(first, key=first.get)  # of two values the best is always at an edge
    added = best * 10 if best == 1e-2 else best / 10  # one step of the grid's own spacing beyond it
    assert result["extensions"] == [
        {"edge": "high" if best == 1e-2 else "low", "from": best, "params": {"lr": pytest.approx(added)}}
    ]
    assert [t["params"]["lr"] for t in result["trials"] if t["kind"] == "extension"] == [pytest.approx(added)]
    assert "extending the range" in caplog.text
    tried = sorted(t["params"]["lr"] for t in result["trials"])
    assert result["at_edge"] == (result["chosen"]["lr"] in (tried[0], tried[-1]))  # extension limit 1 reached


def test_an_optuna_search_samples_its_trials_in_the_log_range_once(tiny_dir, tmp_path, monkeypatch):
    spec = _spec(search="optuna", lrs=[1e-4, 1e-1], trials=3)
    result = tune(_base(tiny_dir), spec, tmp_path / "search", [0])
    sampled = [t for t in result["trials"] if t["kind"] == "sampled"]
    assert len(sampled) == 3 and all(1e-4 <= t["params"]["lr"] <= 1e-1 for t in sampled)
    assert len({t["params"]["lr"] for t in sampled}) == 3
    monkeypatch.setattr(qpeft.tune.search, "train", lambda *args, **kwargs: pytest.fail("a finished trial ran again"))
    assert tune(_base(tiny_dir), spec, tmp_path / "search", [0])["chosen"] == result["chosen"]


def test_compare_tunes_each_method_and_reports_the_rates(tiny_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    flags = ["--model", tiny_dir, "--data", "arithmetic:1", "--methods", "lora,qtha", "--seeds", "0"]
    flags += ["--steps", "2", "--batch-size", "2", "--max-examples", "48", "--max-length", "64"]
    flags += ["--eval-examples", "2", "--adapter", '{"r": 2, "bond_dim": 2}', "--no-progress", "--out", str(out)]
    tune_flags = ["--tune", "--tune-lrs", "1e-3,1e-2", "--tune-val-examples", "4", "--tune-reports", "1"]
    assert main(["compare", *flags, *tune_flags, "--tune-extend", "0"]) == 0
    tuned = json.loads((out / "tune.json").read_text())
    report = (out / "report.md").read_text()
    assert "lr tuned per method" in report and "## Learning rates, tuned per method" in report
    for method in ("lora", "qtha"):
        chosen = tuned[method]["chosen"]["lr"]
        run = json.loads((out / f"{method}-seed0" / "results.json").read_text())
        assert run["config"]["lr"] == chosen  # the main run used its method's chosen rate
        assert f"### {method}: lr {chosen:g}" in report
        assert f"| {method} | {chosen:g} |" in report  # the main table's lr column
        trials = [t for t in tuned[method]["trials"] if t["state"] == "complete"]
        assert {t["params"]["lr"] for t in trials} == {1e-3, 1e-2}
        assert (out / "tune" / method / "optuna.journal").is_file()

    shared = tmp_path / "shared"
    flags[flags.index(str(out))] = str(shared)
    assert main(["compare", *flags, "--lr", "5e-3", "--methods", "lora"]) == 0
    assert "lr 0.005 shared by every method" in (shared / "report.md").read_text()
    assert "| lora | 0.005 |" in (shared / "report.md").read_text()


def test_bad_tuning_settings_say_what_to_fix():
    with pytest.raises(ValueError, match="two or more positive learning rates"):
        TuneSpec(lrs=[1e-3])
    with pytest.raises(ValueError, match="cannot search field 'steps'"):
        TuneSpec(fields={"steps": [10, 20]})
    with pytest.raises(ValueError, match="`search` must be one of"):
        TuneSpec(search="random")


def test_the_tune_flags_are_documented(capsys):
    from qpeft.cli import build_parser

    for command in ("tune", "compare"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for field in dataclasses.fields(TuneSpec):
            flag = "--tune-field" if field.name == "fields" else "--tune-" + field.name.replace("_", "-")
            assert flag in text, (command, flag)
            assert field.metadata["help"][:30] in text, (command, field.name)
    spec = spec_from_args(
        build_parser().parse_args(["tune", "--tune-lrs", "1e-4,1e-3", "--tune-field", "adapter.r=2,4"])
    )
    assert spec.lrs == [1e-4, 1e-3] and spec.fields == {"adapter.r": [2, 4]}


def test_a_search_recorded_before_a_config_field_existed_still_resumes():
    """Settings that do not change a run (tracking, the spending cap) are no search settings, and
    a TrainConfig field added after a search was recorded counts at its default."""
    from qpeft.tune.search import _settings, _with_new_fields

    spec = TuneSpec(lrs=[1e-3, 1e-2])
    base = TrainConfig(model="m", data="arithmetic")
    settings = _settings(base, spec, [0], 10, 0)
    tracked = _settings(dataclasses.replace(base, report_to="tensorboard", max_spend={"jobs": 3}), spec, [0], 10, 0)
    assert tracked == settings
    older = json.loads(json.dumps(settings))
    del older["config"]["gradient_checkpointing"]  # as recorded by a qpeft without the field
    assert _with_new_fields(older, settings) == settings
    changed = _settings(dataclasses.replace(base, gradient_checkpointing=True), spec, [0], 10, 0)
    assert _with_new_fields(older, changed) != changed  # set to something else: other settings
