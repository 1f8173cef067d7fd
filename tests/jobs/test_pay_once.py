"""Paying once, and losing nothing, where an independent review found that the engine did not:
a rerun with ``reuse_results``, two processes on one run directory, Ctrl-C with parallel jobs, a
job id the ledger could not record, and the API key kept in an error's hidden context. The real
engine runs; only the service is stood in for (the spool service in its own process, or the
stand-in QCloud service: the remote services cannot be reached from here)."""

import time

import numpy as np
import pytest
from spoolservice import SpoolService, run_client, start_client

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.spool import SpoolProvider
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, progress=False)


def _c(theta):
    return BoundCircuit(RY, (float(theta),))


def test_reuse_results_restart_reattaches_instead_of_paying_again(tmp_path):
    """With reuse_results, which circuits a call submits depends on what this *process* has run
    before (the in-memory reuse table), so the job split and the job keys of a step differ after
    a restart: the job left open by the crashed process is orphaned and the same circuit is paid
    for again."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    service = SpoolService(spool)
    first = JobEngine(SpoolProvider(spool=spool, max_circuits=2), run, reuse_results=True, **FAST)
    first.run([_c(0.1), _c(0.2)], 100, scope="step-0")  # served: job 1
    service.stop()  # the service stops taking jobs: step 1's job stays queued (open in the ledger)
    first.options.deadline = 1.0
    with pytest.raises(TimeoutError):
        first.run([_c(0.1), _c(0.3)], 100, scope="step-1")  # 0.1 from memory; submits a job of [0.3]
    first.close()
    del first  # the process dies; its open job stays queued at the service
    service.start()
    try:
        again = JobEngine(SpoolProvider(spool=spool, max_circuits=2), run, reuse_results=True, **FAST)
        again.run([_c(0.1), _c(0.3)], 100, scope="step-1")
        served = service.drain()
    finally:
        service.stop()
    tags = [s["tag"] for s in served]
    # job 1 (step 0) and step 1's open job; nothing else should have been paid for
    assert len(served) == 2, f"paid {len(served)} jobs: {tags}"


def test_reuse_results_serves_a_job_whose_every_circuit_ran_before(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool) as service:
        engine = JobEngine(SpoolProvider(spool=spool, max_circuits=2), run, reuse_results=True, **FAST)
        first = engine.run([_c(0.1), _c(0.2), _c(0.3)], 100, scope="step-0")  # jobs [0.1, 0.2], [0.3]
        assert len(service.drain()) == 2
        # [0.2, 0.3] ran in two other jobs: this process remembers both, no job
        again = engine.run([_c(0.2), _c(0.3)], 100, scope="step-1")
        assert len(service.drain()) == 2  # (the bill: every job served so far)
        np.testing.assert_array_equal(np.stack(again), np.stack(first[1:]))
        # [0.3, 0.4]: 0.4 is new, so the job runs whole (its key is the same in any process)
        engine.run([_c(0.3), _c(0.4)], 100, scope="step-2")
        assert len(service.drain()) == 3
        engine.close()


def test_a_second_process_on_a_live_run_directory_stops_and_pays_nothing(tmp_path):
    """Two engines on the same run directory at once (a rerun started while the first process
    is still alive): each would read the ledger once, when it is made, and neither would see the
    other's submissions, so every job would be paid twice. The second one stops at once, with
    an error that says why; once the first has ended, a rerun reuses all its results."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool, delay=1.0) as service:  # 6 jobs, one at a time: 6 s at least
        a = start_client(run, spool, 12, 2)
        deadline = time.time() + 60
        while not (run / "jobs" / "ledger.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)  # the first one's jobs are in flight
        b = run_client(run, spool, 12, 2)
        assert a.poll() is None, "the first process ended before the second started: the test shows nothing"
        assert b.returncode != 0 and "RunInUseError" in b.stderr
        assert "is in use by another job engine" in b.stderr and "would each pay for jobs" in b.stderr
        assert a.wait(120) == 0
        again = run_client(run, spool, 12, 2)  # after the first ended: everything from its results
        assert again.returncode == 0, again.stderr
        served = service.drain()
    keys = [s["tag"].rsplit(".", 1)[0] for s in served]
    assert len(served) == 6 and len(set(keys)) == 6, f"{len(served)} jobs paid for 6 job keys: {sorted(keys)}"


def test_in_one_process_a_new_engine_retires_the_older_one(tmp_path):
    """Within a process a new engine takes an idle run directory over (a notebook making a new
    engine after an error): the older engine's ledger is no longer the current one, so its run()
    refuses. An engine in the middle of a run is not taken over."""
    import threading

    from qpeft.jobs.runlock import RunInUseError

    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool, delay=0.5) as service:
        old = JobEngine(SpoolProvider(spool=spool), run, **FAST)
        old.run([_c(0.1)], 100, scope="s")
        new = JobEngine(SpoolProvider(spool=spool), run, **FAST)
        with pytest.raises(RuntimeError, match="a newer JobEngine on this run directory took it over"):
            old.run([_c(0.2)], 100, scope="s")
        running = threading.Thread(target=new.run, args=([_c(0.3)], 100), kwargs={"scope": "s"})
        running.start()
        deadline = time.time() + 30
        while not new._running and time.time() < deadline:
            time.sleep(0.01)
        with pytest.raises(RunInUseError, match="in use by another job engine of this process, in the middle of a run"):
            JobEngine(SpoolProvider(spool=spool), run, **FAST)
        running.join()
        assert new.run([_c(0.1)], 100, scope="s")  # (the refused engine took nothing over)
        new.close()
        old.close()
        assert len(service.drain()) == 2  # 0.1 and 0.3; 0.1 again from the cache
    JobEngine(SpoolProvider(spool=spool), run, **FAST).close()  # every engine closed: the run is free


