"""``qpeft jobs RUN_DIR --check`` / ``--cancel``: the run's open jobs asked about by id, cancelled
on request, and recorded once they ended, with nothing submitted. The spool service in its own
process stands in for the remote QPU service (which cannot be reached from here); its bill counts
the jobs it ran, and its clients see only their own account's jobs."""

import json
import time

import pytest
from spoolservice import SpoolService, start_client

from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.ledger import Ledger, read_ledger
from qpeft.jobs.settle import check_open, record_lost
from qpeft.jobs.spool import SpoolProvider
from qpeft.jobs.summary import open_jobs, recent_steps
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, progress=False)
STEP = [BoundCircuit(RY, (t,)) for t in (0.1, 0.2, 0.3)]


def _records(run):
    return read_ledger(run / "jobs" / "ledger.jsonl")


def _left_open(spool, run, shots=100, account=None, scope="train-3", **options) -> str:
    """A process whose step's job stays queued (no service runs) past its deadline; the job's id."""
    spool.mkdir(parents=True, exist_ok=True)
    engine = JobEngine(SpoolProvider(spool=spool, account=account), run, deadline=1.0, **FAST, **options)
    with pytest.raises(TimeoutError):
        engine.run(STEP, shots, scope=scope)
    engine.close()
    return [r["job_id"] for r in _records(run) if r["event"] == "submitted"][-1]


def _cut_off(provider, run) -> list[str]:
    """A run whose step's jobs stay queued at ``provider``'s service past its deadline; their ids."""
    engine = JobEngine(provider, run, deadline=1.0, **FAST)
    with pytest.raises(TimeoutError):
        engine.run(STEP, 100, scope="train-3")
    engine.close()
    return [r["job_id"] for r in _records(run) if r["event"] == "submitted"]


def _jobs(run, spool, *flags, account=None, **options):
    """``qpeft jobs RUN --check ...`` against the spool; (exit code, the JSON report)."""
    opts = {"spool": str(spool), **({"account": account} if account else {}), **FAST, **options}
    opts.pop("progress")
    return main(["jobs", str(run), *flags, "--quantum-options", json.dumps(opts), "--json"])


def test_cancel_left_stops_the_jobs_a_run_went_on_without_and_nothing_else(tmp_path, capsys):
    """A rerun with other shots (switch_shots) leaves the first run's job queued and billed-to-be;
    ``--cancel left`` cancels exactly that one: the service never runs it, and it leaves --open."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    first = _left_open(spool, run, shots=100)
    second = _left_open(spool, run, shots=200, scope="train-4", switch_shots=True)  # goes on without the first
    assert [(j["job_id"], j["left"]) for j in open_jobs(_records(run))] == [(first, True), (second, False)]
    assert _jobs(run, spool, "--cancel", "left") == 0
    got = {job["job_id"]: job for job in json.loads(capsys.readouterr().out)}
    assert (got[first]["state"], got[first]["recorded"]) == ("cancelled", "cancelled")
    assert (got[second]["state"], got[second]["recorded"]) == ("queued", None)  # asked, not cancelled
    assert [j["job_id"] for j in open_jobs(_records(run))] == [second]
    # the record is no step's event: the run's newest step is still train-4 (what --compact-results keeps)
    assert recent_steps(_records(run), 1)[0] == ["train-4"]
    with SpoolService(spool) as service:
        assert [s["job_id"] for s in service.drain()] == [second]  # the bill: the cancelled job never ran


def test_check_records_a_job_that_ended_meanwhile_and_a_rerun_fetches_it_paying_nothing(tmp_path, capsys):
    """A job that finished while no run was attached leaves --open once checked; its results are
    not fetched then, and the rerun that needs them fetches them by the job's id."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run)
    with SpoolService(spool) as service:
        assert [s["job_id"] for s in service.drain()] == [job_id]
        assert main(["jobs", str(run), "--check", "--quantum-options", json.dumps({"spool": str(spool)})]) == 0
        out = capsys.readouterr().out
        assert f"{job_id}  local:torch  train-3: done, recorded" in out and "1 ended and recorded" in out
        assert open_jobs(_records(run)) == []
        assert [r["event"] for r in _records(run)][-1] == "done"
        results = JobEngine(SpoolProvider(spool=spool), run, **FAST).run(STEP, 100, scope="train-3")
        assert len(results) == 3
        assert [s["job_id"] for s in service.drain()] == [job_id]  # nothing paid again
    assert "refetched" in [r["event"] for r in _records(run)]


