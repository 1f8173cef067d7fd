"""Resume takes the newest checkpoint by step number, not by name: checkpoint-10 is newer than
checkpoint-9 (which sorts after it), both for ``latest_checkpoint`` and for a run that resumes."""

import json

import pytest
from transformers import TrainerCallback

from qpeft.testing import tiny_model_dir
from qpeft.train import TrainConfig, latest_checkpoint, train


@pytest.mark.parametrize(
    "steps,newest",
    [((9, 10), 10), ((2, 9, 10, 100), 100), ((1, 10, 2, 3, 99), 99), ((7,), 7), ((), None)],
    ids=["9-10", "2-9-10-100", "1-10-2-3-99", "one", "none"],
)
def test_latest_checkpoint_is_the_highest_step(tmp_path, steps, newest):
    for step in steps:
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-final").mkdir()  # (not a step: ignored)
    found = latest_checkpoint(tmp_path)
    assert (found.name if found else None) == (f"checkpoint-{newest}" if newest is not None else None)


class FirstStep(TrainerCallback):
    """Records the global step the Trainer starts its first step from."""

    def __init__(self):
        self.start = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.start is None:
            self.start = state.global_step


def test_resume_continues_from_checkpoint_10_not_9(tmp_path_factory):
    tiny = str(tiny_model_dir(tmp_path_factory.mktemp("tiny-resume")))
    out = tmp_path_factory.mktemp("run")
    fields = dict(model=tiny, data="arithmetic:1", method="lora", adapter={"r": 2}, out=str(out), batch_size=2)
    fields.update(max_examples=12, max_length=48, eval_examples=2, save_steps=1, lr=1e-3, progress=False)
    assert train(TrainConfig(**fields, steps=10))["global_step"] == 10
    names = sorted(p.name for p in out.glob("checkpoint-*"))
    assert names[-1] == "checkpoint-9" and "checkpoint-10" in names  # lexical order gets it wrong

    first = FirstStep()
    resumed = train(TrainConfig(**fields, steps=12, resume=True), callbacks=[first])
    assert first.start == 10 and resumed["finished"] and resumed["global_step"] == 12
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, 13))  # no step run twice
