"""A rerun re-attaches to the jobs an earlier process left open, step by step; when it cannot (it
asks for other shots, or the step's circuits or job split changed), the open jobs are not silently
orphaned: other shots are refused before anything is paid, unless ``switch_shots`` says to go on,
and an open job its step did not use is named in a warning. The real engine runs against the spool
service in its own process (the stand-in for a remote service that cannot be reached from here),
which counts the jobs it ran."""

import json
import logging
import subprocess
import sys

import pytest
from spoolservice import ENV, SpoolService

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.spool import SpoolProvider
from qpeft.jobs.summary import totals
from qpeft.quantum.circuit import Circuit, Weight
from qpeft.testing import tiny_model_dir

RY = Circuit(1).add("RY", [0], Weight(0))
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, progress=False)
STEP = [BoundCircuit(RY, (t,)) for t in (0.1, 0.2, 0.3)]


def _left_open(spool, run, shots=100, circuits=STEP, scope="train-3", **provider) -> list[str]:
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
        with pytest.raises(ValueError, match=f"than this call's shots=200 \\(shots=100: {job_id}; for train-3\\)"):
            engine.run(STEP, 200, scope="train-3")
        # nothing submitted: the service ran only the job that was open (once it was back up)
        assert [s["job_id"] for s in service.drain()] == [job_id]
        # the same command with the run's shots re-attaches and uses its results: nothing paid again
        engine.run(STEP, 100, scope="train-3")
        assert [s["job_id"] for s in service.drain()] == [job_id]
    assert [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")].count("intent") == 1


def test_switch_shots_goes_on_and_names_the_jobs_it_leaves(tmp_path, caplog):
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, shots=100)
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        engine = JobEngine(SpoolProvider(spool=spool), run, switch_shots=True, **FAST)
        engine.run(STEP, 200, scope="train-3")
        engine.close()
        served = service.drain()
    assert len(served) == 2  # the new step's job, and the old one the service still had queued
    assert f"(shots=100: {job_id}; for train-3)" in caplog.text and "switch_shots" in caplog.text
    assert "not used by their step" not in caplog.text  # named once, not again at close
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert [r["job_id"] for r in records if r["event"] == "left"] == [job_id]
    assert totals(records)["left_open"] == 1
    # the run went on without it, as recorded: a later rerun with the new shots is not refused for it
    with SpoolService(spool) as service:
        JobEngine(SpoolProvider(spool=spool), run, **FAST).run(STEP[:2], 200, scope="train-4")
        assert len(service.drain()) == 3


def test_a_resume_from_an_earlier_checkpoint_with_other_shots_is_refused_before_the_steps_between(tmp_path):
    """The crash left step 3's jobs open; the checkpoint is at step 1, so the rerun's first calls
    are steps 1 and 2. With other shots they must not be paid for before step 3 is refused."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, shots=100, scope="train-3/m1")  # (module batching: a sub-scope)
    with SpoolService(spool) as service:
        engine = JobEngine(SpoolProvider(spool=spool), run, **FAST)
        with pytest.raises(ValueError, match=f"shots=100: {job_id}; for train-3/m1"):
            engine.run(STEP[:1], 200, scope="train-1/m0")
        assert [s["job_id"] for s in service.drain()] == [job_id]  # only the job that was open


def test_a_close_on_an_error_names_no_job_as_unused(tmp_path, caplog):
    """A call interrupted between a step's calls: the next rerun re-attaches to the step's other
    jobs, so closing on the way out of the error must not tell the user to cancel them."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    _left_open(spool, run, max_circuits=4)
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        with pytest.raises(KeyError), JobEngine(SpoolProvider(spool=spool, max_circuits=4), run, **FAST) as engine:
            engine.run(STEP[:1], 100, scope="train-3")  # another call of the step, not the open job's
            raise KeyError("interrupted")
        service.drain()
    assert "not used by their step" not in caplog.text