def test_a_job_the_provider_no_longer_knows_is_recorded_lost(tmp_path, capsys):
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run)
    (spool / f"{job_id}.job.json").unlink()  # the service forgot it
    # (the provider's options default to the run's own, from its train_config.json)
    (run / "train_config.json").write_text(json.dumps({"quantum_options": {"spool": str(spool)}}))
    assert main(["jobs", str(run), "--check", "--json"]) == 0
    (job,) = json.loads(capsys.readouterr().out)
    assert (job["state"], job["recorded"]) == ("lost", "lost")
    assert open_jobs(_records(run)) == []


@pytest.mark.parametrize(
    "how", ["by-hand", "by-hand-then-a-failed-attempt", "by-hand-first-release", "by-the-provider"]
)
def test_a_job_recorded_lost_by_hand_gives_its_key_a_new_budget_of_attempts(tmp_path, capsys, how):
    """`qpeft jobs --lost ID` is the user's choice to pay for the job again: the next run submits
    its key even where that key's attempts are used up (max_attempts 1 here), also after a later
    attempt ended (a run cut off after one transient failure: 2 more attempts, as one run makes),
    and for a record of the first release (its words, no `by`). A job the provider itself answered
    lost for (`--check`) uses up an attempt, as in a run."""
    from qpeft.jobs.base import JobFailedError

    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, max_attempts=1)
    (spool / f"{job_id}.job.json").unlink()  # the service forgot it
    if how == "by-the-provider":
        assert _jobs(run, spool, "--check") == 0
    elif how == "by-hand-first-release":
        (sub,) = [r for r in _records(run) if r["event"] == "submitted"]
        fields = {k: sub[k] for k in ("key", "provider", "backend", "circuits", "shots", "attempt", "tag")}
        message = "recorded by hand (qpeft jobs --lost): the provider's console no longer lists it"
        Ledger(run / "jobs" / "ledger.jsonl").append("lost", job_id=job_id, message=message, by="qpeft jobs", **fields)
    else:
        assert main(["jobs", str(run), "--lost", job_id]) == 0
        assert "the next run pays for it again" in capsys.readouterr().out
    attempts, limit = [1, 2], 1
    if how == "by-hand-then-a-failed-attempt":  # the next run's attempt 2 failed (transient), then it was cut off
        (sub,) = [r for r in _records(run) if r["event"] == "submitted"]
        common = {k: sub[k] for k in ("key", "provider", "backend", "circuits", "shots")}
        ledger = Ledger(run / "jobs" / "ledger.jsonl")
        ledger.append("submitted", job_id="J2", attempt=2, tag=f"{sub['key']}.2", **common)
        ledger.append("failed", job_id="J2", attempt=2, tag=f"{sub['key']}.2", message="maintenance", **common)
        attempts, limit = [1, 2, 3], 2
    assert [r["event"] for r in _records(run)][-1] in ("lost", "failed")
    engine = JobEngine(SpoolProvider(spool=spool), run, max_attempts=limit, **FAST)
    with SpoolService(spool) as service:
        if how == "by-the-provider":
            with pytest.raises(JobFailedError, match="max_attempts is 1"):
                engine.run(STEP, 100, scope="train-3")
        else:
            assert len(engine.run(STEP, 100, scope="train-3")) == len(STEP)
            assert [r["attempt"] for r in _records(run) if r["event"] == "submitted"] == attempts
        engine.close()
        assert len(service.drain()) == (0 if how == "by-the-provider" else 1)


