"""The job engine under faults: transient rejections, throttling, hung submissions, FAILED
jobs, lost jobs, jobs past their timeout, out-of-order completion; restart and re-attach;
a job that keeps failing; secrets."""

import gc
import math
import signal
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
from standins import ScriptedProvider

from qpeft.jobs import BoundCircuit, JobEngine, JobFailedError, TransientError
from qpeft.jobs.base import SubmissionUnknownError
from qpeft.jobs.ledger import Ledger, read_ledger
from qpeft.jobs.summary import totals
from qpeft.quantum.circuit import Circuit, Weight

FAST = dict(poll_interval=0.001, max_poll_interval=0.004, submit_timeout=0.01, progress=False)
RY = Circuit(1).add("RY", [0], Weight(0))
NO_FAULTS = dict(transient=0, throttle=0, hang=0, slow=0, failed=0, lost=0)


def _circuits(n, seed=0):
    thetas = np.random.default_rng(seed).uniform(0, 2 * math.pi, n)
    return thetas, [BoundCircuit(RY, (float(t),)) for t in thetas]


def _expected(thetas):
    return np.stack([np.cos(thetas / 2) ** 2, np.sin(thetas / 2) ** 2], axis=1)  # RY|0>, closed form


def test_ten_thousand_circuits_under_faults(tmp_path):
    thetas, circuits = _circuits(10_000)
    circuits += circuits[:100]  # duplicates are run once and answered in place
    thetas = np.concatenate([thetas, thetas[:100]])
    provider = ScriptedProvider(seed=1)
    engine = JobEngine(provider, tmp_path, max_parallel=8, job_timeout=0.5, max_attempts=12, **FAST)
    out = engine.run(circuits, None, scope="step-0")

    assert len(out) == len(circuits)  # nothing lost, input order kept:
    np.testing.assert_allclose(np.stack(out), _expected(thetas), atol=1e-6)

    # every fault kind happened
    fates = Counter(provider.fate.values())
    assert provider.rejected > 0.2 * provider.calls["submit"] and provider.hung
    assert fates["failed"] and fates["lost"] and fates["cancelled"] and fates["done"] == 200

    # nothing ran twice: one finished job per job key (ScriptedProvider also refuses any
    # submission of a key while an earlier job of it is live), covering every unique circuit once
    done_keys = Counter(provider.jobs[j]["tag"].split(".")[0] for j, f in provider.fate.items() if f == "done")
    assert set(done_keys.values()) == {1}
    assert sum(provider.jobs[j]["circuits"] for j, f in provider.fate.items() if f == "done") == 10_000

    # the ledger is exact: one `submitted` and one terminal record per job the provider created
    records = read_ledger(tmp_path / "jobs" / "ledger.jsonl")
    submitted = Counter(r["job_id"] for r in records if r["event"] == "submitted")
    assert submitted == Counter({j: 1 for j in provider.fate})
    terminal = {r["job_id"]: r["event"] for r in records if r["event"] in ("done", "failed", "lost", "timeout")}
    fate_to_event = {"done": "done", "failed": "failed", "lost": "lost", "cancelled": "timeout"}
    assert terminal == {j: fate_to_event[f] for j, f in provider.fate.items()}
    circuits_of = {r["job_id"]: r["circuits"] for r in records if r["event"] == "submitted"}
    assert circuits_of == {j: job["circuits"] for j, job in provider.jobs.items()}
    # a submission with no answer is recorded `unknown`, then found by its tag, never resubmitted
    unknown_tags = {r["tag"] for r in records if r["event"] == "unknown"}
    assert {provider.jobs[j]["tag"] for j in provider.hung} <= unknown_tags
    tags = Counter(r["tag"] for r in records if r["event"] in ("submitted", "rejected"))
    assert all(tags[t] == 1 for t in unknown_tags)  # found (or turned out rejected): once
    t = totals(records)
    assert t["jobs"] == len(provider.fate) and t["jobs_done"] == 200 and t["retries"] == len(provider.fate) - 200


def test_restart_reattaches_to_open_jobs(tmp_path):
    thetas, circuits = _circuits(300, seed=2)
    provider = ScriptedProvider(seed=3, transient=0, throttle=0, hang=0, failed=0, lost=0, slow=0)
    provider.local.delay = 1.5  # the QPU is slow: the deadline passes with all jobs open
    first = JobEngine(provider, tmp_path, deadline=0.5, **FAST)
    with pytest.raises(TimeoutError, match="still open in the ledger"):
        first.run(circuits, None, scope="s")
    created = dict(provider.created)
    assert len(created) == 6
    second = JobEngine(provider, tmp_path, **FAST)  # a new process would read the same ledger
    out = second.run(circuits, None, scope="s")
    np.testing.assert_allclose(np.stack(out), _expected(thetas), atol=1e-6)
    assert provider.created == created  # re-attached by id, nothing submitted again
    third = JobEngine(provider, tmp_path, **FAST)
    assert third.run(circuits, None, scope="s")[5].tolist() == out[5].tolist()  # from the result cache
    assert provider.created == created


