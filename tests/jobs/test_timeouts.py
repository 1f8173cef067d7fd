"""Jobs slower than their limits, against the spool service (a job service in its own process
that runs one job at a time, cancels a queued job but refuses to cancel a running one; its
served.jsonl is the bill). A job is submitted again only once the provider has confirmed that
the earlier one is cancelled, failed or gone; time in the queue is not run time; a failure names
the job's id and the provider's words; the run deadline stops a call that would wait for ever."""

import threading
import time

import numpy as np
import pytest
from spoolservice import SpoolService
from standins import ScriptedProvider

from qpeft.jobs import BoundCircuit, JobEngine, JobFailedError
from qpeft.jobs.base import JobStillRunningError
from qpeft.jobs.ledger import Ledger, read_ledger
from qpeft.jobs.options import RUN_DEADLINE, EngineOptions
from qpeft.jobs.spool import SpoolProvider
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, progress=False)


def _circuits(n, start=0.1):
    thetas = np.linspace(start, 3.0, n)
    return thetas, [BoundCircuit(RY, (float(t),)) for t in thetas]


def _expected(thetas):
    return np.stack([np.cos(thetas / 2) ** 2, np.sin(thetas / 2) ** 2], axis=1)  # RY|0>, closed form


def _events(run_dir, event):
    path = run_dir / "jobs" / "ledger.jsonl"
    if not path.is_file():  # (a run started in a thread may not have written its first record yet)
        return []
    return [r for r in read_ledger(path) if r["event"] == event]


def test_a_job_past_its_run_time_that_cannot_be_cancelled_is_waited_for_not_paid_again(tmp_path):
    thetas, circuits = _circuits(2)
    with SpoolService(tmp_path / "spool", delay=2.0) as service:
        provider = SpoolProvider(spool=tmp_path / "spool")
        engine = JobEngine(provider, tmp_path / "run", job_timeout=0.3, **FAST)
        out = engine.run(circuits, None, scope="s")
        served = service.drain()
    np.testing.assert_allclose(np.stack(out), _expected(thetas), atol=1e-6)
    assert len(served) == 1  # the running job was not paid for again
    assert len(_events(tmp_path / "run", "submitted")) == 1 and not _events(tmp_path / "run", "timeout")


def test_an_unconfirmed_cancel_stops_with_the_job_id_and_a_rerun_uses_its_result(tmp_path):
    thetas, circuits = _circuits(2)
    with SpoolService(tmp_path / "spool", delay=3.0) as service:
        provider = SpoolProvider(spool=tmp_path / "spool")
        engine = JobEngine(provider, tmp_path / "run", job_timeout=0.2, cancel_wait=0.2, **FAST)
        with pytest.raises(JobStillRunningError) as info:
            engine.run(circuits, None, scope="s")
        job_id = _events(tmp_path / "run", "submitted")[0]["job_id"]
        message = str(info.value)
        assert job_id in message and "refused to cancel it" in message and "rerun" in message
        assert Ledger(tmp_path / "run" / "jobs" / "ledger.jsonl").live()  # open: a rerun re-attaches
        rerun = JobEngine(SpoolProvider(spool=tmp_path / "spool"), tmp_path / "run", **FAST)
        out = rerun.run(circuits, None, scope="s")
        served = service.drain()
    np.testing.assert_allclose(np.stack(out), _expected(thetas), atol=1e-6)
    assert [s["job_id"] for s in served] == [job_id]  # its result was used; nothing else ran