def test_another_accounts_job_is_not_asked_about_nor_recorded(tmp_path, capsys):
    """As another account the provider would answer that the job does not exist: recording it as
    lost would drop a job that may still run from the ledger. It is left, and said so."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, account="alice")
    assert _jobs(run, spool, "--check", account="bob") == 1
    (job,) = json.loads(capsys.readouterr().out)
    assert job["state"] is None and job["recorded"] is None and "another account" in job["words"]
    assert [j["job_id"] for j in open_jobs(_records(run))] == [job_id]
    assert _jobs(run, spool, "--cancel", "all", account="alice") == 0  # its own account cancels it
    capsys.readouterr()
    assert open_jobs(_records(run)) == []
    with SpoolService(spool) as service:
        assert service.drain() == []


def test_a_cancel_the_provider_does_not_confirm_leaves_the_job_open(tmp_path, capsys):
    """The spool service refuses to cancel a running job: the job stays open (it may still run and
    be billed), the command says so and exits 1."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run)
    with SpoolService(spool, delay=3.0) as service:
        until = time.monotonic() + 60
        while not (spool / f"{job_id}.running.json").exists():
            assert time.monotonic() < until
            time.sleep(0.02)
        assert _jobs(run, spool, "--cancel", job_id, cancel_wait=0.3) == 1
        (job,) = json.loads(capsys.readouterr().out)
        assert job["recorded"] is None and "not confirmed" in job["words"]
        assert [j["job_id"] for j in open_jobs(_records(run))] == [job_id]
        service.drain()
    assert _jobs(run, spool, "--check") == 0  # it finished: now recorded as done
    assert json.loads(capsys.readouterr().out)[0]["recorded"] == "done"


def test_bad_ids_and_a_live_run_are_refused_before_anything_is_asked(tmp_path, capsys):
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run)
    assert _jobs(run, spool, "--cancel", "no-such-job") == 2
    err = capsys.readouterr().err
    assert "not a job this run's ledger has open" in err and job_id in err
    live = start_client(run, spool, n=3, max_circuits=3, options={"poll_interval": 0.05})  # its job waits
    try:
        until = time.monotonic() + 60
        while [r["event"] for r in _records(run)].count("submitted") < 2:  # its engine holds the run meanwhile
            assert time.monotonic() < until and live.poll() is None
            time.sleep(0.05)
        assert _jobs(run, spool, "--cancel", job_id) == 2
        assert "in use by another job engine" in capsys.readouterr().err
        assert main(["jobs", str(run), "--lost", job_id]) == 2  # (the live run would not see it)
        assert main(["jobs", str(run), "--resolve", "any.1"]) == 2
        assert "in use by another job engine" in capsys.readouterr().err
        assert not [r for r in _records(run) if r["event"] in ("lost", "rejected")]
    finally:
        live.kill()
        live.wait()
    assert job_id in [j["job_id"] for j in open_jobs(_records(run))]
    assert (spool / f"{job_id}.job.json").exists()  # still queued: nothing was cancelled


def test_settling_another_accounts_older_job_does_not_make_a_rerun_pay_again(tmp_path, capsys):
    """Alice's job was left when Bob's rerun (switch_account) submitted the key anew and finished.
    Alice then settles hers with --check: its `done` must not take the place of Bob's, or Bob's
    rerun, missing the results from its cache, would ask for Alice's job, be told it does not
    exist, and pay a third time."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    alices = _left_open(spool, run, account="alice")
    with SpoolService(spool) as service:
        bob = JobEngine(SpoolProvider(spool=spool, account="bob"), run, switch_account=True, **FAST)
        bob.run(STEP, 100, scope="train-3")
        bob.close()
        assert len(service.drain()) == 2  # Alice's job ran too, billed to her
        assert _jobs(run, spool, "--check", account="alice") == 0
        assert json.loads(capsys.readouterr().out)[0]["recorded"] == "done"
        (bobs,) = [r["job_id"] for r in _records(run) if r["event"] == "done" and "by" not in r]
        key = [r for r in _records(run) if r["job_id"] == bobs][0]["key"]
        assert Ledger(run / "jobs" / "ledger.jsonl").done(key)["job_id"] == bobs
        for path in (run / "jobs" / "results").rglob("*"):  # Bob's cached results are gone (compacted)
            if path.is_file():
                path.unlink()
        JobEngine(SpoolProvider(spool=spool, account="bob"), run, **FAST).run(STEP, 100, scope="train-3")
        assert len(service.drain()) == 2  # fetched again from Bob's job: nothing paid again
    events = [(r["event"], r.get("job_id")) for r in _records(run)]
    assert ("refetched", bobs) in events and ("gone", alices) not in events


def test_a_simulator_that_keeps_no_jobs_is_refused_rather_than_taking_them_for_lost(tmp_path, capsys):
    """Without the spool's options the default provider is the in-process simulator of the same
    name, which would answer that the queued job does not exist."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run)
    assert main(["jobs", str(run), "--check"]) == 2
    assert "keeps no jobs across processes" in capsys.readouterr().err
    assert [j["job_id"] for j in open_jobs(_records(run))] == [job_id]