def test_a_job_that_keeps_failing_raises_and_the_rest_stays_cached(tmp_path):
    thetas, circuits = _circuits(500, seed=4)
    bad = circuits[230].weights
    provider = ScriptedProvider(seed=5, transient=0, throttle=0, hang=0, failed=0, lost=0, slow=0, fatal_weights=bad)
    engine = JobEngine(provider, tmp_path, **FAST)
    with pytest.raises(JobFailedError, match="invalid circuit") as info:
        engine.run(circuits, 100, scope="s")
    failed_job = next(j for j, f in provider.fate.items() if f == "failed")
    assert info.value.job_id == failed_job and info.value.attempts == 1 and failed_job in str(info.value)

    healthy = ScriptedProvider(seed=6, transient=0, throttle=0, hang=0, failed=0, lost=0, slow=0)
    rerun = JobEngine(healthy, tmp_path, **FAST).run(circuits, 100, scope="s")
    assert len(healthy.fate) == 1  # only the failed job runs again; the other 9 come from the cache
    assert np.abs(np.stack(rerun) - _expected(thetas)).max() < 0.25  # 100 shots


def test_transient_failures_are_retried_up_to_max_attempts(tmp_path):
    _, circuits = _circuits(10, seed=7)
    provider = ScriptedProvider(seed=8, transient=0, throttle=0, hang=0, failed=1.0, lost=0, slow=0)
    with pytest.raises(JobFailedError, match="after 3 attempt") as info:
        JobEngine(provider, tmp_path, max_attempts=3, **FAST).run(circuits, None)
    assert len(provider.fate) == 3 and info.value.message == "device calibration error (transient)"


def test_bad_shots_is_an_error():
    engine = JobEngine(ScriptedProvider(), None, **FAST)
    with pytest.raises(ValueError, match="`shots` must be a positive integer or None"):
        engine.run(_circuits(2)[1], 0)


class SlowRejection(ScriptedProvider):
    """Its first submit answers late, and the late answer is a rejection (nothing created)."""

    def __init__(self):
        super().__init__(seed=9, transient=0, throttle=0, hang=0, failed=0, lost=0, slow=0)
        self.first = True

    def submit(self, circuits, shots, tag):
        if self.first:
            self.first = False
            time.sleep(1.0)  # far past the test's submit_timeout, whatever the machine's load
            raise TransientError("503 Service Unavailable (nothing created)")
        return super().submit(circuits, shots, tag)


