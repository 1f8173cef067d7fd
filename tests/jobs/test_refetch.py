"""A finished job whose results the cache no longer has (its step compacted away, or its data
damaged by a power loss) is fetched again from the provider by its job id, not paid for again;
only where the provider no longer has it is it submitted again. Damaged data is never served."""

import gc
import json
import shutil

import numpy as np
import pytest
from standins import ScriptedProvider

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.cache import ResultCache, compact
from qpeft.jobs.ledger import read_ledger, totals
from qpeft.quantum.circuit import Circuit, Weight

FAST = dict(poll_interval=0.001, max_poll_interval=0.004, progress=False)
RY = Circuit(1).add("RY", [0], Weight(0))
NO_FAULTS = dict(transient=0, throttle=0, hang=0, slow=0, failed=0, lost=0)
ANGLES = {"train-0": (0.1, 0.2, 0.3), "train-1": (0.4, 0.5, 0.6)}  # 2 jobs each (2 circuits per job)


def _expected(angles):
    t = np.asarray(angles)
    return np.stack([np.cos(t / 2) ** 2, np.sin(t / 2) ** 2], axis=1)  # RY|0>, closed form


def _run(run_dir, provider, scope, **options):
    engine = JobEngine(provider, run_dir, **{**FAST, **options})
    out = np.stack(engine.run([BoundCircuit(RY, (t,)) for t in ANGLES[scope]], None, scope=scope))
    del engine
    gc.collect()  # the engine's cache lets go of its lock
    return out


def _events(run_dir, event):
    return [r for r in read_ledger(run_dir / "jobs" / "ledger.jsonl") if r["event"] == event]


def _finished_run(run_dir):
    provider = ScriptedProvider(max_circuits=2, **NO_FAULTS)
    for scope in ANGLES:
        _run(run_dir, provider, scope)
    (run_dir / "results.json").write_text(json.dumps({"finished": True}))
    return provider


def test_a_compacted_step_is_fetched_again_not_paid_again(tmp_path):
    provider = _finished_run(tmp_path)  # (ScriptedProvider asserts if a done job's key is submitted again)
    ledger = read_ledger(tmp_path / "jobs" / "ledger.jsonl")
    compact(tmp_path / "jobs" / "results", lambda key: key not in {r["key"] for r in ledger if r["scope"] == "train-0"})
    submitted = len(_events(tmp_path, "submitted"))

    np.testing.assert_allclose(_run(tmp_path, provider, "train-0"), _expected(ANGLES["train-0"]), atol=1e-6)
    assert len(_events(tmp_path, "submitted")) == submitted
    refetched = _events(tmp_path, "refetched")
    assert len(refetched) == 2 and {r["scope"] for r in refetched} == {"train-0"}
    assert {r["job_id"] for r in refetched} == {r["job_id"] for r in ledger if r["scope"] == "train-0"}
    assert totals(read_ledger(tmp_path / "jobs" / "ledger.jsonl"))["refetched"] == 2

    # fetched once: now cached again, served without asking the provider
    calls = dict(provider.calls)
    _run(tmp_path, provider, "train-0")
    assert provider.calls == calls and len(_events(tmp_path, "refetched")) == 2


def test_a_job_the_provider_no_longer_has_is_submitted_again(tmp_path, caplog):
    """(local jobs end with their process): submitted again, with a fresh budget of attempts:
    max_attempts=1 and one attempt already made would otherwise give up at once."""
    _finished_run(tmp_path)
    shutil.rmtree(tmp_path / "jobs" / "results")
    fresh = ScriptedProvider(max_circuits=2, **NO_FAULTS)
    got = _run(tmp_path, fresh, "train-1", max_attempts=1)
    np.testing.assert_allclose(got, _expected(ANGLES["train-1"]), atol=1e-6)
    again = [r for r in _events(tmp_path, "submitted") if r["scope"] == "train-1"]
    assert [r["attempt"] for r in again] == [1, 1, 2, 2] and not _events(tmp_path, "refetched")
    assert "gone from the cache and the provider" in caplog.text


@pytest.mark.parametrize("damage", ["flipped", "cut"])
def test_damaged_data_is_never_served(tmp_path, caplog, damage):
    """A bit flipped on disk fails the checksum; data cut short by a power loss (the index line
    reached the disk, the data did not), then overwritten by later appends, is full length but
    wrong: the checksum catches that too. Both are fetched again."""
    provider = _finished_run(tmp_path)
    data = tmp_path / "jobs" / "results" / "results.f64"
    index = [json.loads(line) for line in (tmp_path / "jobs" / "results" / "index.jsonl").read_text().splitlines()]
    last = index[-1]  # train-1's second job (one circuit: 2 offsets + 2 probabilities)
    raw = bytearray(data.read_bytes())
    if damage == "flipped":
        raw[last["offset"] + last["bytes"] - 3] ^= 0x10
        data.write_bytes(bytes(raw))
    else:
        data.write_bytes(bytes(raw[: last["offset"] + 8]))
        cache = ResultCache(tmp_path / "jobs" / "results")
        cache.put_job("another job", [np.full(2, 0.5), np.full(2, 0.5)])  # fills the cut bytes back
        del cache
        gc.collect()
        assert data.stat().st_size >= last["offset"] + last["bytes"]

    np.testing.assert_allclose(_run(tmp_path, provider, "train-1"), _expected(ANGLES["train-1"]), atol=1e-6)
    assert len(_events(tmp_path, "refetched")) == 1 and "fetching them again" in caplog.text


def test_compaction_drops_damaged_entries_and_says_so(tmp_path):
    provider = _finished_run(tmp_path)
    data = tmp_path / "jobs" / "results" / "results.f64"
    data.write_bytes(data.read_bytes()[:-8])  # the last job's data cut short
    summary = compact(tmp_path / "jobs" / "results", lambda key: True)
    assert (summary["jobs_kept"], summary["jobs_damaged"], summary["jobs_dropped"]) == (3, 1, 0)
    for scope in ANGLES:  # the damaged job comes back from the provider; nothing is submitted
        np.testing.assert_allclose(_run(tmp_path, provider, scope), _expected(ANGLES[scope]), atol=1e-6)
    assert len(_events(tmp_path, "refetched")) == 1 and len(_events(tmp_path, "submitted")) == 4
    assert compact(tmp_path / "jobs" / "results", lambda key: True)["jobs_damaged"] == 0


def test_index_lines_without_a_checksum_are_still_read(tmp_path):
    """(caches written before checksums were kept)"""
    provider = _finished_run(tmp_path)
    path = tmp_path / "jobs" / "results" / "index.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "crc"}) + "\n" for r in lines))
    calls = dict(provider.calls)
    for scope in ANGLES:
        np.testing.assert_allclose(_run(tmp_path, provider, scope), _expected(ANGLES[scope]), atol=1e-6)
    assert provider.calls == calls
    assert compact(tmp_path / "jobs" / "results", lambda key: True)["jobs_kept"] == 4
