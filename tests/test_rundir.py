"""Where a training call starts in a run directory (qpeft.rundir), on directories laid out by
hand as a run leaves them: step 0, continue from the newest checkpoint, reuse a finished run,
or refuse a run of other settings; --overwrite deletes the earlier run; metrics.jsonl keeps one
history."""

import json

import pytest

from qpeft.rundir import ABANDONED_FILE, RunStart, prepare, start_point

SETTINGS = {"model": "tiny", "data": "arithmetic:1", "steps": 6, "lr": 0.002, "resume": False, "progress": True}


def _run(out, steps_logged=(1, 2, 3), checkpoints=(2,), settings=SETTINGS, finished=False):
    """A run directory as an interrupted (or finished) run leaves it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(settings))
    for step in checkpoints:
        (out / f"checkpoint-{step}").mkdir()
        (out / f"checkpoint-{step}" / "train_config.json").write_text(json.dumps(settings))
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps_logged]
    (out / "metrics.jsonl").write_text("".join(lines))
    if finished:
        (out / "results.json").write_text(json.dumps({"finished": True, "config": settings, "global_step": 6}))
    return out


def test_a_new_or_empty_directory_starts_at_step_0(tmp_path):
    assert start_point(tmp_path / "new", SETTINGS) == RunStart()
    (tmp_path / "empty").mkdir()
    assert start_point(tmp_path / "empty", SETTINGS).step == 0


def test_the_same_settings_continue_from_the_newest_checkpoint(tmp_path):
    out = _run(tmp_path / "run", checkpoints=(2, 10, 4))
    begin = start_point(out, {**SETTINGS, "progress": False})  # progress is no setting of the run
    assert begin.checkpoint == out / "checkpoint-10" and begin.step == 10 and not begin.overwrite


def test_a_finished_run_of_the_same_settings_is_reused(tmp_path):
    out = _run(tmp_path / "run", checkpoints=(6,), finished=True)
    assert start_point(out, SETTINGS).finished["global_step"] == 6


def test_other_settings_are_refused_in_one_line_naming_resume_and_overwrite(tmp_path):
    out = _run(tmp_path / "run")
    with pytest.raises(ValueError) as err:
        start_point(out, {**SETTINGS, "steps": 8, "lr": 0.01})
    message = str(err.value)
    assert "\n" not in message and "--resume" in message and "--overwrite" in message
    assert "checkpoint-2" in message and "lr 0.002 -> 0.01" in message and "steps 6 -> 8" in message
    # files of a run without recorded settings are refused too
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="settings that are not recorded"):
        start_point(stray, SETTINGS)


def test_resume_continues_with_other_settings_and_needs_a_checkpoint(tmp_path):
    out = _run(tmp_path / "run")
    assert start_point(out, {**SETTINGS, "steps": 8}, resume=True).checkpoint == out / "checkpoint-2"
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint-\\* directory"):
        start_point(tmp_path / "new", SETTINGS, resume=True)
    with pytest.raises(ValueError, match="choose one"):
        start_point(out, SETTINGS, resume=True, overwrite=True)


def test_overwrite_deletes_the_earlier_run_but_not_its_job_ledger(tmp_path):
    out = _run(tmp_path / "run", checkpoints=(2, 4), finished=True)
    (out / "adapter").mkdir()
    (out / "jobs").mkdir()
    (out / "jobs" / "ledger.jsonl").write_text("{}\n")
    begin = start_point(out, {**SETTINGS, "steps": 9}, overwrite=True)
    assert begin.overwrite and begin.step == 0
    prepare(out, begin)
    assert sorted(p.name for p in out.iterdir()) == ["jobs"]
    assert (out / "jobs" / "ledger.jsonl").read_text() == "{}\n"


def test_metrics_past_the_checkpoint_move_aside_so_one_history_remains(tmp_path):
    # killed at step 5 after the checkpoint of step 2 (no stop handler ran): steps 3-5 run again
    out = _run(tmp_path / "run", steps_logged=(1, 2, 3, 4, 5), checkpoints=(2,))
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a record the kill cut short
    begin = start_point(out, SETTINGS)
    prepare(out, begin)
    kept = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kept == [1, 2]
    moved = (out / ABANDONED_FILE).read_text().splitlines()
    assert [json.loads(line)["step"] for line in moved[:3]] == [3, 4, 5] and moved[3] == '{"step": 6, "lo'
    prepare(out, begin)  # again: nothing left to move
    assert len((out / ABANDONED_FILE).read_text().splitlines()) == 4
