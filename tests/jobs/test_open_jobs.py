"""A rerun re-attaches to the jobs an earlier process left open, step by step; when it cannot (it
asks for other shots, or the step's circuits or job split changed), the open jobs are not silently
orphaned: other shots are refused before anything is paid, unless ``switch_shots`` says to go on,
and an open job its step did not use is named in a warning. The real engine runs against the spool
service in its own process (the stand-in for a remote service that cannot be reached from here),
which counts the jobs it ran."""

import logging

import pytest
from spoolservice import SpoolService

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.spool import SpoolProvider
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, progress=False)
STEP = [BoundCircuit(RY, (t,)) for t in (0.1, 0.2, 0.3)]


def _left_open(spool, run, shots=100, circuits=STEP, scope="step-3", **provider) -> list[str]:
    """A first process whose step's jobs stay queued (the service takes none) past its deadline;
    the ids of the jobs it leaves open."""
    spool.mkdir(parents=True, exist_ok=True)
    engine = JobEngine(SpoolProvider(spool=spool, **provider), run, deadline=1.0, **FAST)
    with pytest.raises(TimeoutError):
        engine.run(circuits, shots, scope=scope)
    engine.close()
    return [r["job_id"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]


def test_a_rerun_with_other_shots_is_refused_before_it_pays(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, shots=100)
    with SpoolService(spool) as service:
        engine = JobEngine(SpoolProvider(spool=spool), run, **FAST)
        with pytest.raises(
            ValueError, match=f"open for step-3 made with shots=100 \\({job_id}\\).*shots=200.*switch_shots"
        ):
            engine.run(STEP, 200, scope="step-3")
        # nothing submitted: the service ran only the job that was open (once it was back up)
        assert [s["job_id"] for s in service.drain()] == [job_id]
        # the same command with the run's shots re-attaches and uses its results: nothing paid again
        engine.run(STEP, 100, scope="step-3")
        assert [s["job_id"] for s in service.drain()] == [job_id]
    assert [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")].count("intent") == 1


def test_switch_shots_goes_on_and_names_the_jobs_it_leaves(tmp_path, caplog):
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, shots=100)
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        engine = JobEngine(SpoolProvider(spool=spool), run, switch_shots=True, **FAST)
        engine.run(STEP, 200, scope="step-3")
        engine.close()
        served = service.drain()
    assert len(served) == 2  # the new step's job, and the old one the service still had queued
    assert f"made with shots=100 ({job_id})" in caplog.text and "switch_shots" in caplog.text
    assert "not used by their step" not in caplog.text  # named once, not again at close


def test_other_shots_in_another_step_are_not_refused(tmp_path):
    """An open job belongs to its step: a call of another scope (an evaluation with its own shots)
    does not touch it, and the step re-attaches to it later in the same process."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    _left_open(spool, run, shots=100)
    with SpoolService(spool) as service:
        engine = JobEngine(SpoolProvider(spool=spool), run, **FAST)
        engine.run([BoundCircuit(RY, (0.9,))], 500, scope="eval-0")
        engine.run(STEP, 100, scope="step-3")
        assert len(service.drain()) == 2  # the evaluation's job and the open one: nothing paid twice


def test_an_open_job_its_step_did_not_use_is_named(tmp_path, caplog):
    """The job split changed (max_circuits): the step's jobs have other keys, the old one is left
    open. Nothing forbids that (the rerun's jobs are what it asked for), but it is said, with the id."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, max_circuits=4)
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        engine = JobEngine(SpoolProvider(spool=spool, max_circuits=2), run, **FAST)
        engine.run(STEP, 100, scope="step-3")
        assert "not used by their step" not in caplog.text  # still in its step: more calls may use it
        engine.run(STEP[:1], 100, scope="step-4")  # the run has left step 3
        assert f"not used by their step (step-3: {job_id})" in caplog.text
        engine.close()
        assert caplog.text.count(job_id) == 1
        service.drain()


def test_close_names_an_unused_open_job_of_the_last_step(tmp_path, caplog):
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, max_circuits=4)
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        with JobEngine(SpoolProvider(spool=spool, max_circuits=2), run, **FAST) as engine:
            engine.run(STEP, 100, scope="step-3")
        assert f"(step-3: {job_id})" in caplog.text
        service.drain()


def test_a_rerun_that_re_attaches_warns_of_nothing(tmp_path, caplog):
    spool, run = tmp_path / "spool", tmp_path / "run"
    _left_open(spool, run)
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        with JobEngine(SpoolProvider(spool=spool), run, **FAST) as engine:
            engine.run(STEP, 100, scope="step-3")
            engine.run(STEP[:1], 100, scope="step-4")
        assert len(service.drain()) == 2
    assert "left open" not in caplog.text and "not used" not in caplog.text