def test_other_shots_in_another_step_are_not_refused(tmp_path):
    """An open job belongs to its step: a call of another scope (an evaluation with its own shots)
    does not touch it, and the step re-attaches to it later in the same process."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    _left_open(spool, run, shots=100)
    with SpoolService(spool) as service:
        engine = JobEngine(SpoolProvider(spool=spool), run, **FAST)
        engine.run([BoundCircuit(RY, (0.9,))], 500, scope="eval-0")
        engine.run(STEP, 100, scope="train-3")
        assert len(service.drain()) == 2  # the evaluation's job and the open one: nothing paid twice


def test_an_open_job_its_step_did_not_use_is_named(tmp_path, caplog):
    """The job split changed (max_circuits): the step's jobs have other keys, the old one is left
    open. Nothing forbids that (the rerun's jobs are what it asked for), but it is said, with the id."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, max_circuits=4)
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        engine = JobEngine(SpoolProvider(spool=spool, max_circuits=2), run, **FAST)
        engine.run(STEP, 100, scope="train-3")
        assert "not used by their step" not in caplog.text  # still in its step: more calls may use it
        engine.run(STEP[:1], 100, scope="train-4")  # the run has left step 3
        assert f"not used by their step (train-3: {job_id})" in caplog.text
        engine.close()
        assert caplog.text.count(job_id) == 1
        service.drain()
        # recorded: the next process neither warns nor refuses for it again (it would with other shots)
        caplog.clear()
        with JobEngine(SpoolProvider(spool=spool, max_circuits=2), run, **FAST) as again:
            again.run(STEP[:1], 300, scope="train-3")
        service.drain()
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert [(r["job_id"], r["why"]) for r in records if r["event"] == "left"] == [(job_id, "not used by its step")]
    assert job_id not in caplog.text


def test_close_names_an_unused_open_job_of_the_last_step(tmp_path, caplog):
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, max_circuits=4)
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        with JobEngine(SpoolProvider(spool=spool, max_circuits=2), run, **FAST) as engine:
            engine.run(STEP, 100, scope="train-3")
        assert f"(train-3: {job_id})" in caplog.text
        service.drain()


def test_a_rerun_that_re_attaches_warns_of_nothing(tmp_path, caplog):
    spool, run = tmp_path / "spool", tmp_path / "run"
    _left_open(spool, run)
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING):
        with JobEngine(SpoolProvider(spool=spool), run, **FAST) as engine:
            engine.run(STEP, 100, scope="train-3")
            engine.run(STEP[:1], 100, scope="train-4")
        assert len(service.drain()) == 2
    assert "left open" not in caplog.text and "not used" not in caplog.text


