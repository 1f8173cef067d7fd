"""Settling a submission a crash cut off, against the spool service (a job service in its own
process; its served.jsonl is the bill): the request in flight reaches the service only after the
restart began. The restarted run waits ``submit_timeout`` after the intent before it concludes
that nothing was created, finds the job by its tag, and pays for it once."""

import threading

import numpy as np
import pytest
from spoolservice import SpoolService

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.spool import SpoolProvider
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
THETAS = np.linspace(0.1, 3.0, 2)
CIRCUITS = [BoundCircuit(RY, (float(t),)) for t in THETAS]
EXPECTED = np.stack([np.cos(THETAS / 2) ** 2, np.sin(THETAS / 2) ** 2], axis=1)  # RY|0>, closed form
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, progress=False)


class Crash(BaseException):
    """The process dies here (nothing after this line runs in it)."""


def _crash_with_the_request_in_flight(spool, run, delay: float) -> threading.Timer:
    """A first run dies while its submit request is on its way: the request reaches the service
    ``delay`` s later, after the restart began. Returns the timer that delivers it."""
    first = SpoolProvider(spool=spool)
    landing = []

    def in_flight(circuits, shots, tag):
        timer = threading.Timer(delay, SpoolProvider(spool=spool).submit, (circuits, shots, tag))
        timer.start()
        landing.append(timer)
        raise Crash

    first.submit = in_flight
    with pytest.raises(Crash):
        JobEngine(first, run, **FAST).run(CIRCUITS, None, scope="s")
    return landing[0]


def test_a_submission_that_lands_after_the_restart_is_found_not_paid_again(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool) as service:
        landing = _crash_with_the_request_in_flight(spool, run, delay=1.0)
        out = JobEngine(SpoolProvider(spool=spool), run, submit_timeout=5.0, **FAST).run(CIRCUITS, None, scope="s")
        landing.join()
        served = service.drain()
    assert len(served) == 1  # the late job was found by its tag and used; nothing else ran
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
    events = [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "submitted", "done"]


def test_a_submit_that_does_not_answer_is_found_by_its_tag_while_the_call_still_hangs(tmp_path):
    """The service created the job, the answer is 3 s late (past submit_timeout): the engine finds
    the job by its tag at once and uses it, instead of waiting for the answer or giving up on it."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool) as service:
        provider = SpoolProvider(spool=spool, answer_delay=3.0)
        engine = JobEngine(provider, run, submit_timeout=0.2, job_timeout=1.5, **FAST)
        out = engine.run(CIRCUITS, None, scope="s")
        served = service.drain()
    assert len(served) == 1
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
    events = [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "unknown", "submitted", "done"]


def test_a_deadline_that_cuts_the_settling_wait_short_does_not_conclude_nothing_was_created(tmp_path):
    """The restart's deadline (0.3 s) comes before submit_timeout (5 s) has passed since the
    intent: the submission is not yet settled, so it stays open; the job lands at the service
    afterwards, and the next run finds it by its tag instead of paying for it again."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool) as service:
        landing = _crash_with_the_request_in_flight(spool, run, delay=1.5)
        hurried = JobEngine(SpoolProvider(spool=spool), run, submit_timeout=5.0, deadline=0.3, **FAST)
        with pytest.raises(TimeoutError):
            hurried.run(CIRCUITS, None, scope="s")
        landing.join()
        out = JobEngine(SpoolProvider(spool=spool), run, submit_timeout=5.0, **FAST).run(CIRCUITS, None, scope="s")
        served = service.drain()
    assert len(served) == 1
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