def test_an_unanswered_submit_is_resolved_not_resubmitted(tmp_path):
    thetas, circuits = _circuits(20, seed=10)
    provider = SlowRejection()
    out = JobEngine(provider, tmp_path, **{**FAST, "submit_timeout": 0.3}).run(circuits, None)  # margin for load
    np.testing.assert_allclose(np.stack(out), _expected(thetas), atol=1e-6)
    events = [(r["event"], r["attempt"]) for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl")]
    # the intent before each call; the unanswered one settled as rejected, never resubmitted blindly
    assert events == [("intent", 1), ("unknown", 1), ("rejected", 1), ("intent", 2), ("submitted", 2), ("done", 2)]


def test_a_corrupt_ledger_is_an_error(tmp_path):
    path = tmp_path / "jobs" / "ledger.jsonl"
    path.parent.mkdir()
    path.write_text('{"event": "submitted"}\nnot json\n{"event": "done"}\n')
    with pytest.raises(ValueError, match="ledger.jsonl:2 is not a JSON ledger record"):
        JobEngine(ScriptedProvider(), tmp_path)
    path.write_text('{"event": "done", "key": "k", "job_id": "j"}\n{"event": "subm')  # torn by a crash
    assert len(read_ledger(path)) == 1
    # a damaged last line that ends with its newline was whole once (it may have been a job): an error too
    path.write_text('{"event": "done", "key": "k", "job_id": "j"}\n{"event": "subm\x00\x00\n')
    with pytest.raises(ValueError, match="ledger.jsonl:2 is not a JSON ledger record.*--repair"):
        JobEngine(ScriptedProvider(), tmp_path)


@pytest.mark.parametrize(
    "bad",
    [b"42", b"[1, 2]", b"null", b'"a string"', b'{"event": "sub\xffmitted"}'],
    ids=["a-number", "a-list", "null", "a-string", "a-byte-damaged"],
)
def test_a_line_that_is_not_a_record_is_an_error_that_names_the_line_and_repair(tmp_path, bad):
    """A line that reads as JSON but is no record (a hand edit), or a byte damaged on disk: every
    run refuses the ledger with its line and `qpeft jobs --repair` (which drops exactly such
    lines), never an AttributeError or a UnicodeDecodeError from deep inside."""
    from qpeft.jobs.repair import repair_ledger

    path = tmp_path / "jobs" / "ledger.jsonl"
    path.parent.mkdir()
    path.write_bytes(b'{"event": "done", "key": "k", "job_id": "j"}\n' + bad + b'\n{"event": "left", "key": "k"}\n')
    with pytest.raises(ValueError, match="ledger.jsonl:2 is not a JSON ledger record.*--repair"):
        JobEngine(ScriptedProvider(), tmp_path)
    with pytest.raises(ValueError, match="ledger.jsonl:2"):
        read_ledger(path)
    assert [b["line"] for b in repair_ledger(tmp_path)["bad_lines"]] == [2]
    assert [r["event"] for r in read_ledger(path)] == ["done", "left", "repaired"]


def test_a_record_may_hold_other_line_separators_in_its_strings(tmp_path):
    """Only a newline byte ends a line (as `--repair` reads them): a message with U+2028, U+2029
    or U+0085 (line separators to Python's str.splitlines, plain characters to JSON) is one record."""
    path = tmp_path / "jobs" / "ledger.jsonl"
    path.parent.mkdir()
    path.write_bytes('{"event": "left", "key": "k", "message": "a\u2028b\u2029c\x85d"}\n'.encode())
    assert [r["message"] for r in read_ledger(path)] == ["a\u2028b\u2029c\x85d"]


def test_a_torn_last_ledger_line_is_cut_before_the_next_append(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text('{"event": "done", "key": "k", "job_id": "j"}\n{"event": "subm')  # torn by a crash
    ledger = Ledger(path)
    ledger.append("submitted", key="k2", job_id="j2", attempt=1)
    assert [r["event"] for r in read_ledger(path)] == ["done", "submitted"]  # nothing joined the torn line
    assert [r["key"] for r in Ledger(path).records] == ["k", "k2"]
    path.write_text('{"event": "subm')  # a torn first line: nothing readable is left
    Ledger(path).append("done", key="k3", job_id="j3")
    assert [r["key"] for r in read_ledger(path)] == ["k3"]
    whole = '{"event": "submitted", "key": "k4", "job_id": "j4", "attempt": 1}'  # complete, its newline lost
    path.write_text(whole)
    Ledger(path).append("done", key="k4", job_id="j4")
    assert [r["event"] for r in read_ledger(path)] == ["submitted", "done"]  # kept, not cut
    long_torn = '{"event": "failed", "message": "' + "x" * 70_000  # torn inside a long message
    path.write_text(whole + "\n" + long_torn)
    Ledger(path).append("done", key="k4", job_id="j4")
    assert [r["event"] for r in read_ledger(path)] == ["submitted", "done"]


class NoAnswer(ScriptedProvider):
    """Submits that answer only once ``answer`` is set, with a 503 (nothing created), on a
    provider that cannot look jobs up (like Origin's)."""

    can_find = False

    def __init__(self, answer: threading.Event):
        super().__init__()
        self.answer = answer

    def submit(self, circuits, shots, tag):
        self.answer.wait(30)
        raise TransientError("503")


def test_an_unknown_submission_waits_for_a_person(tmp_path):
    from qpeft.cli import main
    from qpeft.jobs.calls import late_submit

    _, circuits = _circuits(5, seed=11)
    fast = {**FAST, "job_timeout": 0.05}
    answer = threading.Event()
    try:
        with pytest.raises(SubmissionUnknownError, match="--resolve"):
            JobEngine(NoAnswer(answer), tmp_path, **fast).run(circuits, None)
        with pytest.raises(SubmissionUnknownError):  # a rerun does not submit it either (it waits for the call)
            JobEngine(NoAnswer(answer), tmp_path, **fast).run(circuits, None)
        tag = next(r["tag"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "unknown")
        assert main(["jobs", str(tmp_path), "--resolve", tag]) == 2  # this process's call may still create it
    finally:
        answer.set()
    assert isinstance(late_submit(tag).future.exception(timeout=30), TransientError)  # it answered: 503
    assert main(["jobs", str(tmp_path), "--resolve", tag]) == 0  # checked: nothing was created
    healthy = ScriptedProvider(seed=12, transient=0, throttle=0, hang=0, failed=0, lost=0, slow=0)
    assert len(JobEngine(healthy, tmp_path, **fast).run(circuits, None)) == 5 and len(healthy.fate) == 1


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_rejected_submit_is_tried_max_attempts_times_with_backoff(tmp_path, max_attempts):
    _, circuits = _circuits(5, seed=13)
    provider = ScriptedProvider(seed=14, transient=1.0, throttle=0, hang=0, failed=0, lost=0, slow=0)
    engine = JobEngine(
        provider, tmp_path, max_attempts=max_attempts, **{**FAST, "poll_interval": 0.02, "max_poll_interval": 1.0}
    )
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="503 Service Unavailable"):
        engine.run(circuits, None)
    assert provider.calls["submit"] == max_attempts and not provider.created
    waits = sum(0.02 * 2**n for n in range(max_attempts - 1))  # 0.02 * 2**(n-1) after rejection n
    assert time.perf_counter() - started >= waits


class MisShaped(ScriptedProvider):
    """Returns results of the wrong width, as a list or as one 2-D array."""

    def __init__(self, as_array: bool):
        super().__init__(**NO_FAULTS)
        self.as_array = as_array

    def result(self, job_id, circuits, shots):
        probs = np.asarray(super().result(job_id, circuits, shots))
        wrong = np.concatenate([probs, np.zeros((len(probs), 1))], axis=1)  # one entry too many per circuit
        return wrong if self.as_array else list(wrong)


@pytest.mark.parametrize("as_array", [False, True])
def test_results_that_do_not_fit_their_circuits_are_refused(tmp_path, as_array):
    from qpeft.jobs.engine import ProviderError

    _, circuits = _circuits(5)
    with pytest.raises(ProviderError, match="do not fit its circuits"):
        JobEngine(MisShaped(as_array), tmp_path, **FAST).run(circuits, None)
    assert not (tmp_path / "jobs" / "results" / "index.jsonl").exists()  # nothing wrong was cached


def test_results_as_one_array_are_cached_and_served_like_a_list(tmp_path):
    thetas, circuits = _circuits(7)
    provider = ScriptedProvider(**NO_FAULTS)
    first = JobEngine(provider, tmp_path, **FAST).run(circuits, 100, scope="s")
    again = JobEngine(provider, tmp_path, **FAST).run(circuits, 100, scope="s")  # from the cache
    assert provider.calls["submit"] == 1
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert all(p.dtype == np.float64 and p.shape == (2,) for p in again)


def test_mixed_widths_returned_as_one_array_are_refused(tmp_path):
    from qpeft.jobs.engine import ProviderError

    two = Circuit(2).add("RY", [0], Weight(0))

    class Squashed(ScriptedProvider):  # a 1-qubit and a 2-qubit circuit answered as one (2, 2) array
        def result(self, job_id, circuits, shots):
            return np.stack([np.asarray(p)[:2] for p in super().result(job_id, circuits, shots)])

    with pytest.raises(ProviderError, match="do not fit"):
        JobEngine(Squashed(**NO_FAULTS), tmp_path, **FAST).run(
            [BoundCircuit(RY, (0.1,)), BoundCircuit(two, (0.2,))], None
        )


def test_a_newer_engine_serves_what_the_older_one_cached_and_retires_it(tmp_path):
    provider = ScriptedProvider(**NO_FAULTS)
    a = JobEngine(provider, tmp_path, **FAST)
    circuits = [BoundCircuit(RY, (t,)) for t in (0.1, 0.2, 0.3)]
    first = a.run(circuits, 100, scope="s")
    b = JobEngine(provider, tmp_path, **FAST)  # (a is not closed: b takes the run directory over)
    again = b.run(circuits, 100, scope="s")
    assert provider.calls["submit"] == 1
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    with pytest.raises(RuntimeError, match="took it over"):
        a.run(circuits, 100, scope="s")


def test_a_result_that_cannot_be_written_is_an_error_and_its_job_is_not_marked_done(tmp_path):
    _, circuits = _circuits(150, seed=21)  # 3 jobs of 50
    engine = JobEngine(ScriptedProvider(**NO_FAULTS), tmp_path, max_parallel=1, **FAST)
    put, calls = engine.cache.put_job, []

    def full_disk(key, probs):
        calls.append(key)
        if len(calls) == 2:
            raise OSError("No space left on device")
        put(key, probs)

    engine.cache.put_job = full_disk
    with pytest.raises(OSError, match="No space left"):
        engine.run(circuits, None, scope="s")
    records = read_ledger(tmp_path / "jobs" / "ledger.jsonl")
    done = [r["key"] for r in records if r["event"] == "done"]
    assert done == [calls[0], calls[2]]  # results written first, then `done`; the unwritten job stays open
    assert calls[1] in Ledger(tmp_path / "jobs" / "ledger.jsonl").live()  # a rerun re-attaches to it


def _slow_puts(engine, seconds):
    put = engine.cache.put_job

    def slow(key, probs):
        time.sleep(seconds)
        put(key, probs)

    engine.cache.put_job = slow


@pytest.mark.parametrize("max_parallel", [1, 4])
def test_finished_jobs_are_written_before_a_failing_run_raises(tmp_path, max_parallel):
    _, circuits = _circuits(250, seed=40)  # 5 jobs of 50, the last one fails
    provider = ScriptedProvider(**NO_FAULTS, fatal_weights=circuits[240].weights)
    engine = JobEngine(provider, tmp_path, max_parallel=max_parallel, **FAST)
    _slow_puts(engine, 0.2)
    with pytest.raises(JobFailedError):
        engine.run(circuits, None, scope="s")
    done = [r["key"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "done"]
    assert len(done) == 4 and all(k in engine.cache._where for k in done)  # no sleep: already written


def test_finished_jobs_are_written_before_run_returns(tmp_path):
    _, circuits = _circuits(200, seed=41)
    engine = JobEngine(ScriptedProvider(**NO_FAULTS), tmp_path, max_parallel=1, **FAST)
    _slow_puts(engine, 0.2)
    engine.run(circuits, None, scope="s")
    done = [r["key"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "done"]
    assert len(done) == 4


def test_a_failed_write_is_raised_once_not_by_the_next_call(tmp_path):
    _, circuits = _circuits(100, seed=42)
    engine = JobEngine(ScriptedProvider(**NO_FAULTS), tmp_path, max_parallel=1, **FAST)
    put = engine.cache.put_job
    engine.cache.put_job = lambda key, probs: (_ for _ in ()).throw(OSError("No space left on device"))
    with pytest.raises(OSError):
        engine.run(circuits, None, scope="s")
    engine.cache.put_job = put
    assert len(engine.run(circuits, None, scope="s")) == 100  # re-attached and written now


def test_a_rerun_after_ctrl_c_during_the_drain_does_not_submit_again(tmp_path):
    # the real race: run() empties the writer's list *before* waiting; a Ctrl-C in the wait leaves a write
    # pending that nobody waits for; the next call misses the cache, then the write records `done`
    # (the job leaves ledger.live()) before _run_job looks at the ledger -> it submits the job again
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread for SIGINT")
    _, circuits = _circuits(50, seed=43)  # one job
    provider = ScriptedProvider(**NO_FAULTS)
    engine = JobEngine(provider, tmp_path, max_parallel=1, **FAST)
    gate, main = threading.Event(), threading.main_thread().ident
    put = engine.cache.put_job

    def in_drain():
        f = sys._current_frames().get(main)
        while f is not None:
            if f.f_code.co_name == "drain" and "writer" in f.f_code.co_filename:
                return True
            f = f.f_back
        return False

    def put_after_ctrl_c(key, probs):
        if not gate.is_set():
            deadline = time.monotonic() + 60  # (a loaded machine may take long to get there)
            while not in_drain() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            signal.pthread_kill(main, signal.SIGINT)  # the user presses Ctrl-C while run() waits
            gate.wait(3)  # with the fix, the next call waits for this write before any lookup
        put(key, probs)

    engine.cache.put_job = put_after_ctrl_c
    # Ctrl-C raises KeyboardInterrupt here also when this process started with SIGINT ignored
    # (as a background job of a non-interactive shell is)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.collect()  # a finalizer running when the signal lands would swallow its KeyboardInterrupt
    gc.disable()
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.run(circuits, None, scope="s")
    finally:
        gc.enable()
        signal.signal(signal.SIGINT, previous)

    live = engine.ledger.live

    def live_after_the_write():  # the pending write lands between the cache lookup and this look
        gate.set()
        for _ in range(500):
            if any(r["event"] == "done" for r in engine.ledger.records):
                break
            time.sleep(0.01)
        return live()

    engine.ledger.live = live_after_the_write
    out = engine.run(circuits, None, scope="s")  # ScriptedProvider refuses a second submit of a done key
    assert len(out) == 50 and provider.calls["submit"] == 1
