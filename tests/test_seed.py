"""The run's seed reaches adapter initialisation: through the training entry point, two runs with
one seed start from identical adapter weights and two runs with different seeds from different
ones (every tensor a method initialises randomly), for every method; a multi-seed comparison's
spread depends on it."""

import pytest
import torch
from transformers import TrainerCallback

from qpeft.testing import tiny_model_dir
from qpeft.train import METHOD_PRESETS, TrainConfig, prepare, train


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tiny-seed")))


def _config(tiny_dir, out, method, seed, **kw):
    fields = dict(model=tiny_dir, data="arithmetic:1", method=method, out=str(out), seed=seed, batch_size=2)
    fields.update(max_examples=8, max_length=48, eval_examples=2, progress=False)
    return TrainConfig(**{**fields, **kw})


def _initial(tiny_dir, tmp_path, method, seed) -> dict[str, torch.Tensor]:
    model = prepare(_config(tiny_dir, tmp_path / f"{method}-{seed}", method, seed))[0]
    return {name: p.detach().clone() for name, p in model.adapter_state().items()}


def _check(same: dict, again: dict, other: dict) -> None:
    assert same.keys() == again.keys() == other.keys()
    random = [name for name, t in same.items() if t.min() != t.max()]  # (not a constant init: 0, 1)
    assert random, "the method initialises nothing randomly"
    for name in same:
        assert torch.equal(same[name], again[name]), f"{name}: one seed, two initialisations"
    for name in random:
        assert not torch.equal(same[name], other[name]), f"{name}: the same initialisation for seeds 0 and 1"


@pytest.mark.parametrize("method", list(METHOD_PRESETS))
def test_prepare_initialises_adapters_from_the_seed(tiny_dir, tmp_path, method):
    torch.manual_seed(1234)  # what ran before must not matter
    first = _initial(tiny_dir, tmp_path, method, 0)
    torch.manual_seed(99)
    _check(first, _initial(tiny_dir, tmp_path, method, 0), _initial(tiny_dir, tmp_path, method, 1))


class InitialWeights(TrainerCallback):
    """The adapter's weights when training begins (before the first step)."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.weights = {name: p.detach().clone() for name, p in model.adapter_state().items()}


@pytest.mark.parametrize("method", ["lora", "qtha"])
def test_train_starts_from_the_seeds_initialisation(tiny_dir, tmp_path, method):
    starts = []
    for run, seed in enumerate((0, 0, 1)):
        callback = InitialWeights()
        train(_config(tiny_dir, tmp_path / str(run), method, seed, steps=1, save_steps=10), callbacks=[callback])
        starts.append(callback.weights)
    _check(*starts)
