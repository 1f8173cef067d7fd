"""A finished job whose results the cache no longer has (its step compacted away, or its data
damaged by a power loss) is fetched again from the provider by its job id, not paid for again;
only where the provider no longer has it is it submitted again. Damaged data is never served."""

import gc
import json
import logging
import shutil

import numpy as np
import pytest
from standins import ScriptedProvider

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.base import JobFailedError, JobLostError, TransientError
from qpeft.jobs.cache import ResultCache, compact
from qpeft.jobs.ledger import Ledger, read_ledger
from qpeft.jobs.summary import totals
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
    assert {r["job_id"] for r in refetched} == {r["job_id"] for r in ledger if r["scope"] == "train-0" and r["job_id"]}
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
    counts = totals(read_ledger(tmp_path / "jobs" / "ledger.jsonl"))
    assert (counts["resubmitted_after_loss"], counts["retries"], len(_events(tmp_path, "gone"))) == (2, 0, 2)

    # a later rerun without the cache fetches the new jobs
    shutil.rmtree(tmp_path / "jobs" / "results")
    status_calls = fresh.calls["status"]
    _run(tmp_path, fresh, "train-1")  # the attempt-2 jobs: fetched again from the provider
    assert len(_events(tmp_path, "gone")) == 2 and len(_events(tmp_path, "refetched")) == 2
    assert fresh.calls["status"] == status_calls + 2


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


def _ledger(run_dir):
    return read_ledger(run_dir / "jobs" / "ledger.jsonl")


def _drop_scope(run_dir, scope):
    keys = {r["key"] for r in _ledger(run_dir) if r.get("scope") == scope}
    compact(run_dir / "jobs" / "results", lambda key: key not in keys)
    return keys


class FlakyStatus(ScriptedProvider):
    """status() of each listed job id answers 503 (TransientError: nothing changed) ``left`` times."""

    def __init__(self, **kw):
        super().__init__(max_circuits=2, **NO_FAULTS, **kw)
        self.flaky, self.left = set(), 0
        self._left = {}

    def status(self, job_id):
        if job_id in self.flaky and self._left.setdefault(job_id, self.left) > 0:  # `left` 503s per job
            self._left[job_id] -= 1
            raise TransientError("503 Service Unavailable")
        return super().status(job_id)


@pytest.mark.parametrize("max_attempts, outage", [(1, 1), (4, 4)])
def test_a_transient_status_error_during_a_refetch_does_not_pay_for_the_job_again(tmp_path, max_attempts, outage):
    """(found in review: any error, even a 503 the provider calls transient, counted as "the
    provider no longer has it", and the job was paid for again): the provider is asked as a
    poll asks, its transient errors retried with backoff, whatever max_attempts is."""
    provider = FlakyStatus()
    for scope in ANGLES:
        _run(tmp_path, provider, scope)
    keys = _drop_scope(tmp_path, "train-0")
    provider.flaky = {r["job_id"] for r in _ledger(tmp_path) if r["event"] == "done" and r["key"] in keys}
    provider.left = outage
    submitted = len(_events(tmp_path, "submitted"))
    # ScriptedProvider asserts (-> ProviderError) if a done job's key is submitted again
    got = _run(tmp_path, provider, "train-0", max_attempts=max_attempts)
    np.testing.assert_allclose(got, _expected(ANGLES["train-0"]), atol=1e-6)
    assert len(_events(tmp_path, "submitted")) == submitted


def test_the_fresh_budget_survives_a_crash_after_the_new_submission(tmp_path):
    """(found in review) The new budget of attempts counts from the lost job's attempt, so a
    rerun that re-attaches gets the same one. Here: max_attempts=2, done at attempt 1; the cache
    and provider lose it; attempt 2 is submitted, then a power loss takes its `done` record (not
    fsynced), the cache and the provider's job: attempt 3 is made, not JobFailedError."""
    _finished_run(tmp_path)
    shutil.rmtree(tmp_path / "jobs" / "results")
    fresh = ScriptedProvider(max_circuits=2, **NO_FAULTS)
    _run(tmp_path, fresh, "train-1", max_attempts=2)  # attempt 2 of each train-1 key, done
    path = tmp_path / "jobs" / "ledger.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # the power loss: the last done/refetched records (not fsynced) and the cache are gone
    keep = [l for l in lines if not (json.loads(l)["event"] == "done" and json.loads(l)["attempt"] == 2)]
    path.write_text("".join(keep))
    shutil.rmtree(tmp_path / "jobs" / "results")
    again = ScriptedProvider(max_circuits=2, **NO_FAULTS)  # knows neither job: attempt 2 is lost
    got = _run(tmp_path, again, "train-1", max_attempts=2)
    np.testing.assert_allclose(got, _expected(ANGLES["train-1"]), atol=1e-6)


def test_a_legacy_entry_cut_short_is_a_miss(tmp_path):
    """(catches dropping the length check in Entry.damage: a line without crc whose data was cut
    short by a power loss would be served as garbage, or raise)"""
    provider = _finished_run(tmp_path)
    index = tmp_path / "jobs" / "results" / "index.jsonl"
    lines = [json.loads(line) for line in index.read_text().splitlines()]
    index.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "crc"}) + "\n" for r in lines))
    data = tmp_path / "jobs" / "results" / "results.f64"
    data.write_bytes(data.read_bytes()[:-8])
    np.testing.assert_allclose(_run(tmp_path, provider, "train-1"), _expected(ANGLES["train-1"]), atol=1e-6)
    assert len(_events(tmp_path, "refetched")) == 1


