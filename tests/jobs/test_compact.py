"""Compacting a run's result cache (`qpeft jobs RUN_DIR --compact-results N`): the last steps'
jobs stay served from the cache, earlier ones are gone (only once the run has finished: a rerun
of an unfinished one replays its steps), a live run refuses it, and a crash at any point of the
compaction or of the recovery leaves a whole cache."""

import errno
import gc
import json
import logging
import os
import pathlib
import shutil
import threading
import warnings
import weakref

import numpy as np
import pytest
from open_files import open_files
from standins import ScriptedProvider

from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine, runlock
from qpeft.jobs import cache as cache_module
from qpeft.jobs.cache import CacheInUse, ResultCache, compact, exclusive_lock
from qpeft.jobs.ledger import Ledger, read_ledger
from qpeft.jobs.summary import recent_steps
from qpeft.quantum.circuit import Circuit, Weight

FAST = dict(poll_interval=0.001, max_poll_interval=0.004, progress=False)
RY = Circuit(1).add("RY", [0], Weight(0))
NO_FAULTS = dict(transient=0, throttle=0, hang=0, slow=0, failed=0, lost=0)
STEPS = {  # scope -> angles; train-1 runs two per-module scopes, as diff_method="hybrid" does
    "train-0": [(0.1, 0.2, 0.3)],
    "train-1": [(0.4, 0.5), (0.6,)],
    "train-2": [(0.7, 0.8, 0.9)],
}

#: what a run's jobs directory holds (the engine lock, the ledger, the result cache and its lock)
RUN_FILES = ["engine.lock", "ledger.jsonl", "results", "results.lock"]


def _bound(angles):
    return [BoundCircuit(RY, (t,)) for t in angles]


def _run_steps(run_dir, finished=True, before=()):
    """Runs every step (after the scopes in ``before``) on a fresh engine, and marks the run
    finished as training does (results.json); returns each scope's results and the provider."""
    provider = ScriptedProvider(max_circuits=2, **NO_FAULTS)
    engine = JobEngine(provider, run_dir, **FAST)
    results = {}
    for scope in before:
        results[scope] = np.stack(engine.run(_bound((0.05, 0.15)), 100, scope=scope))
    for step, modules in STEPS.items():
        for m, angles in enumerate(modules):
            scope = f"{step}/m{m}" if len(modules) > 1 else step
            results[scope] = np.stack(engine.run(_bound(angles), 100, scope=scope))
    del engine
    gc.collect()  # the engine's cache lets go of its lock
    (pathlib.Path(run_dir) / "results.json").write_text(json.dumps({"finished": finished}))
    return results, provider


def _rerun(run_dir, scope):
    """Jobs submitted to run ``scope`` again (its results compared with the first run's)."""
    submitted = _submits(run_dir)
    engine = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), run_dir, **FAST)
    angles = STEPS[scope.split("/")[0]][int(scope[-1]) if "/" in scope else 0]
    out = np.stack(engine.run(_bound(angles), 100, scope=scope))
    del engine
    gc.collect()
    return _submits(run_dir) - submitted, out


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
    exit_codes = []  # (tried in a thread: a compaction that waited for the lock would hang here)
    thread = threading.Thread(
        target=lambda: exit_codes.append(main(["jobs", str(tmp_path), "--compact-results", "1"])), daemon=True
    )
    thread.start()
    thread.join(timeout=30)
    del engine
    gc.collect()
    thread.join(timeout=30)
    assert exit_codes == [2], "compaction waited for the live run instead of refusing at once"
    assert "open in a running training" in capsys.readouterr().err
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
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == RUN_FILES
    assert sorted(p.name for p in (tmp_path / "jobs" / "results").iterdir()) == ["index.jsonl", "results.f64"]
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
    # a key submitted again in a later step (a retry; with reuse_results, any step) is that step's too
    steps, keep = recent_steps([*records, {"event": "submitted", "key": "b", "scope": "train-3"}], 1)
    assert steps == ["train-3"] and keep("b") and not keep("a") and not keep("c")
    # a record without a scope (e.g. `--resolve` before it kept one) is no step and drops nothing
    steps, keep = recent_steps([*records, {"event": "submitted", "key": "b", "job_id": "x"}], 1)
    assert steps == ["train-0"] and keep("a") and not keep("b")
    assert recent_steps(records, 1, also=lambda step: step == "train-1")[0] == ["train-0", "train-1"]
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


