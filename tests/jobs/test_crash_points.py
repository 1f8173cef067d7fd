"""Never pay twice, whatever point of a job's life a crash hits.

A client process runs circuits through the job engine against the spool service (a job service
in its own process, whose served.jsonl is the bill) and is killed with SIGKILL at each point of
a job's life (spool_client.CRASH_POINTS: before the intent record, inside the submit call before
and after the service created the job, after the ``submitted`` record, mid-poll, after the job
finished but before its results reach the cache, after the cache write but before ``done``);
then the same client runs again. The service must have run each needed job exactly once, and
the results must be right. The same for a real ``kill -9`` from outside while a submit call is
in flight; and on the providers whose services tests cannot reach, through their stand-ins:
IBM (jobs are found by their tag) and Origin (they cannot be: the submission is reported
unresolved, settled with ``qpeft jobs --resolve``, never paid again)."""

import os
import signal
import time
from collections import Counter

import numpy as np
import pytest
from spool_client import CRASH_POINTS
from spoolservice import SpoolService, run_client, start_client
from standins import StandInQCloudService, StandInRuntimeService

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.base import SubmissionUnknownError
from qpeft.jobs.ledger import read_ledger
from qpeft.quantum.circuit import Circuit, Weight

N, PER_JOB = 6, 2  # 3 jobs
THETAS = np.linspace(0.1, 3.0, N)
EXPECTED = np.stack([np.cos(THETAS / 2) ** 2, np.sin(THETAS / 2) ** 2], axis=1)  # RY|0>, closed form
# a restart waits this long for an intent's call to land before it concludes "nothing was created"
CLIENT = {"submit_timeout": 1.0}


def _bill(served: list[dict]) -> Counter:
    """Jobs the service ran, per job key (a tag is KEY.ATTEMPT)."""
    return Counter(s["tag"].rsplit(".", 1)[0] for s in served)


@pytest.mark.slow  # (two client processes per point)
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_crash_at_any_point_of_a_job_pays_for_nothing_twice(tmp_path, point):
    run, spool = tmp_path / "run", tmp_path / "spool"
    with SpoolService(spool) as service:
        killed = run_client(run, spool, N, PER_JOB, die_at=point, options=CLIENT)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        again = run_client(run, spool, N, PER_JOB, options=CLIENT)
        assert again.returncode == 0, again.stderr[-2000:]
        served = service.drain()
    bill = _bill(served)
    assert len(bill) == N // PER_JOB and set(bill.values()) == {1}, bill  # each needed job run once
    np.testing.assert_allclose(np.load(run / "out.npy"), EXPECTED, atol=1e-6)


@pytest.mark.slow
def test_kill_9_while_a_submit_call_is_in_flight(tmp_path):
    """The service has created the job, the answer has not come back (a slow network): the
    client is killed from outside. Its rerun finds the job by its tag and re-attaches."""
    run, spool = tmp_path / "run", tmp_path / "spool"
    with SpoolService(spool) as service:
        client = start_client(run, spool, N, PER_JOB, {**CLIENT, "answer_delay": 600, "submit_timeout": 900})
        deadline = time.monotonic() + 300
        while not any(spool.glob("*.*.json")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(spool.glob("*.*.json")), "the client never submitted"
        os.kill(client.pid, signal.SIGKILL)
        client.wait()
        again = run_client(run, spool, N, PER_JOB, options=CLIENT)
        assert again.returncode == 0, again.stderr[-2000:]
        served = service.drain()
    bill = _bill(served)
    assert len(bill) == N // PER_JOB and set(bill.values()) == {1}, bill
    np.testing.assert_allclose(np.load(run / "out.npy"), EXPECTED, atol=1e-6)
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    first = next(r for r in records if r["event"] == "submitted")
    assert sum(r["event"] == "intent" and r["tag"] == first["tag"] for r in records) == 1  # one call, found by tag


RY = Circuit(1).add("RY", [0], Weight(0))
FAST = dict(poll_interval=0.001, max_poll_interval=0.004, submit_timeout=5, progress=False)


class Crash(BaseException):
    """The process dies here (nothing after this line runs in it)."""


def _crash_after(fn):
    def crashing(*args, **kwargs):
        fn(*args, **kwargs)
        raise Crash  # the service created the job; its answer never arrived

    return crashing


def _circuits():
    return [BoundCircuit(RY, (float(t),)) for t in THETAS[:3]]


def test_origin_cannot_look_jobs_up_so_a_cut_off_submission_is_reported_not_paid_again(tmp_path):
    pytest.importorskip("pyqpanda3")
    from qpeft.cli import main
    from qpeft.jobs.origin import OriginProvider

    service = StandInQCloudService()
    first = OriginProvider(api_key="sk-test-KEY", service=service, job_factory=service.job)
    first._chip.run = _crash_after(first._chip.run)
    with pytest.raises(Crash):
        JobEngine(first, tmp_path, **FAST).run(_circuits(), 200, scope="s")
    assert len(service.submissions) == 1

    restarted = OriginProvider(api_key="sk-test-KEY", service=service, job_factory=service.job)
    with pytest.raises(SubmissionUnknownError, match="cannot look jobs up by tag.*--resolve") as info:
        JobEngine(restarted, tmp_path, **FAST).run(_circuits(), 200, scope="s")
    assert len(service.submissions) == 1  # not paid again
    tag = next(r["tag"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "intent")
    assert tag in str(info.value)
    assert main(["jobs", str(tmp_path), "--resolve", tag, "--job-id", "origin-1"]) == 0  # found in the console
    out = JobEngine(restarted, tmp_path, **FAST).run(_circuits(), 200, scope="s")
    assert len(service.submissions) == 1  # re-attached to origin-1
    np.testing.assert_allclose(np.stack(out), EXPECTED[:3], atol=0.12)


def test_ibm_finds_a_cut_off_submission_by_its_tag(tmp_path):
    pytest.importorskip("qiskit_ibm_runtime")
    pytest.importorskip("qiskit_aer")
    from qpeft.jobs.ibm import IBMProvider

    service = StandInRuntimeService()

    def make():
        return IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler)

    first = make()
    first._sampler_factory = lambda **kw: _CrashingSampler(service.sampler(**kw))
    with pytest.raises(Crash):
        JobEngine(first, tmp_path, **FAST).run(_circuits(), 400, scope="s")
    assert service.submissions == 1
    out = JobEngine(make(), tmp_path, **FAST).run(_circuits(), 400, scope="s")
    assert service.submissions == 1  # found by its tag, re-attached
    np.testing.assert_allclose(np.stack(out), EXPECTED[:3], atol=0.15)
    events = [r["event"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "submitted", "done"]


class _CrashingSampler:
    def __init__(self, sampler):
        self.sampler = sampler

    def run(self, pubs, shots=None):
        self.sampler.run(pubs, shots=shots)
        raise Crash
