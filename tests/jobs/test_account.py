"""A job is visible only to the account that made it. A rerun as another account (other
credentials in the environment, another saved account) would find the run's open jobs nowhere,
take them as lost and pay for their steps again while they may still run, billed to the first
account. So each submission records the account's digest, and such a rerun stops before it pays
unless ``switch_account`` says to go on. The real engine runs against the spool service in its own
process (the stand-in for a remote service, which cannot be reached from here); its clients see
only their own account's jobs, as on a QPU service, and it counts the jobs it ran."""

import logging

import pytest
from spoolservice import SpoolService

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.base import account_digest
from qpeft.jobs.errors import JobFailedError
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.settle import check_open
from qpeft.jobs.spool import SpoolProvider
from qpeft.jobs.summary import open_jobs, totals
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, progress=False)
STEP = [BoundCircuit(RY, (t,)) for t in (0.1, 0.2, 0.3)]


def _left_open(spool, run, account) -> str:
    """A first process, as ``account``, whose step's job stays queued past its deadline; its id."""
    spool.mkdir(parents=True, exist_ok=True)
    engine = JobEngine(SpoolProvider(spool=spool, account=account), run, deadline=1.0, **FAST)
    with pytest.raises(TimeoutError):
        engine.run(STEP, 100, scope="train-3")
    engine.close()
    (job_id,) = [r["job_id"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]
    return job_id


def test_a_rerun_as_another_account_is_refused_before_it_pays(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, "alice")
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert {r.get("account") for r in records if r["event"] in ("intent", "submitted")} == {account_digest("alice")}
    with SpoolService(spool) as service:
        with pytest.raises(ValueError, match=f"another account made .*{job_id}.*switch_account"):
            JobEngine(SpoolProvider(spool=spool, account="bob"), run, **FAST)
        assert [s["job_id"] for s in service.drain()] == [job_id]  # nothing new: only the job that was open
        # the account that made it re-attaches and uses its results: nothing paid again
        JobEngine(SpoolProvider(spool=spool, account="alice"), run, **FAST).run(STEP, 100, scope="train-3")
        assert [s["job_id"] for s in service.drain()] == [job_id]  # (the bill: every job the service ran)
    events = [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")]
    assert events.count("intent") == 1 and "lost" not in events


def test_switch_account_goes_on_without_the_other_accounts_jobs_and_names_them(tmp_path, caplog):
    """Without the check, the rerun would have polled the other account's job, been told it does
    not exist, and recorded it as lost: a job that may still run would drop out of the ledger. With
    ``switch_account`` it is left open and still listed, and the other account's attempts do not
    use up this one's."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, "alice")
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        engine = JobEngine(SpoolProvider(spool=spool, account="bob"), run, switch_account=True, max_attempts=1, **FAST)
        engine.run(STEP, 100, scope="train-3")
        engine.close()
        served = service.drain()
    assert job_id in caplog.text and "switch_account" in caplog.text and "not visible to this one" in caplog.text
    assert len(served) == 2  # the open job (the service still runs it, for alice) and bob's own
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert [r["job_id"] for r in records if r["event"] == "left"] == [job_id]
    assert not [r for r in records if r["event"] == "lost"], "the other account's job was recorded as lost"
    assert [r["account"] for r in records if r["event"] == "submitted"] == [account_digest(a) for a in ("alice", "bob")]
    # bob's job of the same key ended; alice's may still run: still listed, as one the run went on without
    assert [(job["job_id"], job["left"]) for job in open_jobs(records)] == [(job_id, True)]
    assert totals(records)["left_open"] == 1
    # a later rerun as bob is not refused again for it
    JobEngine(SpoolProvider(spool=spool, account="bob"), run, **FAST).close()


def test_switch_account_re_attaches_to_a_job_this_account_sees(tmp_path):
    """The same account under other credentials (a rotated key, a token instead of the saved
    account) has another digest but sees the job: switch_account re-attaches to it, paying nothing."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, "alice")
    (spool / f"{job_id}.account").unlink()  # the service shows it to every account of the user
    with SpoolService(spool) as service:
        with pytest.raises(ValueError, match="another account made"):
            JobEngine(SpoolProvider(spool=spool, account="alice-rotated"), run, **FAST)
        engine = JobEngine(SpoolProvider(spool=spool, account="alice-rotated"), run, switch_account=True, **FAST)
        engine.run(STEP, 100, scope="train-3")
        engine.close()
        assert [s["job_id"] for s in service.drain()] == [job_id]
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert [r["event"] for r in records].count("intent") == 1 and "reattached" in [r["event"] for r in records]
    assert open_jobs(records) == []


def test_resolving_a_submission_by_hand_keeps_its_account(tmp_path):
    from qpeft.jobs.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.append(
        "unknown",
        key="k",
        provider="spool",
        backend="torch",
        job_id=None,
        circuits=1,
        shots=100,
        attempt=1,
        tag="k.1",
        scope="train-1",
        account=account_digest("alice"),
    )
    assert ledger.resolve("k.1", "job-7")["account"] == account_digest("alice")


def test_no_account_known_checks_nothing(tmp_path):
    """A provider that does not know its account (a plugin's, an old ledger's records) is not
    refused: the check needs both sides."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, None)
    with SpoolService(spool) as service:
        JobEngine(SpoolProvider(spool=spool, account="bob"), run, **FAST).run(STEP, 100, scope="train-3")
        assert [s["job_id"] for s in service.drain()] == [job_id]


def test_origin_and_ibm_name_their_account_by_a_digest_never_the_key(monkeypatch):
    pytest.importorskip("pyqpanda3")
    pytest.importorskip("qiskit_aer")
    from standins import StandInQCloudService, StandInRuntimeService

    from qpeft.jobs.ibm import IBMProvider
    from qpeft.jobs.origin import OriginProvider

    def origin(key):
        service = StandInQCloudService()
        return OriginProvider(api_key=key, service=service, job_factory=service.job).account()

    a, b = origin("sk-test-KEY-one"), origin("sk-test-KEY-two")
    assert a != b and a == origin("sk-test-KEY-one") and "KEY" not in a and len(a) == 12

    def ibm(token, instance=None):
        service = StandInRuntimeService()
        monkeypatch.setattr(service, "active_account", lambda: {"instance": instance} if instance else None)
        return IBMProvider("ibm_nairobi", token=token, service=service, sampler_factory=service.sampler).account()

    assert ibm("tok-one") != ibm("tok-two")  # (no instance: the token names the account)
    assert ibm("tok-one", "crn:v1:instance-a") == ibm("tok-two", "crn:v1:instance-a")  # jobs belong to the instance
    assert "tok" not in ibm("tok-one") and IBMProvider("fake_torino").account() is None  # local testing mode


class _RefusingSpool(SpoolProvider):
    """A service that answers another account's job id with "access denied", not "not found"."""

    def status(self, job_id):
        if not self._visible(job_id):
            raise PermissionError(f"AccessDeniedException: not authorized to read {job_id}")
        return super().status(job_id)


def test_switch_account_goes_on_where_the_service_refuses_access_to_the_other_accounts_job(tmp_path, caplog):
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, "alice")
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        engine = JobEngine(_RefusingSpool(spool=spool, account="bob"), run, switch_account=True, **FAST)
        engine.run(STEP, 100, scope="train-3")
        engine.close()
        assert len(service.drain()) == 2
    assert f"job {job_id}, made by another account, is not visible" in caplog.text and "AccessDenied" in caplog.text


def test_an_older_submission_of_another_account_stays_open_and_can_be_resolved(tmp_path):
    """alice's submit was cut off (an intent without id); bob, switching accounts, submitted the
    key anew: his first submission created nothing (rejected), his second finished. alice's may
    have created a job: it stays unresolved, and --resolve settles it without touching bob's."""
    from qpeft.jobs.ledger import Ledger

    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    common = dict(key="k", provider="spool", backend="torch", circuits=1, shots=100, scope="train-1")
    ledger.append("intent", job_id=None, attempt=1, tag="k.1", account=account_digest("alice"), **common)
    ledger.append("left", key="k", job_id=None, tag="k.1", why="another account")
    ledger.append("intent", job_id=None, attempt=2, tag="k.2", account=account_digest("bob"), **common)
    ledger.append("rejected", job_id=None, attempt=2, tag="k.2", message="refused", **common)
    ledger.append("intent", job_id=None, attempt=3, tag="k.3", account=account_digest("bob"), **common)
    ledger.append("submitted", job_id="B3", attempt=3, tag="k.3", account=account_digest("bob"), **common)
    assert totals(read_ledger(path))["unresolved"] == ["k.1"]
    assert [r["tag"] for r in Ledger(path).unsettled()] == ["k.1"]
    reopened = Ledger(path)
    reopened.resolve("k.1", "A1")  # it existed: the job is listed by id from now on
    assert reopened.get_live("k")["job_id"] == "B3"  # bob's stays the key's job
    assert {job["job_id"] for job in open_jobs(read_ledger(path))} == {"A1", "B3"}
    assert totals(read_ledger(path))["unresolved"] == []


def test_a_job_left_for_other_shots_still_stops_another_account(tmp_path):
    """Only going on as another account (switch_account) settles the account check for a job; a
    job the run went on without for another reason (other shots) still stops a rerun as bob."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, "alice")
    with SpoolService(spool):
        JobEngine(SpoolProvider(spool=spool, account="alice"), run, switch_shots=True, **FAST).run(
            STEP, 200, scope="train-3"
        )
    assert [r["why"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "left"] == [
        "other shots (switch_shots)"
    ]
    with pytest.raises(ValueError, match=f"another account made .*{job_id}"):
        JobEngine(SpoolProvider(spool=spool, account="bob"), run, **FAST)


def test_a_job_seen_under_rotated_credentials_is_this_accounts_from_then_on(tmp_path):
    """After switch_account re-attached to a job the new credentials see, a rerun with the same
    credentials that finds it still open (the run was cut off again) is not refused for it."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, "alice")
    (spool / f"{job_id}.account").unlink()  # the service shows it to every account of the user
    rotated = SpoolProvider(spool=spool, account="alice-rotated")
    engine = JobEngine(rotated, run, switch_account=True, deadline=1.0, **FAST)
    with pytest.raises(TimeoutError):  # re-attached, and cut off again while it queues
        engine.run(STEP, 100, scope="train-3")
    engine.close()
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert [(j["job_id"], j["left"]) for j in open_jobs(records)] == [(job_id, False)]
    with SpoolService(spool) as service:
        JobEngine(SpoolProvider(spool=spool, account="alice-rotated"), run, **FAST).run(STEP, 100, scope="train-3")
        assert [s["job_id"] for s in service.drain()] == [job_id]  # re-attached again: nothing paid again


def test_another_accounts_attempts_do_not_use_up_this_accounts_in_a_later_process(tmp_path):
    """Bob goes on without Alice's job (switch_account); his own job is cut off, then lost by the
    service. In Bob's next process his attempt budget still counts only his own attempts."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    alices = _left_open(spool, run, "alice")
    bob = dict(switch_account=True, max_attempts=2, **FAST)
    engine = JobEngine(SpoolProvider(spool=spool, account="bob"), run, deadline=1.0, **bob)
    with pytest.raises(TimeoutError):
        engine.run(STEP, 100, scope="train-3")
    engine.close()
    bobs = [r["job_id"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "submitted"][-1]
    (spool / f"{bobs}.job.json").unlink()  # the service forgot Bob's job: it is submitted again
    with SpoolService(spool) as service:
        JobEngine(SpoolProvider(spool=spool, account="bob"), run, **bob).run(STEP, 100, scope="train-3")
        served = [s["job_id"] for s in service.drain()]
    assert alices in served and len(served) == 2  # Alice's (billed to her) and Bob's second
    attempts = [r["attempt"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]
    assert attempts == [1, 2, 3]  # Alice's one, then Bob's two: within Bob's max_attempts of 2


def test_the_attempts_another_account_made_are_counted_per_account(tmp_path):
    """(A job the account turned out to see counts as its own attempt: no extra attempt for it.)"""
    from qpeft.jobs.ledger import Ledger

    alice, bob, rotated = (account_digest(a) for a in ("alice", "bob", "alice-rotated"))
    ledger = Ledger(tmp_path / "ledger.jsonl")
    job = dict(key="k", tag="k.3", job_id="j3", provider="local", backend="torch", circuits=1, shots=100)
    ledger.append("submitted", attempt=3, account=alice, **job)
    for each in (ledger, Ledger(tmp_path / "ledger.jsonl")):
        assert [each.foreign_attempts("k", a) for a in (alice, bob, rotated, None)] == [0, 1, 1, 0]
        assert each.foreign_attempts("k", bob, after=3) == 0  # (before a finished job's attempt: not counted)
    ledger.append("reattached", key="k", tag="k.3", job_id="j3", account=rotated)
    for each in (ledger, Ledger(tmp_path / "ledger.jsonl")):
        assert [each.foreign_attempts("k", a) for a in (alice, bob, rotated)] == [0, 1, 0]
        assert each.live()["k"]["account"] == alice and each.live()["k"]["seen_by"] == [rotated]


def test_a_detour_by_another_account_gives_the_first_no_extra_attempt(tmp_path):
    """Bob starts with switch_account (leaving Alice's job) and runs nothing; Alice's job is then
    lost. Alice's rerun has her own max_attempts of 1, already used: it stops, paying nothing."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, "alice")
    JobEngine(SpoolProvider(spool=spool, account="bob"), run, switch_account=True, **FAST).close()
    (spool / f"{job_id}.job.json").unlink()  # the service lost Alice's job
    with SpoolService(spool) as service, pytest.raises(JobFailedError):
        JobEngine(SpoolProvider(spool=spool, account="alice"), run, max_attempts=1, **FAST).run(STEP, 100, "train-3")
    assert service.drain() == []


def test_the_first_account_re_attaches_to_its_own_job_after_another_accounts_was_lost(tmp_path):
    """Alice's job is open; Bob (switch_account) submitted the key anew and his job was lost.
    Alice's rerun re-attaches to her own job, which still runs, instead of paying again."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    alices = _left_open(spool, run, "alice")
    bob = JobEngine(SpoolProvider(spool=spool, account="bob"), run, switch_account=True, deadline=1.0, **FAST)
    with pytest.raises(TimeoutError):
        bob.run(STEP, 100, scope="train-3")
    bob.close()
    bobs = [r["job_id"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "submitted"][-1]
    (spool / f"{bobs}.job.json").unlink()
    (report,) = [r for r in check_open(SpoolProvider(spool=spool, account="bob"), run) if r["job_id"] == bobs]
    assert report["recorded"] == "lost"
    with SpoolService(spool) as service:
        JobEngine(SpoolProvider(spool=spool, account="alice"), run, max_attempts=3, **FAST).run(STEP, 100, "train-3")
        assert [s["job_id"] for s in service.drain()] == [alices]  # her own job: nothing paid again
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert [r["job_id"] for r in records if r["event"] == "submitted"] == [alices, bobs]


def test_the_account_that_made_a_job_still_sees_it_after_rotated_credentials_re_attached(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    job_id = _left_open(spool, run, "alice")
    (spool / f"{job_id}.account").unlink()  # the service shows it to every account of the user
    engine = JobEngine(
        SpoolProvider(spool=spool, account="alice-rotated"), run, switch_account=True, deadline=1.0, **FAST
    )
    with pytest.raises(TimeoutError):
        engine.run(STEP, 100, scope="train-3")
    engine.close()
    (report,) = check_open(SpoolProvider(spool=spool, account="alice"), run)  # neither refused nor skipped
    assert report["state"] == "queued"
    with SpoolService(spool) as service:
        JobEngine(SpoolProvider(spool=spool, account="alice"), run, **FAST).run(STEP, 100, scope="train-3")
        assert [s["job_id"] for s in service.drain()] == [job_id]


def test_another_accounts_finished_job_is_not_refetched_as_gone_while_this_accounts_own_runs(tmp_path):
    """Bob's job of the key finished; Alice's older one (which Bob went on without) ran too. With
    the results cache compacted, Alice's rerun takes her own job's results; asking for Bob's would
    read it as gone, and that `gone` would make Bob's next rerun pay for it again."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    alices = _left_open(spool, run, "alice")
    with SpoolService(spool) as service:
        bob = JobEngine(SpoolProvider(spool=spool, account="bob"), run, switch_account=True, **FAST)
        bob.run(STEP, 100, scope="train-3")
        bob.close()
        assert len(service.drain()) == 2
        for path in (run / "jobs" / "results").rglob("*"):  # compacted away
            if path.is_file():
                path.unlink()
        JobEngine(SpoolProvider(spool=spool, account="alice"), run, **FAST).run(STEP, 100, scope="train-3")
        assert len(service.drain()) == 2  # nothing paid again
    events = [(r["event"], r.get("job_id")) for r in read_ledger(run / "jobs" / "ledger.jsonl")]
    assert ("done", alices) in events and not [e for e in events if e[0] == "gone"]


def _cut_off(spool, run, account, shots=100, **options) -> str:
    """A run as ``account`` whose step's job stays queued past its deadline; its job's id."""
    engine = JobEngine(SpoolProvider(spool=spool, account=account), run, deadline=1.0, **FAST, **options)
    with pytest.raises(TimeoutError):
        engine.run(STEP, shots, scope="train-3")
    engine.close()
    return [r["job_id"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "submitted"][-1]


def _forgets_after_one_answer(spool, job_id):
    """The spool's client, where the service answers once for ``job_id`` (queued), then purges it
    (a job lost while a run polls it)."""

    class Forgets(SpoolProvider):
        answered = 0

        def status(self, asked):
            if asked == job_id:
                Forgets.answered += 1
                if Forgets.answered > 1:
                    (spool / f"{job_id}.job.json").unlink(missing_ok=True)
            return super().status(asked)

    return Forgets(spool=spool, account="alice")


def test_an_own_older_job_comes_before_a_newer_one_of_another_account(tmp_path):
    """Alice's job is open; another digest (which does not see it) submitted the key anew. Alice's
    rerun re-attaches to her own job, which may still run, and pays for nothing new (the other
    digest's job runs on for that account)."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    alices = _left_open(spool, run, "alice")
    newer = _cut_off(spool, run, "alice2", switch_account=True)
    (spool / f"{newer}.account").unlink()  # Alice would see it too
    with SpoolService(spool) as service:
        JobEngine(SpoolProvider(spool=spool, account="alice"), run, switch_account=True, max_attempts=2, **FAST).run(
            STEP, 100, scope="train-3"
        )
        assert sorted(s["job_id"] for s in service.drain()) == sorted([alices, newer])  # nothing new
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert ("done", alices) in [(r["event"], r.get("job_id")) for r in records]
    assert len([r for r in records if r["event"] == "submitted"]) == 2


def test_a_job_seen_after_the_budget_was_counted_is_this_accounts_attempt(tmp_path):
    """Alice's first job was lost; another digest's job, which she sees, is her second attempt:
    with max_attempts 2, its loss ends the key, paying nothing more."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    first = _left_open(spool, run, "alice")
    (spool / f"{first}.job.json").unlink()
    assert [r["recorded"] for r in check_open(SpoolProvider(spool=spool, account="alice"), run)] == ["lost"]
    seen = _cut_off(spool, run, "alice2")
    (spool / f"{seen}.account").unlink()
    with SpoolService(spool) as service, pytest.raises(JobFailedError):
        provider = _forgets_after_one_answer(spool, seen)
        JobEngine(provider, run, switch_account=True, max_attempts=2, **FAST).run(STEP, 100, scope="train-3")
    assert service.drain() == []


def test_other_shots_are_refused_for_an_own_older_job_behind_another_accounts(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    alices = _left_open(spool, run, "alice")
    _cut_off(spool, run, "bob", switch_account=True)  # leaves Alice's, submits his own
    _cut_off(spool, run, "alice", switch_account=True)  # leaves Bob's, re-attaches to her own
    assert ("reattached", alices) in [(r["event"], r.get("job_id")) for r in read_ledger(run / "jobs" / "ledger.jsonl")]
    with pytest.raises(ValueError, match="other shots"):
        JobEngine(SpoolProvider(spool=spool, account="alice"), run, **FAST).run(STEP, 200, scope="train-3")


def test_another_accounts_finished_job_missing_from_the_cache_is_refused_not_taken_for_gone(tmp_path):
    """Alice's step finished; its results were compacted away. Bob, who may not see her job, would
    take it for gone (and Alice's own refetch would then pay again): refused; with switch_account
    Bob pays for the step as his, and Alice's job is not marked gone."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    spool.mkdir()
    with SpoolService(spool) as service:
        JobEngine(SpoolProvider(spool=spool, account="alice"), run, **FAST).run(STEP, 100, scope="train-3")
        assert len(service.drain()) == 1
        for path in (run / "jobs" / "results").rglob("*"):
            if path.is_file():
                path.unlink()
        with pytest.raises(ValueError, match="switch_account"):
            JobEngine(SpoolProvider(spool=spool, account="bob"), run, **FAST).run(STEP, 100, scope="train-3")
        assert len(service.drain()) == 1
        JobEngine(SpoolProvider(spool=spool, account="bob"), run, switch_account=True, **FAST).run(STEP, 100, "train-3")
        assert len(service.drain()) == 2
    assert "gone" not in [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")]