def test_a_hand_resolved_submission_stays_in_its_step(tmp_path, capsys):
    """`qpeft jobs --resolve` wrote its record without the scope: that record became the newest
    "step" (""), and compaction to the last step dropped the real last step's jobs."""
    results, _ = _run_steps(tmp_path)
    path = tmp_path / "jobs" / "ledger.jsonl"
    first = next(r for r in read_ledger(path) if r["event"] == "submitted" and r["scope"] == "train-2")
    fields = {k: first[k] for k in ("key", "provider", "backend", "circuits", "shots", "attempt")}
    Ledger(path).append("unknown", job_id=None, tag="T1", scope="train-2", **fields)  # as the engine writes it
    assert main(["jobs", str(tmp_path), "--resolve", "T1", "--job-id", "J1"]) == 0
    assert read_ledger(path)[-1]["scope"] == "train-2"  # (totals' retries count per scope and key too)
    assert main(["jobs", str(tmp_path), "--compact-results", "1"]) == 0
    assert "[train-2]" in capsys.readouterr().out
    submitted, out = _rerun(tmp_path, "train-2")
    assert submitted == 0
    np.testing.assert_array_equal(out, results["train-2"])


def test_an_unfinished_run_keeps_every_training_step(tmp_path, capsys):
    """A run that has not finished (a failed job: exit 3, a kill) is continued by rerunning it,
    which replays its steps from the cache (from step 0, or from the newest checkpoint with
    --resume): compaction keeps them, and drops only what is neither recent nor training."""
    results, _ = _run_steps(tmp_path, finished=False, before=["eval-adapter"])
    assert main(["jobs", str(tmp_path), "--compact-results", "1"]) == 0
    out = capsys.readouterr().out
    assert "from the last 1 step(s) [train-2] and 2 older step(s) [train-0, train-1] of the unfinished run" in out
    assert "kept the results of 6 jobs" in out and "removed 1 " in out
    for scope in ("train-0", "train-1/m0", "train-1/m1"):
        submitted, got = _rerun(tmp_path, scope)
        assert submitted == 0
        np.testing.assert_array_equal(got, results[scope])


def _crash_at(monkeypatch, target, fails_on, exc=KeyboardInterrupt):
    """Patch ``target`` (an (object, name) pair) to raise ``exc`` on the call whose first argument
    ``fails_on`` accepts (the process dies there); returns the undo."""
    obj, name = target
    real = getattr(obj, name)

    def patched(first, *args, **kwargs):
        if fails_on(first):
            raise exc
        return real(first, *args, **kwargs)

    monkeypatch.setattr(obj, name, patched)


def _interrupted_swap(tmp_path, monkeypatch):
    """A compaction to the last step that died between its two renames: no <dir>, a complete
    <dir>.new and <dir>.old."""
    results, _ = _run_steps(tmp_path)
    keep = recent_steps(read_ledger(tmp_path / "jobs" / "ledger.jsonl"), 1)[1]
    _crash_at(monkeypatch, (pathlib.Path, "rename"), lambda path: path.name == "results.new")
    with pytest.raises(KeyboardInterrupt):
        compact(tmp_path / "jobs" / "results", keep)
    monkeypatch.undo()
    gc.collect()
    jobs = tmp_path / "jobs"
    assert not (jobs / "results").exists() and (jobs / "results.new" / "complete").exists()
    return results, keep


def test_compacting_again_after_a_crash_between_the_renames_recovers_first(tmp_path, monkeypatch):
    results, keep = _interrupted_swap(tmp_path, monkeypatch)
    assert compact(tmp_path / "jobs" / "results", keep)["jobs_dropped"] == 0  # (not "no result cache")
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == RUN_FILES
    assert _rerun(tmp_path, "train-2")[0] == 0


def test_two_processes_recovering_at_once(tmp_path, monkeypatch):
    """Both hold the shared lock: the other one swaps the new copy in while this one is between
    its checks; this one must not fail (it renamed .old onto the swapped-in copy: ENOTEMPTY)."""
    results, _ = _interrupted_swap(tmp_path, monkeypatch)
    directory = tmp_path / "jobs" / "results"
    real_exists, real_rename, done = pathlib.Path.exists, pathlib.Path.rename, []

    def exists(self, *args, **kwargs):
        answer = real_exists(self, *args, **kwargs)
        if self == directory and not answer and not done:  # the other process's rename lands now
            done.append(real_rename(directory.with_name("results.new"), directory))
        return answer

    monkeypatch.setattr(pathlib.Path, "exists", exists)
    ResultCache(directory)
    monkeypatch.undo()
    assert done and sorted(p.name for p in (tmp_path / "jobs").iterdir()) == RUN_FILES
    submitted, out = _rerun(tmp_path, "train-2")
    assert submitted == 0
    np.testing.assert_array_equal(out, results["train-2"])