SECRET = "sk-live-7Hq2SECRETx9"


def test_engine_error_does_not_keep_the_secret_in_its_context(monkeypatch, tmp_path):
    """The engine's ProviderError is redacted, but it is raised inside the ``except`` block with
    ``from None``: its ``__context__`` still holds the SDK's error with the key (what error
    reporters, ``logging`` of ``exc.__context__``, debuggers and the project's own
    ``_holds_a_secret`` walk). ``providers.connect`` avoids exactly this for construction errors."""
    qcloud = pytest.importorskip("pyqpanda3.qcloud")
    from standins import StandInQCloudService

    from qpeft.jobs.engine import ProviderError
    from qpeft.jobs.providers import _holds_a_secret, get_provider

    service = StandInQCloudService(submit_error=f"QCloud HTTP request failed with status 401: api key {SECRET}")
    monkeypatch.setattr(qcloud, "QCloudService", lambda api_key: service)
    monkeypatch.setattr(qcloud, "QCloudJob", service.job)
    monkeypatch.setenv("QPEFT_ORIGIN_API_KEY", SECRET)
    engine = JobEngine(get_provider("origin"), tmp_path, poll_interval=0.001, progress=False)
    circuit = Circuit(2).add("RY", [0], Weight(0)).add("RY", [1], Weight(1)).add("CZ", [0, 1])
    with pytest.raises(ProviderError) as info:
        engine.run(BoundCircuit.batch(circuit, np.array([[0.3, 1.2]])), 100, scope="s")
    assert SECRET not in str(info.value)
    assert not _holds_a_secret(info.value), "the raised error chains to an error holding the API key"


def test_ctrl_c_with_parallel_jobs_starts_no_new_job(tmp_path):
    """Ctrl-C while several jobs run in parallel: ``_run_jobs`` leaves its ``with
    ThreadPoolExecutor`` block, whose exit waits for *every* queued job future too (shutdown
    without cancel_futures), so all the call's remaining jobs are still submitted and paid for
    (and waited on) before the interrupt gets through."""
    import os
    import signal
    import threading

    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool, delay=0.5) as service:
        engine = JobEngine(SpoolProvider(spool=spool, max_circuits=1), run, max_parallel=2, **FAST)
        circuits = [_c(t) for t in np.linspace(0.1, 3.0, 8)]  # 8 jobs, 2 at a time
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))  # Ctrl-C while the first 2 jobs run
        # Ctrl-C raises KeyboardInterrupt here also when this process started with SIGINT ignored
        # (a suite started in the background)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                engine.run(circuits, 100, scope="s")
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        served = service.drain()
    submitted = [r for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "intent"]
    assert len(submitted) <= 2, f"{len(submitted)} jobs submitted (served {len(served)}) after a Ctrl-C at the first 2"


