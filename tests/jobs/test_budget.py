"""The spending cap (``max_spend``, ``--max-spend``): in jobs, shots, and an estimated amount in
the provider's currency. The engine submits no job that would take the run past it, says what was
spent and what is left; a rerun with a higher cap continues, and pays for nothing twice. Against
the spool service (its own process; its served.jsonl is the bill), and the Origin stand-in for
an amount in CNY."""

import json

import numpy as np
import pytest
from spoolservice import SpoolService
from standins import StandInQCloudService

from qpeft.jobs import BoundCircuit, JobEngine, Limits
from qpeft.jobs.budget import BudgetExceededError, job_spend
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.spool import SpoolProvider
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
THETAS = np.linspace(0.1, 3.0, 6)
CIRCUITS = [BoundCircuit(RY, (float(t),)) for t in THETAS]  # 3 jobs of 2
EXPECTED = np.stack([np.cos(THETAS / 2) ** 2, np.sin(THETAS / 2) ** 2], axis=1)
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, max_parallel=1, progress=False)


@pytest.mark.parametrize("cap, then", [({"jobs": 2}, {"jobs": 3}), ({"shots": 400}, {"shots": 600})])
def test_the_cap_stops_before_the_job_that_would_pass_it_and_a_higher_cap_continues(tmp_path, cap, then):
    run = tmp_path / "run"
    with SpoolService(tmp_path / "spool") as service:
        engine = JobEngine(SpoolProvider(spool=tmp_path / "spool", max_circuits=2), run, max_spend=cap, **FAST)
        with pytest.raises(BudgetExceededError) as info:
            engine.run(CIRCUITS, 100, scope="s")
        message = str(info.value)
        assert "spent 2 job(s), 400 shots" in message and "left 0" in message and "higher --max-spend" in message
        assert len(service.drain()) == 2  # the third job was never submitted
        records = read_ledger(run / "jobs" / "ledger.jsonl")
        assert sum(r["event"] == "intent" for r in records) == 2  # (refused before anything was recorded)

        rerun = JobEngine(SpoolProvider(spool=tmp_path / "spool", max_circuits=2), run, max_spend=then, **FAST)
        out = rerun.run(CIRCUITS, 100, scope="s")
        served = service.drain()
    assert len(served) == 3 and len({s["tag"].rsplit(".", 1)[0] for s in served}) == 3  # nothing paid twice
    assert np.abs(np.stack(out) - EXPECTED).max() < 0.2  # (100 shots)


def test_the_cap_counts_what_the_whole_ledger_spent(tmp_path):
    """Jobs of earlier runs in the same run directory count (the cap is on the run, not a call)."""
    with SpoolService(tmp_path / "spool") as service:
        provider = SpoolProvider(spool=tmp_path / "spool", max_circuits=2)
        JobEngine(provider, tmp_path, **FAST).run(CIRCUITS[:2], 100, scope="a")  # 1 job, no cap
        with pytest.raises(BudgetExceededError, match="spent 1 job"):
            JobEngine(provider, tmp_path, max_spend={"jobs": 1}, **FAST).run(CIRCUITS[2:4], 100, scope="b")
        assert len(service.drain()) == 1


def test_an_amount_cap_in_the_providers_currency(tmp_path):
    pytest.importorskip("pyqpanda3")
    from qpeft.jobs.origin import OriginProvider

    service = StandInQCloudService()
    provider = OriginProvider(api_key="sk-test-KEY", service=service, job_factory=service.job)
    provider.limits = Limits(max_circuits=2)  # 3 jobs
    one = job_spend("origin", 2, 100).amount  # the plan's high estimate of one job of 2 circuits
    engine = JobEngine(
        provider,
        tmp_path,
        max_spend={"amount": 2.5 * one},
        max_parallel=1,
        poll_interval=0.001,
        max_poll_interval=0.002,
        progress=False,
    )
    with pytest.raises(BudgetExceededError, match=r"~[\d,.]+ CNY.*amount") as info:
        engine.run(CIRCUITS[:6], 100, scope="s")
    assert len(service.submissions) == 2 and f"{2 * one:,.2f} CNY" in str(info.value)


def test_an_amount_cap_counts_what_finished_jobs_reported_where_it_is_more_than_the_estimate(tmp_path):
    """IBM bills the QPU seconds a job used (its metrics' ``quantum_seconds``). A job that ran
    longer than the plan's estimate counts at what it cost, in this run and on a rerun: the cap is
    on what was spent, not on what was expected. One that used less counts its estimate."""
    pytest.importorskip("qiskit_aer")
    from standins import StandInRuntimeService

    from qpeft.jobs.ibm import IBMProvider

    def engine(run, usage_s, cap):
        service = StandInRuntimeService(usage_s=usage_s)
        provider = IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler)
        provider.limits = Limits(max_circuits=2)  # 3 jobs
        return service, JobEngine(provider, run, max_spend={"amount": cap}, **FAST)

    one = job_spend("ibm", 2, 100).amount  # the plan's high estimate of one job: about 7 USD
    ran = 30.0 * 1.60  # a job that ran 30 QPU seconds, at IBM's USD 1.60 per second
    assert ran > 2 * one, "the test shows nothing: one job's real cost is within the estimate of two"
    service, first = engine(tmp_path / "long", 30.0, 1.5 * ran)
    with pytest.raises(BudgetExceededError, match=r"spent 2 job\(s\), 400 shots, ~96.00 USD"):
        first.run(CIRCUITS, 100, scope="s")  # at the estimates, all 3 jobs would fit under the cap
    assert service.submissions == 2
    first.close()
    service, rerun = engine(tmp_path / "long", 1.0, 2.1 * ran)  # the ledger's reported seconds count on a rerun
    with pytest.raises(BudgetExceededError, match=r"spent 2 job\(s\), 400 shots, ~96.00 USD"):
        rerun.run(CIRCUITS[:2], 200, scope="t")
    assert service.submissions == 0
    rerun.close()
    service, cheap = engine(tmp_path / "short", 1.0, 2.5 * one)
    with pytest.raises(BudgetExceededError, match=f"~{2 * one:,.2f} USD"):
        cheap.run(CIRCUITS, 100, scope="s")
    assert service.submissions == 2
    cheap.close()
    service, rerun = engine(tmp_path / "short", 1.0, 2.5 * one)
    with pytest.raises(BudgetExceededError, match=f"~{2 * one:,.2f} USD"):  # (and on a rerun)
        rerun.run(CIRCUITS[:2], 200, scope="t")
    assert service.submissions == 0
    rerun.close()