def test_a_recovery_that_fails_raises_and_keeps_both_copies(tmp_path, monkeypatch):
    _interrupted_swap(tmp_path, monkeypatch)
    jobs = tmp_path / "jobs"
    _crash_at(monkeypatch, (pathlib.Path, "rename"), lambda path: True, PermissionError(errno.EACCES, "denied"))
    with pytest.raises(PermissionError):
        ResultCache(jobs / "results")
    monkeypatch.undo()
    gc.collect()
    assert (jobs / "results.new" / "complete").exists() and (jobs / "results.old" / "index.jsonl").exists()
    assert not (jobs / "results").exists()  # (no empty cache made in its place)
    assert _rerun(tmp_path, "train-2")[0] == 0  # the next open recovers


def test_an_incomplete_copy_is_never_swapped_in(tmp_path):
    """<dir> missing with <dir>.old and a <dir>.new never marked complete: the old cache returns."""
    _run_steps(tmp_path)
    jobs = tmp_path / "jobs"
    (jobs / "results").rename(jobs / "results.old")
    (jobs / "results.new").mkdir()
    (jobs / "results.new" / "index.jsonl").write_text("")
    (jobs / "results.new" / "results.f64").write_bytes(b"")
    assert _rerun(tmp_path, "train-0")[0] == 0
    assert sorted(p.name for p in jobs.iterdir()) == RUN_FILES


def test_an_interrupted_removal_of_the_old_copy(tmp_path, monkeypatch):
    """Killed while removing <dir>.old; compacting again (no engine opened in between) finishes it."""
    _run_steps(tmp_path)
    directory = tmp_path / "jobs" / "results"
    keep = recent_steps(read_ledger(tmp_path / "jobs" / "ledger.jsonl"), 1)[1]
    old = tmp_path / "jobs" / "results.old"
    _crash_at(monkeypatch, (cache_module.shutil, "rmtree"), lambda path: pathlib.Path(path) == old and old.exists())
    with pytest.raises(KeyboardInterrupt):
        compact(directory, keep)
    monkeypatch.undo()
    gc.collect()
    assert (tmp_path / "jobs" / "results.old").exists()
    assert compact(directory, keep)["jobs_dropped"] == 0
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == RUN_FILES


def test_a_results_file_shorter_than_its_index(tmp_path, capsys):
    """(a power loss kept an index line but not all of its data): that job is dropped and named,
    the others kept; test_refetch.py shows a run that needs it fetching it again."""
    _run_steps(tmp_path)
    data = tmp_path / "jobs" / "results" / "results.f64"
    data.write_bytes(data.read_bytes()[:-8])
    assert main(["jobs", str(tmp_path), "--compact-results", "3"]) == 0
    out = capsys.readouterr().out
    assert "kept the results of 5 jobs" in out and "1 of the jobs to keep had damaged results" in out
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == RUN_FILES


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fsynced files through /proc")
def test_the_copy_is_durable_and_complete_before_the_swap(tmp_path, monkeypatch):
    """The order a power loss needs: data and index fsynced, then marked complete, the marker's
    directory fsynced, then the renames, their directory fsynced, and only then .old removed."""
    _run_steps(tmp_path)
    jobs = tmp_path / "jobs"
    keep = recent_steps(read_ledger(jobs / "ledger.jsonl"), 1)[1]
    events = []
    real_fsync, real_touch, real_rename, real_rmtree = os.fsync, pathlib.Path.touch, pathlib.Path.rename, shutil.rmtree

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def touch(self, *args, **kwargs):
        events.append(("touch", str(self)))
        return real_touch(self, *args, **kwargs)

    def rename(self, target):
        events.append(("rename", str(self)))
        return real_rename(self, target)

    def rmtree(path, *args, **kwargs):
        events.append(("rmtree", str(path)))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(pathlib.Path, "touch", touch)
    monkeypatch.setattr(pathlib.Path, "rename", rename)
    monkeypatch.setattr(cache_module.shutil, "rmtree", rmtree)
    compact(jobs / "results", keep)
    monkeypatch.undo()
    new, old, res = (str(jobs / name) for name in ("results.new", "results.old", "results"))

    def at(event):
        assert event in events, (event, events)
        return events.index(event)

    marked = at(("touch", f"{new}/complete"))
    assert at(("fsync", f"{new}/results.f64")) < marked and at(("fsync", f"{new}/index.jsonl")) < marked
    assert marked < at(("fsync", new)) < at(("rename", res)) < at(("rename", new)) < at(("fsync", str(jobs)))
    assert at(("fsync", str(jobs))) < len(events) - 1 - events[::-1].index(("rmtree", old))  # (the last try)