def test_an_open_resubmission_is_reattached_not_replaced_by_the_old_job(tmp_path):
    """(catches refetching when `live` is not None: the old job's results would be served and
    the paid, open resubmission abandoned, open in the ledger for ever)"""
    provider = _finished_run(tmp_path)
    keys = _drop_scope(tmp_path, "train-0")
    key = next(r["key"] for r in _ledger(tmp_path) if r["key"] in keys and r["circuits"] == 1)
    circuits = [BoundCircuit(RY, (ANGLES["train-0"][2],))]
    provider.created.pop(key)  # (lets the stand-in create a second job for the key)
    new_id = provider.submit(circuits, None, f"{key}.2")
    ledger = Ledger(tmp_path / "jobs" / "ledger.jsonl")
    ledger.append(
        "submitted",
        key=key,
        provider=provider.name,
        backend=provider.backend,
        job_id=new_id,
        circuits=1,
        shots=None,
        attempt=2,
        tag=f"{key}.2",
        scope="train-0",
    )
    del ledger
    gc.collect()
    np.testing.assert_allclose(_run(tmp_path, provider, "train-0"), _expected(ANGLES["train-0"]), atol=1e-6)
    assert [r["job_id"] for r in _events(tmp_path, "done") if r["key"] == key][-1] == new_id
    assert not [r for r in _events(tmp_path, "refetched") if r["key"] == key]


class SecretLost(ScriptedProvider):
    def secrets(self):
        return ["sk-TOPSECRET"]

    def status(self, job_id):
        if job_id not in self.fate:  # (a job of an earlier process)
            raise JobLostError(f"GET /jobs/{job_id}?token=sk-TOPSECRET: 404")
        return super().status(job_id)


def test_the_refetch_warning_holds_no_secret(tmp_path, caplog):
    """(catches dropping provider.redact from the new warning)"""
    _finished_run(tmp_path)
    shutil.rmtree(tmp_path / "jobs" / "results")
    with caplog.at_level(logging.INFO):
        _run(tmp_path, SecretLost(max_circuits=2, **NO_FAULTS), "train-1")
    assert "gone from the cache and the provider" in caplog.text and "sk-TOPSECRET" not in caplog.text
    assert "sk-TOPSECRET" not in (tmp_path / "jobs" / "ledger.jsonl").read_text()


def test_a_job_that_used_up_its_attempts_is_not_paid_for_again_by_every_rerun(tmp_path):
    """(found in review) A key that used up its attempts raises at once on a rerun, with nothing
    submitted, also when it had finished once before its results were lost: the new budget is
    granted once per loss, not once per rerun."""
    _finished_run(tmp_path)
    shutil.rmtree(tmp_path / "jobs" / "results")
    failing = ScriptedProvider(max_circuits=2, **{**NO_FAULTS, "failed": 1.0})  # every job fails transiently
    with pytest.raises(JobFailedError):
        _run(tmp_path, failing, "train-1", max_attempts=2, max_parallel=1)
    submitted, asked = len(_events(tmp_path, "submitted")), failing.calls["status"]
    with pytest.raises(JobFailedError):
        _run(tmp_path, failing, "train-1", max_attempts=2, max_parallel=1)
    assert len(_events(tmp_path, "submitted")) == submitted
    assert failing.calls["status"] == asked  # the ledger says the old job is gone: not asked again


def test_results_are_asked_for_only_after_the_provider_says_done(tmp_path):
    """(catches fetching regardless of the status: Provider.result is called only after status
    said DONE; here the old job reads CANCELLED, so it is submitted again, and result() is
    called for the new jobs only)"""
    provider = _finished_run(tmp_path)
    keys = _drop_scope(tmp_path, "train-0")
    old = {r["job_id"] for r in _ledger(tmp_path) if r["event"] == "done" and r["key"] in keys}
    for job_id in old:
        provider.fate[job_id] = "cancelled"
    asked = []
    result = provider.result
    provider.result = lambda job_id, circuits, shots: (asked.append(job_id), result(job_id, circuits, shots))[1]
    np.testing.assert_allclose(_run(tmp_path, provider, "train-0"), _expected(ANGLES["train-0"]), atol=1e-6)
    assert asked and not set(asked) & old


def test_a_missing_results_file_is_a_miss_not_an_error(tmp_path):
    """(found in review: the index without its data file raised FileNotFoundError on every
    lookup and compaction)"""
    provider = _finished_run(tmp_path)
    (tmp_path / "jobs" / "results" / "results.f64").unlink()
    summary = compact(tmp_path / "jobs" / "results", lambda key: True)
    assert (summary["jobs_kept"], summary["jobs_damaged"]) == (0, 4)
    (tmp_path / "jobs" / "results" / "results.f64").unlink()
    for scope in ANGLES:
        np.testing.assert_allclose(_run(tmp_path, provider, scope), _expected(ANGLES[scope]), atol=1e-6)
    assert len(_events(tmp_path, "refetched")) == 4 and len(_events(tmp_path, "submitted")) == 4
