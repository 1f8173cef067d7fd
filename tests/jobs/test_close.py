"""A job engine lets go of its run directory: at close(), at the end of a `with` block, when
its last reference is dropped (no garbage collection needed), and when training or evaluation
through a quantum backend ends, so that `qpeft jobs RUN --compact-results` can run in the same
process. The finished jobs' results land before it lets go, and a closed engine runs nothing."""

import gc
import logging
import threading

import numpy as np
import pytest
from open_files import open_files
from standins import ScriptedProvider
from tiny_runs import tiny_run_config

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs import engine as engine_module
from qpeft.jobs.cache import CacheInUse, exclusive_lock
from qpeft.jobs.distributed import RankZeroEngine
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.step import StepRunner
from qpeft.quantum.circuit import Circuit, Weight
from qpeft.testing import tiny_model_dir

FAST = dict(poll_interval=0.001, max_poll_interval=0.004, progress=False)
NO_FAULTS = dict(transient=0, throttle=0, hang=0, slow=0, failed=0, lost=0)
RY = Circuit(1).add("RY", [0], Weight(0))
CIRCUITS = [BoundCircuit(RY, (t,)) for t in (0.1, 0.2, 0.3)]


def _submitted(run_dir) -> int:
    return sum(r["event"] == "submitted" for r in read_ledger(run_dir / "jobs" / "ledger.jsonl"))


def _lock_is_free(run_dir) -> bool:
    try:
        exclusive_lock(run_dir / "jobs" / "results").close()
    except CacheInUse:
        return False
    return True


def _pending_failed_write(engine: JobEngine) -> None:
    """A finished job's write that fails (a full disk), still pending when the engine is closed."""

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    engine._writer._writes.append(engine._writer._pool.submit(full_disk))


@pytest.fixture
def no_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_dropped_engine_lets_go_at_once_without_a_garbage_collection(tmp_path, no_gc):
    engine = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, **FAST)
    engine.run(CIRCUITS, 100, scope="s")
    assert not _lock_is_free(tmp_path)  # (the lock is real while the engine lives)
    del engine
    assert _lock_is_free(tmp_path)


def test_with_block_and_close_land_the_results_and_let_go(tmp_path):
    provider = ScriptedProvider(max_circuits=2, **NO_FAULTS)
    with JobEngine(provider, tmp_path, **FAST) as engine:
        first = np.stack(engine.run(CIRCUITS, 100, scope="s"))
        assert open_files(tmp_path)  # (the ledger, the cache's files and its lock)
    assert _lock_is_free(tmp_path)  # (while `engine` is still referenced here)
    assert open_files(tmp_path) == []  # the ledger and the cache's data and index files too
    with pytest.raises(RuntimeError, match="closed; make a new one"):
        engine.run(CIRCUITS, 100, scope="s")
    engine.close()  # idempotent
    jobs = _submitted(tmp_path)
    again = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, **FAST)
    np.testing.assert_array_equal(np.stack(again.run(CIRCUITS, 100, scope="s")), first)
    assert _submitted(tmp_path) == jobs == 2  # served from the cache the closed engine wrote
    again.close()
    assert _lock_is_free(tmp_path)


def test_a_failed_write_is_raised_by_close_and_only_logged_while_another_error_is_on_its_way(tmp_path, caplog):
    engine = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, **FAST)
    engine.run(CIRCUITS[:1], 100, scope="a")
    _pending_failed_write(engine)
    with pytest.raises(OSError, match="No space left"):
        engine.close()
    assert _lock_is_free(tmp_path)  # let go all the same

    other = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, **FAST)
    _pending_failed_write(other)
    with caplog.at_level(logging.ERROR, logger=engine_module.logger.name):
        with pytest.raises(KeyboardInterrupt), other:
            raise KeyboardInterrupt
    assert "could not be written" in caplog.text and "No space left" in caplog.text
    assert _lock_is_free(tmp_path)


def test_training_and_evaluation_through_a_quantum_backend_let_go_of_the_run(tmp_path, no_gc):
    from qpeft.cli import main
    from qpeft.train import train

    out = tmp_path / "run"
    config = tiny_run_config(
        tiny_model_dir(tmp_path / "tiny"),
        out,
        steps=2,
        quantum_backend="local:shots",
        shots=200,
        quantum_options={"poll_interval": 0.001},
    )
    assert train(config)["finished"]
    assert _lock_is_free(out)
    assert main(["jobs", str(out), "--compact-results", "1"]) == 0

    code = main(
        [
            "eval",
            "--adapter",
            str(out / "adapter"),
            "--data",
            "arithmetic:1",
            "--examples",
            "2",
            "--loss-only",
            "--quantum-backend",
            "local:shots",
            "--shots",
            "200",
        ]
    )
    assert code == 0
    assert _lock_is_free(out)