def test_time_in_the_queue_is_not_run_time(tmp_path):
    """6 jobs at once on a service that runs one at a time for 0.5 s: the last waits ~2.5 s in the
    queue, past a job_timeout of 2 s that none of them runs for: none is cancelled."""
    thetas, circuits = _circuits(12)
    with SpoolService(tmp_path / "spool", delay=0.5) as service:
        provider = SpoolProvider(spool=tmp_path / "spool", max_circuits=2)
        cancels, cancel = [], provider.cancel
        provider.cancel = lambda job_id: cancels.append(job_id) or cancel(job_id)
        engine = JobEngine(provider, tmp_path / "run", job_timeout=2.0, max_parallel=6, **FAST)
        out = engine.run(circuits, None, scope="s")
        served = service.drain()
    np.testing.assert_allclose(np.stack(out), _expected(thetas), atol=1e-6)
    assert len(served) == 6 and not _events(tmp_path / "run", "timeout")
    # no cancel was even asked for (the spool refuses to cancel a running job; a QPU service that
    # can would have stopped a job that had just left the queue)
    assert not cancels and not list((tmp_path / "spool").glob("*.cancelled.json"))
    assert max(r["queue_s"] for r in _events(tmp_path / "run", "done")) > 2.0  # waited longer than job_timeout


def test_a_job_past_queue_timeout_is_cancelled_and_submitted_again_once_the_cancel_is_confirmed(tmp_path):
    thetas, circuits = _circuits(2)
    service = SpoolService(tmp_path / "spool", start=False)  # no server yet: the job waits in the queue
    provider = SpoolProvider(spool=tmp_path / "spool")
    engine = JobEngine(provider, tmp_path / "run", queue_timeout=0.5, max_attempts=50, **FAST)
    got = {}
    worker = threading.Thread(target=lambda: got.update(out=engine.run(circuits, None, scope="s")))
    worker.start()
    deadline = time.monotonic() + 60
    while not _events(tmp_path / "run", "timeout") and time.monotonic() < deadline:
        time.sleep(0.05)
    service.start()
    try:
        worker.join(timeout=300)
        served = service.drain()
    finally:
        service.stop()
    np.testing.assert_allclose(np.stack(got["out"]), _expected(thetas), atol=1e-6)
    timeouts = _events(tmp_path / "run", "timeout")
    assert timeouts and all("past queue_timeout" in r["message"] and "CANCELLED" in r["message"] for r in timeouts)
    assert len(list((tmp_path / "spool").glob("*.cancelled.json"))) == len(timeouts)
    assert len(served) == 1  # the cancelled jobs never ran


NO_FAULTS = dict(transient=0, throttle=0, hang=0, slow=0, lost=0)


def test_a_rerun_after_the_attempts_are_used_up_names_the_last_job_and_the_providers_words(tmp_path):
    _, circuits = _circuits(4)
    provider = ScriptedProvider(**NO_FAULTS, failed=1.0)  # every job fails ("device calibration error")
    with pytest.raises(JobFailedError):
        JobEngine(provider, tmp_path, max_attempts=2, **FAST).run(circuits, None, scope="s")
    last = _events(tmp_path, "failed")[-1]
    with pytest.raises(JobFailedError) as info:  # nothing left to try: says which job and why, pays nothing
        JobEngine(provider, tmp_path, max_attempts=2, **FAST).run(circuits, None, scope="s")
    message = str(info.value)
    assert last["job_id"] in message and "device calibration error" in message and "max_attempts" in message
    assert provider.calls["submit"] == 2


def test_the_run_deadline_stops_a_call_that_would_wait_for_ever_and_a_rerun_continues(tmp_path):
    assert EngineOptions().run_deadline == RUN_DEADLINE == 7 * 24 * 3600  # a default beside the per-call one
    thetas, circuits = _circuits(2)
    service = SpoolService(tmp_path / "spool", start=False)  # a service that never takes the job
    engine = JobEngine(SpoolProvider(spool=tmp_path / "spool"), tmp_path / "run", run_deadline=0.5, **FAST)
    with pytest.raises(TimeoutError, match="run deadline of 0.5 s reached; job .* still open"):
        engine.run(circuits, None, scope="s")
    with pytest.raises(TimeoutError, match="run deadline"):  # it holds for the engine's later calls too
        engine.run(circuits, None, scope="s")
    service.start()
    try:
        out = JobEngine(SpoolProvider(spool=tmp_path / "spool"), tmp_path / "run", **FAST).run(circuits, None, "s")
        served = service.drain()
    finally:
        service.stop()
    np.testing.assert_allclose(np.stack(out), _expected(thetas), atol=1e-6)
    assert len(served) == 1