def test_lost_is_not_recorded_when_the_account_is_unknown_and_the_job_names_one(tmp_path, capsys):
    """(Braket when STS does not answer: the job may be another account's.)"""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, account="alice")
    (spool / f"{job_id}.job.json").unlink()
    assert _jobs(run, spool, "--check") == 1  # as a client that knows no account
    (job,) = json.loads(capsys.readouterr().out)
    assert job["state"] == "lost" and job["recorded"] is None and "does not know its account" in job["words"]
    assert [j["job_id"] for j in open_jobs(_records(run))] == [job_id]


def test_a_by_hand_submission_without_an_attempt_or_scope_is_settled_and_the_ledger_stays_readable(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run)
    records = _records(run)
    ledger = run / "jobs" / "ledger.jsonl"
    by_hand = [{k: v for k, v in r.items() if k not in ("attempt", "scope")} for r in records]
    ledger.write_text("".join(json.dumps(r) + "\n" for r in by_hand))
    (report,) = check_open(SpoolProvider(spool=spool), run, **{k: v for k, v in FAST.items() if k != "progress"})
    assert (report["job_id"], report["state"]) == (job_id, "queued")
    (spool / f"{job_id}.job.json").unlink()
    (report,) = check_open(SpoolProvider(spool=spool), run, "left")  # (one word, not its letters: nothing left)
    assert report["recorded"] == "lost"
    assert "attempt" not in _records(run)[-1] and "scope" not in _records(run)[-1]
    assert Ledger(ledger).live() == {}  # (read again: no record of it breaks the ledger)


def test_ibm_jobs_are_checked_through_the_runtime_service_with_their_usage(tmp_path):
    """The IBM provider's own status, usage and not-found paths (the QiskitRuntimeService is a
    stand-in: the SDK's local testing mode runs the jobs). A job that ended meanwhile is recorded
    with the QPU seconds IBM reports, which the spending cap then counts; one the service forgot
    is recorded lost."""
    pytest.importorskip("qiskit_aer")
    from standins import StandInRuntimeService

    from qpeft.jobs.base import Limits
    from qpeft.jobs.budget import job_spend, spent_in
    from qpeft.jobs.ibm import IBMProvider

    service = StandInRuntimeService(usage_s=30.0, polls=10**6)  # the jobs stay queued

    def provider():
        made = IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler)
        made.limits = Limits(max_circuits=2)
        return made

    run = tmp_path / "run"
    first, second = _cut_off(provider(), run)
    service.by_id[first]._polls = 0  # it finished while no run was attached
    service.forget(second)
    reports = {r["job_id"]: r for r in check_open(provider(), run, poll_interval=0.01, max_poll_interval=0.05)}
    assert (reports[first]["recorded"], reports[first]["usage"]["quantum_seconds"]) == ("done", 30.0)
    assert reports[second]["recorded"] == "lost"
    assert open_jobs(_records(run)) == [] and service.submissions == 2
    # the finished job counts at what it used; the lost one, as every submission, at least at its estimate
    (size,) = [r["circuits"] for r in _records(run) if r["event"] == "submitted" and r["job_id"] == second]
    assert spent_in(_records(run), "ibm").amount == pytest.approx(30.0 * 1.60 + job_spend("ibm", size, 100).amount)