def test_a_step_runner_closes_its_engine_and_an_interrupt_goes_through(tmp_path, caplog):
    engine = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, **FAST)
    _pending_failed_write(engine)
    with caplog.at_level(logging.ERROR, logger=engine_module.logger.name):
        with pytest.raises(KeyboardInterrupt), StepRunner(engine, 100, "parameter_shift"):
            raise KeyboardInterrupt  # (Ctrl-C in training: the failed write is logged, not raised instead)
    assert "No space left" in caplog.text
    assert _lock_is_free(tmp_path)


def test_under_torchrun_rank_0_closes_its_engine_and_the_other_ranks_have_none(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # (what torchrun sets; nothing here talks to the other rank)
    monkeypatch.setenv("RANK", "1")
    with StepRunner(RankZeroEngine(None), 100, "parameter_shift"):
        pass  # rank 1 has no engine: nothing to let go
    monkeypatch.setenv("RANK", "0")
    engine = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, **FAST)
    with StepRunner(RankZeroEngine(engine), 100, "parameter_shift"):
        assert not _lock_is_free(tmp_path)
    assert _lock_is_free(tmp_path)


class _HeldAtSubmit(ScriptedProvider):
    """Holds the first submission until the test lets it go (the run is then in progress)."""

    def __init__(self):
        super().__init__(max_circuits=2, **NO_FAULTS)
        self.entered, self.go = threading.Event(), threading.Event()

    def submit(self, circuits, shots, tag):
        self.entered.set()
        assert self.go.wait(30), "the test never let the submission go"
        return super().submit(circuits, shots, tag)


def test_close_while_another_thread_runs_refuses_and_keeps_the_run_directory_locked(tmp_path, caplog):
    provider = _HeldAtSubmit()
    engine = JobEngine(provider, tmp_path, **FAST)
    results = []
    worker = threading.Thread(target=lambda: results.append(engine.run(CIRCUITS, 100, scope="s")))
    worker.start()
    try:
        assert provider.entered.wait(30)
        with pytest.raises(RuntimeError, match=r"close\(\) was called while run\(\) or its jobs are in progress"):
            engine.close()
        assert not _lock_is_free(tmp_path)  # (a compaction now would race the run's writes)
        with caplog.at_level(logging.ERROR, logger=engine_module.logger.name):
            engine.close(raise_errors=False)  # (as `with` does while another error is on its way)
        assert "the engine stays open" in caplog.text
        assert not _lock_is_free(tmp_path)
    finally:
        provider.go.set()
        worker.join(30)
    assert len(results[0]) == len(CIRCUITS)  # the run finished and wrote its jobs
    engine.close()
    assert _lock_is_free(tmp_path)
    again = JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, **FAST)
    with again:
        np.testing.assert_array_equal(np.stack(again.run(CIRCUITS, 100, scope="s")), np.stack(results[0]))
    assert _submitted(tmp_path) == 2  # all served from what the first engine wrote


class _InterruptedAtSecondSubmit(ScriptedProvider):
    """Ctrl-C during the second submission (the first job has finished by then)."""

    def __init__(self):
        super().__init__(max_circuits=2, **NO_FAULTS)
        self.submits = 0

    def submit(self, circuits, shots, tag):
        self.submits += 1
        if self.submits == 2:
            raise KeyboardInterrupt
        return super().submit(circuits, shots, tag)


def test_a_run_that_raises_is_no_longer_in_progress_and_the_with_block_lets_go(tmp_path, caplog):
    """(found in review: a run counted as in progress until it returned normally would make every
    later close() refuse, and a `with` block whose run raised would keep the run directory locked)"""
    with caplog.at_level(logging.ERROR, logger=engine_module.logger.name):
        with pytest.raises(KeyboardInterrupt), JobEngine(_InterruptedAtSecondSubmit(), tmp_path, **FAST) as engine:
            engine.run(CIRCUITS, 100, scope="s")
    assert "stays open" not in caplog.text
    assert _lock_is_free(tmp_path)
    engine = JobEngine(_InterruptedAtSecondSubmit(), tmp_path, **FAST)
    with pytest.raises(KeyboardInterrupt):
        engine.run(CIRCUITS, 100, scope="t")
    engine.close()  # (raises RuntimeError where the failed run still counted)
    assert _lock_is_free(tmp_path)
    jobs = _submitted(tmp_path)
    # (the interrupted submission is settled by its tag: a short submit_timeout, nothing in flight)
    with JobEngine(ScriptedProvider(max_circuits=2, **NO_FAULTS), tmp_path, submit_timeout=0.01, **FAST) as again:
        again.run(CIRCUITS, 100, scope="s")
    assert _submitted(tmp_path) == jobs + 1  # the job finished before the interrupt was kept
