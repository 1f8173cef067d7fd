"""Engine paths where a restart or a cap decides what is paid: a re-attached job counts as an
attempt, and every submission of a job key has its own tag (the cap counts submissions by tag);
a submission a crash cut off that turned out to create nothing is not counted against the cap of
any later run. The scripted provider keeps its own log of the jobs it created (the bill)."""

import numpy as np
import pytest
from standins import ScriptedProvider

from qpeft.jobs import BoundCircuit, JobEngine, JobFailedError
from qpeft.jobs.budget import BudgetExceededError
from qpeft.jobs.ledger import read_ledger
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
FAST = dict(poll_interval=0.001, max_poll_interval=0.004, max_parallel=1, progress=False)
NO_FAULTS = dict(transient=0, throttle=0, hang=0, slow=0, failed=0, lost=0)


class Crash(BaseException):
    """The process dies here (nothing after this line runs in it)."""


def _circuits(n, start=0.1):
    return [BoundCircuit(RY, (float(t),)) for t in np.linspace(start, 3.0, n)]


def test_a_re_attached_job_counts_as_an_attempt_and_the_next_one_gets_a_new_tag(tmp_path):
    """max_attempts=2: the job submitted before the crash is attempt 1, so after it fails one more
    job is paid for, tagged KEY.2; then the key's attempts are used up."""
    provider = ScriptedProvider(**{**NO_FAULTS, "failed": 1.0})  # every job fails, for a transient cause
    status = provider.status

    def crashing(job_id):
        raise Crash

    provider.status = crashing  # the process dies while it polls its first job
    with pytest.raises(Crash):
        JobEngine(provider, tmp_path, max_attempts=2, **FAST).run(_circuits(2), None, scope="s")
    provider.status = status
    with pytest.raises(JobFailedError, match="after 2 attempt"):
        JobEngine(provider, tmp_path, max_attempts=2, **FAST).run(_circuits(2), None, scope="s")
    ((key, jobs),) = provider.created.items()
    assert len(jobs) == 2  # paid twice in all: max_attempts
    assert sorted(provider.jobs[j]["tag"] for j in jobs) == [f"{key}.1", f"{key}.2"]


def test_a_cut_off_submission_that_created_nothing_is_not_counted_by_a_later_cap(tmp_path):
    """A crash before the service created the job leaves an intent (counted as maybe spent). The
    restart finds nothing under its tag and submits the job: one job paid in all, so a later run
    with a cap of 2 jobs may still submit one more."""
    provider = ScriptedProvider(**NO_FAULTS)
    submit = provider.submit

    def crashing(circuits, shots, tag):
        raise Crash  # before the request left: nothing was created

    provider.submit = crashing
    with pytest.raises(Crash):
        JobEngine(provider, tmp_path, **FAST).run(_circuits(2), None, scope="a")
    provider.submit = submit
    JobEngine(provider, tmp_path, max_spend={"jobs": 1}, submit_timeout=0.05, **FAST).run(_circuits(2), None, "a")
    events = [r["event"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "rejected", "intent", "submitted", "done"]
    later = JobEngine(provider, tmp_path, max_spend={"jobs": 2}, **FAST)
    later.run(_circuits(2, start=0.2), None, scope="b")  # the second job of the run: within the cap
    assert sum(len(jobs) for jobs in provider.created.values()) == 2
    with pytest.raises(BudgetExceededError, match="spent 2 job"):
        later.run(_circuits(2, start=0.3), None, scope="c")


@pytest.mark.parametrize("call", ["status", "result"])
def test_a_provider_error_while_following_a_job_names_the_job_and_the_providers_words(tmp_path, call):
    from qpeft.jobs.calls import ProviderError

    provider = ScriptedProvider(**NO_FAULTS)

    def refusing(*args):
        raise RuntimeError("permission denied for this instance")

    setattr(provider, call, refusing)
    with pytest.raises(ProviderError) as info:
        JobEngine(provider, tmp_path, **FAST).run(_circuits(2), None, scope="s")
    (job_id,) = provider.fate
    assert job_id in str(info.value) and "permission denied for this instance" in str(info.value)
    live = [r for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]
    assert [r["job_id"] for r in live] == [job_id]  # still open: a rerun re-attaches to it


def test_a_refused_submission_gives_its_reservation_back_within_the_same_engine(tmp_path):
    """A submit the provider refuses (not transient: nothing created) counts nothing; calling the
    same engine again (a notebook after the cause was fixed) may still spend the whole cap."""
    from qpeft.jobs.calls import ProviderError

    provider = ScriptedProvider(**NO_FAULTS)
    submit = provider.submit

    def refusing(circuits, shots, tag):
        raise RuntimeError("400 Bad Request: the instance has no access to this backend")

    provider.submit = refusing
    engine = JobEngine(provider, tmp_path, max_spend={"jobs": 1}, **FAST)
    with pytest.raises(ProviderError, match="nothing was created"):
        engine.run(_circuits(2), None, scope="s")
    provider.submit = submit
    engine.run(_circuits(2), None, scope="s")
    assert sum(len(jobs) for jobs in provider.created.values()) == 1


@pytest.mark.parametrize("forgotten", ["before-the-cancel", "after-the-cancel"])
def test_a_job_past_its_limit_that_the_service_forgets_on_cancel_stops_the_run_until_recorded_lost(tmp_path, forgotten):
    """Past queue_timeout the engine cancels the job; the service no longer knows it (its cancel,
    or the status read after it, answers HTTP 404). QCloud documents no answer for a job it does
    not know, and a moved endpoint answers 404 too, so the cancel is not confirmed: the run stops
    with the job's id and pays nothing more. Recorded lost by hand (`qpeft jobs --lost`, after the
    console shows it gone), the job is submitted again and the run goes on."""
    pytest.importorskip("pyqpanda3")
    from standins import StandInQCloudService

    from qpeft.cli import main
    from qpeft.jobs.errors import JobStillRunningError
    from qpeft.jobs.origin import OriginProvider

    service = StandInQCloudService(polls=10**6)  # the first job waits in the queue
    provider = OriginProvider(api_key="sk-test-KEY", service=service, job_factory=service.job)
    cancel = provider.cancel

    def forgetting(job_id):
        service.polls = 1  # the next job runs at once
        if forgotten == "before-the-cancel":
            service.forget(job_id)
            return cancel(job_id)
        answer = cancel(job_id)
        service.forget(job_id)
        return answer

    provider.cancel = forgetting
    engine = JobEngine(provider, tmp_path, queue_timeout=0.2, cancel_wait=5, **FAST)
    with pytest.raises(JobStillRunningError, match="--lost origin-1"):
        engine.run(_circuits(2), 200, scope="s")
    engine.close()
    assert len(service.submissions) == 1
    assert main(["jobs", str(tmp_path), "--lost", "origin-1"]) == 0
    provider = OriginProvider(api_key="sk-test-KEY", service=service, job_factory=service.job)
    out = JobEngine(provider, tmp_path, **FAST).run(_circuits(2), 200, scope="s")
    assert len(service.submissions) == 2 and len(out) == 2
    events = [r["event"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "submitted", "lost", "intent", "submitted", "done"]
