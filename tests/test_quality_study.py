"""The quality study's bookkeeping (benchmarks/quality.py): finished cells stay valid in any
checkout and are never run again; cells made with other settings are refused."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture
def quality(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("quality_study", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quality_study", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs")
    return module


def _finished(quality, cell, settings):
    target = quality.RESULTS / cell.name / "cell.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({"cell": dataclasses.asdict(cell), "settings": settings, "final_train_loss": 1.5}))


def test_a_cell_made_in_another_checkout_is_reused(quality, monkeypatch):
    cell = quality.Cell("cpsycound", "lora-r8", 0, 8e-3, 40, "main")
    settings = json.loads(json.dumps(quality.cell_settings(cell)))
    settings["dataset"]["data"] = "/somewhere/else/shared/data/cpsycound/Data"  # where that checkout lived
    _finished(quality, cell, settings)
    monkeypatch.setattr("qpeft.train.train", lambda config: pytest.fail("a finished cell was trained again"))
    assert quality.run_cell(cell)["final_train_loss"] == 1.5
    assert quality.cell_settings(cell)["dataset"]["data"] == "../shared/data/cpsycound/Data"


def test_a_cell_made_with_other_settings_is_refused(quality):
    cell = quality.Cell("cpsycound", "lora-r8", 0, 8e-3, 40, "main")
    settings = json.loads(json.dumps(quality.cell_settings(cell)))
    settings["dataset"]["max_length"] = 512
    _finished(quality, cell, settings)
    with pytest.raises(ValueError, match="made with other settings"):
        quality.run_cell(cell)