@pytest.mark.skipif(runlock.fcntl is None, reason="fcntl stands for the platform with locks")
@pytest.mark.parametrize("no_locks", ["no fcntl (Windows)", "ENOLCK"])
def test_without_advisory_locks_caches_work_and_compaction_is_refused(tmp_path, monkeypatch, capsys, no_locks):
    """Without locks compaction cannot tell a live run: a live cache would keep its old offsets
    into the swapped-in file (wrong numbers) or append to the removed one (lost results)."""
    results, _ = _run_steps(tmp_path)
    if no_locks == "ENOLCK":

        def flock(fd, operation):
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

        monkeypatch.setattr(runlock.fcntl, "flock", flock)
    else:
        monkeypatch.setattr(runlock, "fcntl", None)  # (the module that takes qpeft's file locks)
    assert _rerun(tmp_path, "train-2")[0] == 0  # the cache still serves (and keeps) results
    assert main(["jobs", str(tmp_path), "--compact-results", "1"]) == 2
    assert "cannot tell whether a run has it open" in capsys.readouterr().err
    assert _rerun(tmp_path, "train-0")[0] == 0  # nothing was dropped


def test_keeping_more_steps_than_the_run_has_keeps_them_all(tmp_path, capsys):
    """(found in review: N larger than the number of steps sliced from the end, ``order[-2:]``,
    and dropped the run's first step)."""
    _run_steps(tmp_path)
    records = read_ledger(tmp_path / "jobs" / "ledger.jsonl")
    for last in (3, 4, 5, 50):
        assert recent_steps(records, last)[0] == ["train-0", "train-1", "train-2"]
    assert main(["jobs", str(tmp_path), "--compact-results", "5"]) == 0
    out = capsys.readouterr().out
    assert "[train-0, train-1, train-2]" in out and "kept the results of 6 jobs" in out and "removed 0 " in out
    for scope in ("train-0", "train-1/m0", "train-2"):
        assert _rerun(tmp_path, scope)[0] == 0