def test_the_command_line_stops_a_rerun_with_other_shots_and_says_how_to_go_on(tmp_path):
    """`qpeft train` end to end: a run whose step's jobs stay queued stops at its deadline (exit 3,
    jobs open); the command again with other `--shots` (and --overwrite, which keeps the ledger)
    exits 2 with the jobs' ids and both ways on, and submits nothing; the same command with the
    run's shots re-attaches and finishes."""
    tiny = str(tiny_model_dir(tmp_path / "tiny"))
    spool, out = tmp_path / "spool", tmp_path / "run"
    spool.mkdir()

    def train(shots: int, *flags: str) -> subprocess.CompletedProcess:
        options = {"spool": str(spool), "poll_interval": 0.01, "max_poll_interval": 0.05, "deadline": 3.0}
        cmd = [sys.executable, "-m", "qpeft.cli", "train", "--model", tiny, "--data", "arithmetic:1"]
        cmd += ["--method", "qtha-weights", "--adapter", json.dumps({"r": 4, "bond_dim": 2, "qnn_layers": 1})]
        cmd += ["--out", str(out), "--steps", "1", "--batch-size", "2", "--max-examples", "4", "--max-length", "48"]
        cmd += ["--eval-examples", "1", "--no-progress", "--quantum-backend", "local:shots", "--shots", str(shots)]
        cmd += ["--quantum-options", json.dumps(options), *flags]
        return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)

    first = train(200)  # no service yet: the step's jobs stay queued
    assert first.returncode == 3, first.stderr
    ids = [r["job_id"] for r in read_ledger(out / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]
    assert ids
    other = train(300, "--overwrite")  # (other settings: the run directory asks for it; the ledger stays)
    assert other.returncode == 2, other.stderr
    assert "than this call's shots=300 (shots=200: " in other.stderr and "switch_shots" in other.stderr
    assert all(i in other.stderr for i in ids)
    assert sorted(p.name for p in spool.glob("*.job.json")) == sorted(f"{i}.job.json" for i in ids)  # none new
    with SpoolService(spool) as service:
        again = train(200, "--overwrite")
        assert again.returncode == 0, again.stderr
        served = {s["job_id"] for s in service.drain()}
    records = read_ledger(out / "jobs" / "ledger.jsonl")
    step = sorted(r["job_id"] for r in records if r["event"] == "submitted" and r["scope"].startswith("train"))
    assert step == sorted(ids) and set(ids) <= served  # the step's open jobs ran once; no step job paid again


def test_a_crash_in_an_evaluation_stops_a_rerun_with_other_shots_at_its_first_step(tmp_path):
    """A training run's periodic evaluation (``eval-step-N``) left its jobs open: a rerun with other
    shots resumes from the checkpoint before it, whose first calls are training steps. They belong
    to the same run: refused before paying. ``qpeft eval`` of an adapter (``eval-<adapter>``) with
    its own shots is another call: it goes on."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, shots=100, scope="eval-step-4")
    with SpoolService(spool) as service:
        engine = JobEngine(SpoolProvider(spool=spool), run, **FAST)
        with pytest.raises(ValueError, match=f"shots=100: {job_id}; for eval-step-4"):
            engine.run(STEP[:2], 500, scope="train-2")
        assert [s["job_id"] for s in service.drain()] == [job_id]  # only the job that was open
        engine.run(STEP[:1], 500, scope="eval-checkpoint-4")
        assert len(service.drain()) == 2


def test_an_interrupted_calls_own_open_jobs_stop_a_later_call_with_other_shots(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    spool.mkdir()
    engine = JobEngine(SpoolProvider(spool=spool), run, deadline=1.0, **FAST)
    with pytest.raises(TimeoutError):
        engine.run(STEP, 100, scope="train-3")  # no service: the job stays queued
    (job_id,) = [r["job_id"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]
    with pytest.raises(ValueError, match=f"shots=100: {job_id}; for train-3"):
        engine.run(STEP, 200, scope="train-3")
    assert len(list(spool.glob("*.job.json"))) == 1  # nothing new submitted
    engine.close()


def test_a_job_left_behind_then_re_attached_and_left_open_again_still_stops_other_shots(tmp_path):
    """A run went on without a job (``left``), a later run with its shots re-attached to it and
    was interrupted too: the job is that run's open job again, and a rerun with other shots must
    be refused for it, not pass because of the old ``left`` record."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    (job_id,) = _left_open(spool, run, shots=100)
    switching = JobEngine(SpoolProvider(spool=spool), run, switch_shots=True, deadline=1.0, **FAST)
    with pytest.raises(TimeoutError):  # goes on without it (left), and leaves its own job open
        switching.run(STEP[:1], 200, scope="train-2")
    switching.close()
    back = JobEngine(SpoolProvider(spool=spool), run, switch_shots=True, deadline=1.0, **FAST)
    with pytest.raises(TimeoutError):  # the run's shots again: re-attaches to it, interrupted again
        back.run(STEP, 100, scope="train-3")
    back.close()
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert [r["job_id"] for r in records if r["event"] == "reattached"] == [job_id]
    with SpoolService(spool) as service:
        with pytest.raises(ValueError, match=f"shots=100: {job_id}; for train-3"):
            JobEngine(SpoolProvider(spool=spool), run, **FAST).run(STEP, 200, scope="train-3")
        assert len(service.drain()) == 2  # the two open jobs, nothing new
    assert totals(read_ledger(run / "jobs" / "ledger.jsonl"))["left_open"] == 1  # the 200-shot one only


def test_a_record_written_by_hand_without_an_event_does_not_stop_a_run(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "ledger.jsonl").write_text(json.dumps({"note": "moved from the old cluster"}) + "\n")
    JobEngine(SpoolProvider(spool=tmp_path / "spool"), tmp_path, **FAST).close()
    records = read_ledger(tmp_path / "jobs" / "ledger.jsonl")
    assert records == [{"note": "moved from the old cluster"}] and totals(records)["jobs"] == 0  # (qpeft jobs)