def test_a_failed_job_counts_at_what_it_used(tmp_path):
    """IBM bills the seconds a job used also when it failed: its ledger record keeps the usage, and
    the cap counts it, in the run and on a rerun."""
    pytest.importorskip("qiskit_aer")
    from standins import StandInRuntimeService

    from qpeft.jobs.budget import spent_in
    from qpeft.jobs.errors import JobFailedError
    from qpeft.jobs.ibm import IBMProvider

    service = StandInRuntimeService(usage_s=30.0)
    provider = IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler)
    service.fail_next = "calibration error"
    engine = JobEngine(provider, tmp_path, max_spend={"amount": 1000}, **FAST)
    with pytest.raises(JobFailedError, match="calibration error"):
        engine.run(CIRCUITS[:2], 100, scope="s")
    assert engine.budget.spent.amount == pytest.approx(30.0 * 1.60)  # not the estimate, about 7 USD
    engine.close()
    records = read_ledger(tmp_path / "jobs" / "ledger.jsonl")
    assert [r["usage"]["quantum_seconds"] for r in records if r["event"] == "failed"] == [30.0]
    assert spent_in(records, "ibm").amount == pytest.approx(30.0 * 1.60)


@pytest.mark.parametrize("parallel", [1, 3])
def test_re_attached_and_refetched_jobs_count_once_at_what_they_used(tmp_path, parallel):
    """Jobs left open by a deadline, re-attached and finished by a rerun, then fetched again by a
    third run after their cached results were deleted: each counts once, at its reported cost.
    (Written by a reviewer, who planted a rerun that skipped re-attached jobs and one that counted
    a refetch again; both fail here.)"""
    pytest.importorskip("qiskit_aer")
    import shutil

    from standins import StandInRuntimeService

    from qpeft.jobs.budget import spent_in
    from qpeft.jobs.ibm import IBMProvider

    def engine(run, **options):
        provider = IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler)
        provider.limits = Limits(max_circuits=2)
        return JobEngine(provider, run, max_spend={"amount": 1000}, **{**FAST, "max_parallel": parallel, **options})

    one = job_spend("ibm", 2, 100).amount
    service = StandInRuntimeService(usage_s=30.0, polls=10**6)  # the jobs stay queued
    run = tmp_path / "run"
    first = engine(run, deadline=1.0)
    with pytest.raises(TimeoutError):
        first.run(CIRCUITS, 100, scope="s")
    first.close()
    n = service.submissions
    for job in service.by_id.values():
        job._polls = 0
    service.polls = 0
    second = engine(run)
    assert second.budget.spent.amount == pytest.approx(n * one)  # open: at their estimates
    second.run(CIRCUITS, 100, scope="s")
    second.close()
    assert second.budget.spent.amount == pytest.approx(3 * 48.0)  # re-attached and new, each at its reported cost
    assert spent_in(read_ledger(run / "jobs" / "ledger.jsonl"), "ibm").amount == pytest.approx(3 * 48.0)
    shutil.rmtree(run / "jobs" / "results")  # fetched again by id: nothing paid, nothing counted again
    third = engine(run)
    third.run(CIRCUITS, 100, scope="s")
    third.close()
    assert third.budget.spent.amount == pytest.approx(3 * 48.0) and service.submissions == 3
    assert spent_in(read_ledger(run / "jobs" / "ledger.jsonl"), "ibm").amount == pytest.approx(3 * 48.0)


def test_bad_caps_are_refused_up_front():
    with pytest.raises(ValueError, match="unknown unit"):
        JobEngine(SpoolProvider(spool="/tmp/unused-spool"), None, max_spend={"dollars": 5})
    with pytest.raises(ValueError, match="no price figure for the local provider"):
        JobEngine(SpoolProvider(spool="/tmp/unused-spool"), None, max_spend={"amount": 5})


def test_the_cap_on_the_command_line(tmp_path, capsys):
    """`qpeft plan --max-spend` says whether the run fits; a bad cap is a one-line error (exit 2)."""
    from qpeft.cli import main
    from qpeft.testing import tiny_model_dir

    tiny = str(tiny_model_dir(tmp_path / "tiny"))
    flags = ["--model", tiny, "--method", "qtha-weights", "--adapter", json.dumps({"r": 4, "bond_dim": 2})]
    flags += ["--quantum-backend", "origin", "--shots", "1000", "--steps", "10", "--diff-method", "spsa"]
    assert main(["plan", *flags, "--max-spend", '{"jobs": 5}', "--json"]) == 0
    assert "needs more than its --max-spend cap allows (jobs)" in json.loads(capsys.readouterr().out)["cap"]
    assert main(["plan", *flags, "--max-spend", '{"jobs": 500}']) == 0
    assert "fits its --max-spend cap" in capsys.readouterr().out
    assert main(["plan", *flags, "--max-spend", '{"jobs": -1}']) == 2
    assert "max_spend` jobs must be a number >= 0" in capsys.readouterr().err
