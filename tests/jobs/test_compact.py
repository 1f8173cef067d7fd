"""Compacting a run's result cache (`qpeft jobs RUN_DIR --compact-results N`): the last steps'
jobs stay served from the cache, earlier ones are gone, a live run refuses it, and a crash at
either rename leaves a whole cache."""

import gc
import pathlib

import numpy as np
import pytest
from standins import ScriptedProvider

from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.cache import CacheInUse, ResultCache, compact
from qpeft.jobs.ledger import read_ledger, recent_steps
from qpeft.quantum.circuit import Circuit, Weight

FAST = dict(poll_interval=0.001, max_poll_interval=0.004, progress=False)
RY = Circuit(1).add("RY", [0], Weight(0))
NO_FAULTS = dict(transient=0, throttle=0, hang=0, slow=0, failed=0, lost=0)
STEPS = {  # scope -> angles; train-1 runs two per-module scopes, as diff_method="hybrid" does
    "train-0": [(0.1, 0.2, 0.3)],
    "train-1": [(0.4, 0.5), (0.6,)],
    "train-2": [(0.7, 0.8, 0.9)],
}


def _bound(angles):
    return [BoundCircuit(RY, (t,)) for t in angles]


def _run_steps(run_dir):
    """Runs every step on a fresh engine; returns each scope's results and the provider."""
    provider = ScriptedProvider(max_circuits=2, **NO_FAULTS)
    engine = JobEngine(provider, run_dir, **FAST)
    results = {}
    for step, modules in STEPS.items():
        for m, angles in enumerate(modules):
            scope = f"{step}/m{m}" if len(modules) > 1 else step
            results[scope] = np.stack(engine.run(_bound(angles), 100, scope=scope))
    del engine
    gc.collect()  # the engine's cache lets go of its lock
    return results, provider


def _submits(run_dir):
    return sum(r["event"] == "submitted" for r in read_ledger(run_dir / "jobs" / "ledger.jsonl"))


def test_the_last_steps_stay_cached_and_earlier_ones_are_gone(tmp_path, capsys):
    results, _ = _run_steps(tmp_path)
    data = tmp_path / "jobs" / "results" / "results.f64"
    size, submitted = data.stat().st_size, _submits(tmp_path)
    assert main(["jobs", str(tmp_path), "--compact-results", "2"]) == 0
    out = capsys.readouterr().out
    assert "[train-1, train-2]" in out and "kept the results of 4 jobs" in out and "removed 2" in out
    assert 0 < data.stat().st_size < size
    assert not list(tmp_path.glob("jobs/results.*[!k]"))  # no .new / .old left behind

    # a rerun of the kept steps submits nothing and gets the same numbers; train-0 is run again
    engine = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, **FAST)
    for scope in ("train-1/m0", "train-1/m1", "train-2"):
        angles = STEPS[scope.split("/")[0]][int(scope[-1]) if "/" in scope else 0]
        np.testing.assert_array_equal(np.stack(engine.run(_bound(angles), 100, scope=scope)), results[scope])
    assert _submits(tmp_path) == submitted
    engine.run(_bound(STEPS["train-0"][0]), 100, scope="train-0")
    assert _submits(tmp_path) == submitted + 2  # 3 circuits, 2 per job


def test_a_live_run_refuses_compaction(tmp_path, capsys):
    _run_steps(tmp_path)
    engine = JobEngine(ScriptedProvider(**NO_FAULTS), tmp_path, **FAST)  # a training run still open
    assert main(["jobs", str(tmp_path), "--compact-results", "1"]) == 2
    assert "open in a running training" in capsys.readouterr().err
    del engine
    gc.collect()
    assert main(["jobs", str(tmp_path), "--compact-results", "1"]) == 0


@pytest.mark.parametrize("crash_at_rename", [1, 2])
def test_a_crash_during_the_swap_leaves_a_whole_cache(tmp_path, monkeypatch, crash_at_rename):
    results, _ = _run_steps(tmp_path)
    steps, keep = recent_steps(read_ledger(tmp_path / "jobs" / "ledger.jsonl"), 1)
    assert steps == ["train-2"]
    real_rename, calls = pathlib.Path.rename, []

    def rename(self, target):
        calls.append(self)
        if len(calls) == crash_at_rename:
            raise KeyboardInterrupt  # the process dies here
        return real_rename(self, target)

    monkeypatch.setattr(pathlib.Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        compact(tmp_path / "jobs" / "results", keep)
    monkeypatch.undo()
    gc.collect()  # (the lock file the interrupted compaction held)

    engine = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, **FAST)  # recovers on open
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["ledger.jsonl", "results", "results.lock"]
    submitted = _submits(tmp_path)
    np.testing.assert_array_equal(np.stack(engine.run(_bound(STEPS["train-2"][0]), 100, "train-2")), results["train-2"])
    engine.run(_bound(STEPS["train-0"][0]), 100, scope="train-0")
    # before the first rename the old cache stands (train-0 still cached); after it, the new one
    assert _submits(tmp_path) == submitted + (0 if crash_at_rename == 1 else 2)


def test_recent_steps_group_module_scopes_and_keep_unknown_keys():
    records = [
        {"event": "submitted", "key": "a", "scope": "train-0"},
        {"event": "submitted", "key": "b", "scope": "train-1/m0"},
        {"event": "submitted", "key": "c", "scope": "train-1/m1"},
        {"event": "done", "key": "a", "scope": "train-0"},  # a late record moves train-0 last
        {"event": "note"},  # records without a key do not count
    ]
    steps, keep = recent_steps(records, 1)
    assert steps == ["train-0"] and keep("a") and not keep("b") and keep("never-seen")
    steps, keep = recent_steps(records, 5)
    assert steps == ["train-1", "train-0"] and keep("c")
    assert recent_steps(records, 0)[0] == [] and not recent_steps(records, 0)[1]("a")
    with pytest.raises(ValueError, match="whole number"):
        recent_steps(records, -1)


def test_compaction_needs_a_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="no result cache"):
        compact(tmp_path / "results", lambda key: True)
    cache = ResultCache(tmp_path / "results")
    cache.put_job("k", [np.array([0.5, 0.5])])
    with pytest.raises(CacheInUse):
        compact(tmp_path / "results", lambda key: False)