def test_compaction_reports_as_json(tmp_path, capsys):
    _run_steps(tmp_path, finished=False)
    assert main(["jobs", str(tmp_path), "--compact-results", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["last_steps"] == ["train-2"] and report["older_steps_kept"] == ["train-0", "train-1"]
    assert (report["jobs_kept"], report["jobs_dropped"]) == (6, 0) and report["bytes_kept"] > 0


def test_a_closed_cache_locks_again_to_write_and_finds_what_a_compaction_moved(tmp_path):
    directory = tmp_path / "results"
    cache = ResultCache(directory)
    for key, p in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
        cache.put_job(key, [np.array([p, 1 - p])])
    cache.close()
    compact(directory, keep=lambda key: key == "c")  # (c moves to the start of the data file)
    cache.put_job("d", [np.array([0.4, 0.6])])  # the closed cache writes again...
    with pytest.raises(CacheInUse):
        compact(directory, keep=lambda key: True)  # ...holding the lock again while it is open
    np.testing.assert_array_equal(cache.get_job("c", 1)[0], [0.3, 0.7])  # read where the compaction put it
    assert cache.get_job("a", 1) is None
    cache.close()
    fresh = ResultCache(directory)
    assert sorted(fresh._where) == ["c", "d"]
    np.testing.assert_array_equal(fresh.get_job("d", 1)[0], [0.4, 0.6])
    fresh.close()


def test_closing_and_writing_again_does_not_pile_up_open_files_or_finalizers(tmp_path):
    cache = ResultCache(tmp_path / "results")
    cache.put_job("k0", [np.array([0.5, 0.5])])
    cache.close()
    finalizers = len(weakref.finalize._registry)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for i in range(1, 6):
            cache.put_job(f"k{i}", [np.array([0.5, 0.5])])
            cache.close()
        gc.collect()
    assert len(weakref.finalize._registry) == finalizers  # one finalizer per opening, gone at close
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]  # closed by close(), not dropped
    assert not any(str(tmp_path) in name for name in open_files())


def _three_jobs(directory):
    cache = ResultCache(directory)
    for key, p in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
        cache.put_job(key, [np.array([p, 1 - p])])
    cache.close()


def test_a_closed_cache_opened_on_an_earlier_index_forgets_what_a_compaction_dropped(tmp_path, caplog):
    """(found in review: a reopen must read the compacted index from its start, whatever this
    cache had read of the old one, and forget the old one's entries)"""
    directory = tmp_path / "results"
    _three_jobs(directory)
    cache = ResultCache(directory)  # (reads the three lines an earlier cache wrote)
    cache.close()
    compact(directory, keep=lambda key: key == "c")
    with caplog.at_level(logging.WARNING, logger=cache_module.logger.name):
        cache.put_job("d", [np.array([0.4, 0.6])])
        assert cache.get_job("a", 1) is None and cache.get_job("b", 1) is None
        np.testing.assert_array_equal(cache.get_job("c", 1)[0], [0.3, 0.7])
        np.testing.assert_array_equal(cache.get_job("d", 1)[0], [0.4, 0.6])
    assert caplog.text == ""  # a and b are plain misses, not entries read from where c lies now
    cache.close()


def test_a_closed_cache_finishes_an_interrupted_compaction_before_writing_again(tmp_path, monkeypatch):
    """(found in review: a reopen that skipped the recovery would write into a new empty cache,
    and the next opening would then remove the compacted copy with job c in it)"""
    directory = tmp_path / "results"
    _three_jobs(directory)
    cache = ResultCache(directory)
    cache.close()
    _crash_at(monkeypatch, (pathlib.Path, "rename"), lambda path: path.name == "results.new")
    with pytest.raises(KeyboardInterrupt):
        compact(directory, keep=lambda key: key == "c")  # dies between its two renames
    monkeypatch.undo()
    gc.collect()  # (the lock file the interrupted compaction held)
    cache.put_job("d", [np.array([0.4, 0.6])])
    cache.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results", "results.lock"]
    fresh = ResultCache(directory)
    assert fresh.get_job("a", 1) is None
    np.testing.assert_array_equal(fresh.get_job("c", 1)[0], [0.3, 0.7])
    np.testing.assert_array_equal(fresh.get_job("d", 1)[0], [0.4, 0.6])
    fresh.close()


def test_a_closed_cache_forgets_its_index_until_it_reads_it_again(tmp_path, caplog):
    """Once the lock is gone a compaction may move every entry: a lookup on a closed cache misses
    (no read from an old offset) until refresh() reads the index again from its start."""
    directory = tmp_path / "results"
    _three_jobs(directory)
    cache = ResultCache(directory)
    cache.close()
    compact(directory, keep=lambda key: key == "c")
    with caplog.at_level(logging.WARNING, logger=cache_module.logger.name):
        assert cache.get_job("c", 1) is None  # a plain miss while closed...
        cache.refresh()
        np.testing.assert_array_equal(cache.get_job("c", 1)[0], [0.3, 0.7])  # ...found where it lies now
        assert cache.get_job("a", 1) is None
    assert caplog.text == ""  # no "damaged" entry read from where c used to lie


def test_a_reopen_that_fails_lets_go_of_the_lock_and_the_next_write_opens_again(tmp_path, monkeypatch):
    directory = tmp_path / "results"
    _three_jobs(directory)
    cache = ResultCache(directory)
    cache.close()

    def fails(path):
        raise PermissionError(errno.EACCES, "denied")

    monkeypatch.setattr(cache_module, "_recover", fails)
    with pytest.raises(PermissionError):
        cache.put_job("d", [np.array([0.4, 0.6])])
    exclusive_lock(directory).close()  # the lock was not kept by the failed reopen
    monkeypatch.undo()
    cache.put_job("d", [np.array([0.4, 0.6])])
    with pytest.raises(CacheInUse):
        exclusive_lock(directory)  # opened (and locked) this time
    np.testing.assert_array_equal(cache.get_job("a", 1)[0], [0.1, 0.9])
    cache.close()