def test_a_created_job_whose_record_cannot_be_written_is_named(tmp_path, caplog):
    """The service answered with the new job's id, but the ``submitted`` record cannot be written
    (a full disk). The id is known at that moment, yet the OSError names no job, and nothing logs it:
    on Origin (no lookup by tag) the rerun can only report the submission unresolved, and the person
    has to dig the id out of the console although the engine had it."""
    import logging

    pytest.importorskip("pyqpanda3")
    from standins import StandInQCloudService

    from qpeft.jobs.origin import OriginProvider

    service = StandInQCloudService()
    provider = OriginProvider(api_key="sk-test-KEY", service=service, job_factory=service.job)
    engine = JobEngine(provider, tmp_path, **FAST)
    append = engine.ledger.append

    def full_disk(event, **fields):
        if event == "submitted":
            raise OSError(28, "No space left on device")
        return append(event, **fields)

    engine.ledger.append = full_disk
    with caplog.at_level(logging.DEBUG), pytest.raises(OSError) as info:
        engine.run([BoundCircuit(RY, (0.4,))], 100, scope="s")
    assert len(service.submissions) == 1
    assert "origin-1" in str(info.value) or "origin-1" in caplog.text, "the created job's id was dropped"


def _locked_elsewhere(run) -> bool:
    """Whether another open file (this process's engine, or another process) holds the run's
    engine lock (or the lock file ``run``): what a second process would find."""
    import fcntl

    path = run if run.suffix == ".lock" else run / "jobs" / "engine.lock"
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def test_an_engine_that_fails_to_start_gives_the_run_directory_back(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool):
        working = JobEngine(SpoolProvider(spool=spool), run, **FAST)
        with pytest.raises(ValueError):
            JobEngine(SpoolProvider(spool=spool), run, max_spend="a lot", **FAST)  # fails after taking the hold
        assert working.run([_c(0.1)], 100, scope="s")  # still the run directory's engine
        assert _locked_elsewhere(run)
        working.close()
    assert not _locked_elsewhere(run)


def test_a_retired_engine_does_not_keep_other_processes_out(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    retired = JobEngine(SpoolProvider(spool=spool), run, **FAST)
    current = JobEngine(SpoolProvider(spool=spool), run, **FAST)
    current.close()
    assert not _locked_elsewhere(run), "the retired engine (still referenced) kept the run directory locked"
    retired.close()


def test_an_engine_freed_while_the_guard_is_taken_is_released_later_not_deadlocked(tmp_path):
    from qpeft.jobs import runlock

    engine = JobEngine(SpoolProvider(spool=tmp_path / "spool"), tmp_path / "run", **FAST)
    hold = engine._hold
    with runlock._guard:  # the collector frees an engine inside hold_run, on the thread holding the guard
        runlock._freed_engine(hold)  # must not wait for the guard
    assert _locked_elsewhere(tmp_path / "run") and runlock._freed == [hold]
    JobEngine(SpoolProvider(spool=tmp_path / "spool"), tmp_path / "other", **FAST).close()  # the next holder
    assert runlock._freed == [] and not _locked_elsewhere(tmp_path / "run")
    del engine


def test_a_forked_child_does_not_keep_the_run_directory_locked(tmp_path):
    """A process forked while an engine runs (a data loader's worker, a ``multiprocessing``
    fork) shares the engine's lock files. Were it to keep its copies, the locks would outlive
    the engine, and a rerun after the training ended would be refused while the worker lived.
    The child's letting go must not unlock the parent's run directory either."""
    import os

    from qpeft.jobs.cache import ResultCache

    spool, run = tmp_path / "spool", tmp_path / "run"
    engine = JobEngine(SpoolProvider(spool=spool), run, **FAST)
    cache = ResultCache(tmp_path / "cache")
    cache_lock = tmp_path / "cache.lock"
    to_child, from_parent = os.pipe()
    from_child, to_parent = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: says it has started, then lives until the test says so
        os.write(to_parent, b"1")
        os.read(to_child, 1)
        os._exit(0)
    try:
        assert os.read(from_child, 1) == b"1"  # the child is past its fork hooks
        assert _locked_elsewhere(run) and _locked_elsewhere(cache_lock), "the child's letting go unlocked the parent's"
        engine.close()
        cache.close()
        assert not _locked_elsewhere(run), "the forked child kept the run directory locked after its engine closed"
        assert not _locked_elsewhere(cache_lock), "the forked child kept the result cache locked after it was closed"
    finally:
        os.write(from_parent, b"1")
        os.waitpid(child, 0)