def test_origin_jobs_are_checked_through_the_qcloud_service(tmp_path):
    """The Origin provider's own status and not-found paths (the QCloud service is a stand-in;
    pyqpanda3 builds the programs): the queued job stays open, the finished one is recorded done;
    the forgotten one (HTTP 404, which QCloud does not document for an unknown job) is not taken
    as lost but stays open with the words that say how to record it (`qpeft jobs --lost`, which
    records it lost); nothing is submitted."""
    pytest.importorskip("pyqpanda3")
    from standins import StandInQCloudService

    from qpeft.jobs.base import Limits
    from qpeft.jobs.origin import OriginProvider

    service = StandInQCloudService(polls=10**6)  # the jobs stay queued

    def provider():
        made = OriginProvider("WK_C180", api_key="sk-test-KEY", service=service, job_factory=service.job)
        made.limits = Limits(max_circuits=1)
        return made

    run = tmp_path / "run"
    queued, finished, forgotten = _cut_off(provider(), run)
    service.jobs[finished].polls = 0
    service.forget(forgotten)
    reports = {r["job_id"]: r for r in check_open(provider(), run, poll_interval=0.01, max_poll_interval=0.05)}
    assert [reports[j]["state"] for j in (queued, finished, forgotten)] == ["queued", "done", None]
    assert [reports[j]["recorded"] for j in (queued, finished, forgotten)] == [None, "done", None]
    assert f"--lost {forgotten}" in reports[forgotten]["words"]
    assert [j["job_id"] for j in open_jobs(_records(run))] == [queued, forgotten]
    assert record_lost(run, [forgotten]) == [{"job_id": forgotten, "recorded": "lost"}]
    assert [j["job_id"] for j in open_jobs(_records(run))] == [queued] and len(service.submissions) == 3
    with pytest.raises(ValueError, match="not an open or finished job"):
        record_lost(run, ["origin-99"])


def test_another_accounts_job_is_not_recorded_lost_by_hand(tmp_path, capsys):
    """A job another account made, which a run went on without (`left`, another account): this
    account's view of it says nothing (it may still run, billed to that account), so `--lost`
    refuses it and names who can check it; the ledger is unchanged."""
    from qpeft.cli import main

    path = tmp_path / "jobs" / "ledger.jsonl"
    ledger = Ledger(path)
    common = dict(key="k", provider="origin", backend="WK_C180", circuits=1, shots=100, tag="k.1")
    ledger.append("submitted", job_id="J", attempt=1, account="aaaaaaaaaaaa", **common)
    ledger.append("left", key="k", job_id="J", tag="k.1", why="another account")
    ledger.close()
    with pytest.raises(ValueError, match="made by another account.*that account's credentials"):
        record_lost(tmp_path, ["J"])
    assert [r["event"] for r in read_ledger(path)] == ["submitted", "left"]
    assert main(["jobs", str(tmp_path), "--lost", "J"]) != 0
    assert "made by another account" in capsys.readouterr().err
    assert [r["event"] for r in read_ledger(path)] == ["submitted", "left"]


def test_the_new_budget_is_the_highest_renewed_attempt_whatever_order_the_records_came_in(tmp_path):
    """A hand record of an older attempt written after a newer one lowers no budget; a finished
    job's attempt renews it too (its results were lost since), as before."""
    from qpeft.jobs.ledger import BY_HAND

    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    common = dict(key="k", provider="spool", backend="", circuits=1, shots=100)
    ledger.append("done", job_id="J2", attempt=2, tag="k.2", **common)
    assert ledger.renewed("k") == 2
    ledger.append("lost", job_id="J4", attempt=4, tag="k.4", by=BY_HAND, **common)
    ledger.append("lost", job_id="J3", attempt=3, tag="k.3", by=BY_HAND, **common)
    ledger.append("lost", job_id="J5", attempt=5, tag="k.5", by="qpeft jobs", message="not found", **common)
    ledger.close()
    assert ledger.renewed("k") == 4 and Ledger(path).renewed("k") == 4 and ledger.renewed("other") == 0


def test_a_jobs_command_holds_the_run_directory_for_as_long_as_it_works(tmp_path):
    """`qpeft jobs --check/--cancel/--lost/--resolve` hold the run directory as a run does, not
    only at their start: an engine of another process started meanwhile would not see their
    records (the exclusive lock here stands for that engine's)."""
    from qpeft.jobs.runlock import open_locked
    from qpeft.jobs.settle import _held

    jobs = tmp_path / "run" / "jobs"
    Ledger(jobs / "ledger.jsonl").append("intent", key="k", tag="k.1", attempt=1)
    with _held(tmp_path / "run"):
        with pytest.raises(BlockingIOError):
            open_locked(jobs / "engine.lock", exclusive=True)
    other, _ = open_locked(jobs / "engine.lock", exclusive=True)  # (let go after)
    other.close()
