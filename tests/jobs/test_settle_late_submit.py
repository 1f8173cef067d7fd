"""Settling a submission whose outcome is unknown, against the spool service (a job service in
its own process; its served.jsonl is the bill). After a crash the request in flight reaches the
service only after the restart began: the restarted run waits ``submit_timeout`` after the intent
before it concludes that nothing was created, finds the job by its tag, and pays for it once. In
one process, a rerun waits for the call an earlier run gave up on (or a Ctrl-C cut short), which
may not have sent its request yet; the answer of a call no run waits for is logged with its job id."""

import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from spoolservice import ENV, SpoolService

from qpeft.cli import main
from qpeft.jobs import BoundCircuit, JobEngine, TransientError
from qpeft.jobs.base import SubmissionUnknownError
from qpeft.jobs.calls import Late, late_submit
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.runlock import open_locked, run_key
from qpeft.jobs.spool import SpoolProvider
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
THETAS = np.linspace(0.1, 3.0, 2)
CIRCUITS = [BoundCircuit(RY, (float(t),)) for t in THETAS]
EXPECTED = np.stack([np.cos(THETAS / 2) ** 2, np.sin(THETAS / 2) ** 2], axis=1)  # RY|0>, closed form
SRC = str(Path(__file__).resolve().parents[2] / "src")
FAST = dict(poll_interval=0.01, max_poll_interval=0.05, progress=False)


def _late(run: Path, tag: str) -> Late | None:
    """This process's submit call of ``tag`` in the run directory ``run`` that no run has the answer of."""
    return late_submit(run_key(run / "jobs"), tag)


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
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert [r["event"] for r in records] == ["intent", "unknown", "submitted", "done"]
    assert _late(run, records[0]["tag"]) is None  # (found: forgotten, a rerun does not wait for the call)


def test_a_submit_call_that_answers_is_forgotten(tmp_path):
    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool) as service:
        with JobEngine(SpoolProvider(spool=spool), run, **FAST) as engine:
            engine.run(CIRCUITS, None, scope="s")
        assert len(service.drain()) == 1
    tags = {r["tag"] for r in read_ledger(run / "jobs" / "ledger.jsonl")}
    assert tags and all(_late(run, tag) is None for tag in tags)
    free, _ = open_locked(run / "jobs" / "engine.lock", exclusive=True)  # (no call keeps it locked)
    free.close()


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


class WaitsForItsTurn(SpoolProvider):
    """Its submit call waits (for its turn at an SDK object the run's threads share, say) before
    its request leaves this process: until ``turn`` is set, the service has no job with its tag."""

    def __init__(self, spool, turn: threading.Event):
        super().__init__(spool=spool)
        self.turn = turn

    def submit(self, circuits, shots, tag):
        assert self.turn.wait(30)
        return super().submit(circuits, shots, tag)


class CtrlCWhileItWaits(WaitsForItsTurn):
    """The user presses Ctrl-C while the run waits for the answer of its submit call, which waits
    for its turn (the signal is sent from the call's thread, 0.2 s after it started)."""

    def submit(self, circuits, shots, tag):
        threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
        return super().submit(circuits, shots, tag)


@contextlib.contextmanager
def _ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt also where this process started with SIGINT ignored (a
    background job of a non-interactive shell); no finalizer runs meanwhile (one running when the
    signal lands would swallow it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        signal.signal(signal.SIGINT, previous)


def _give_up_on_the_submission(spool, run, turn) -> str:
    """A run whose submit call gives no answer and is not found by its tag: it stops, the call
    still in flight in this process. Returns the call's tag."""
    first = JobEngine(WaitsForItsTurn(spool, turn), run, submit_timeout=0.1, job_timeout=0.3, **FAST)
    with pytest.raises(SubmissionUnknownError, match="gave no answer"):
        first.run(CIRCUITS, None, scope="s")
    return next(r["tag"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "unknown")


def test_a_rerun_in_the_same_process_waits_for_the_call_it_gave_up_on_not_pays_again(tmp_path, caplog):
    """Looking the tag up is not enough while this process's own call has not sent its request:
    the rerun (after the first run's submit_timeout has long passed) would find nothing, conclude
    that nothing was created and pay again when the old call is sent. It waits for that call."""
    spool, run, turn = tmp_path / "spool", tmp_path / "run", threading.Event()
    with SpoolService(spool) as service:
        try:
            _give_up_on_the_submission(spool, run, turn)
            time.sleep(0.3)  # (well past the intent's submit_timeout)
            threading.Timer(1.0, turn.set).start()  # the call is sent while the rerun is under way
            rerun = JobEngine(WaitsForItsTurn(spool, turn), run, submit_timeout=0.1, job_timeout=20, **FAST)
            out = rerun.run(CIRCUITS, None, scope="s")
        finally:
            turn.set()
        served = service.drain()
    assert len(served) == 1  # the old call's job, used: nothing paid twice
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
    events = [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "unknown", "submitted", "done"]
    assert "answered late" not in caplog.text  # (the rerun recorded it: nothing to do by hand)


def test_the_late_answer_of_a_call_the_run_gave_up_on_is_logged_and_a_rerun_uses_it(tmp_path, caplog, capsys):
    spool, run, turn = tmp_path / "spool", tmp_path / "run", threading.Event()
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING, logger="qpeft.jobs.engine"):
        try:
            tag = _give_up_on_the_submission(spool, run, turn)
        finally:
            turn.set()
        job_id = _late(run, tag).future.result(timeout=30)
        waited = time.monotonic()
        while "answered late" not in caplog.text and time.monotonic() - waited < 10:
            time.sleep(0.01)  # (logged by the call's thread after the answer is set)
        assert f"--resolve {tag} --job-id {job_id}" in caplog.text and "answered late" in caplog.text
        assert main(["jobs", str(run), "--resolve", tag]) == 2  # "created nothing": refused, this process knows better
        assert f"--job-id {job_id}" in capsys.readouterr().err
        out = JobEngine(SpoolProvider(spool=spool), run, **FAST).run(CIRCUITS, None, scope="s")
        served = service.drain()
    assert len(served) == 1 and _late(run, tag) is None  # (settled: forgotten)
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
    records = read_ledger(run / "jobs" / "ledger.jsonl")
    assert [r["event"] for r in records] == ["intent", "unknown", "submitted", "done"]
    assert records[2]["job_id"] == job_id


STUCK = """
import sys, threading
from qpeft.jobs import BoundCircuit, JobEngine, TransientError
from qpeft.jobs.base import SubmissionUnknownError
from qpeft.jobs.spool import SpoolProvider
from qpeft.quantum.circuit import Circuit, Weight

class Stuck(SpoolProvider):
    def submit(self, circuits, shots, tag):
        threading.Event().wait()  # an SDK request without a read timeout whose answer never comes

circuit = BoundCircuit(Circuit(1).add("RY", [0], Weight(0)), (0.5,))
engine = JobEngine(Stuck(spool=sys.argv[1]), sys.argv[2], submit_timeout=0.1, job_timeout=0.3, progress=False)
try:
    engine.run([circuit], None)
except SubmissionUnknownError:
    print("gave up")
"""


def test_a_stuck_submit_call_does_not_keep_the_process_from_exiting(tmp_path):
    """The run gives up on a call that never answers and says so; the process then exits (the
    call's thread does not hold it), leaving the submission `unknown` in the ledger."""
    (tmp_path / "spool").mkdir()
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    script = [sys.executable, "-c", STUCK, str(tmp_path / "spool"), str(tmp_path / "run")]
    done = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "gave up", done.stderr
    events = [r["event"] for r in read_ledger(tmp_path / "run" / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "unknown"]


def test_a_call_a_ctrl_c_cut_short_is_waited_for_by_a_rerun_in_the_same_process(tmp_path, caplog):
    """Ctrl-C while the submit call waits: the call goes on; the ledger has its intent only. A
    rerun in this process (a notebook cell run again) waits for that call instead of finding
    nothing by its tag and paying again when the old call is sent."""
    spool, run, turn = tmp_path / "spool", tmp_path / "run", threading.Event()
    with SpoolService(spool) as service:
        try:
            with _ctrl_c_raises(), pytest.raises(KeyboardInterrupt):
                JobEngine(CtrlCWhileItWaits(spool, turn), run, submit_timeout=5, **FAST).run(CIRCUITS, None, scope="s")
            threading.Timer(1.0, turn.set).start()
            rerun = JobEngine(WaitsForItsTurn(spool, turn), run, submit_timeout=0.1, job_timeout=20, **FAST)
            out = rerun.run(CIRCUITS, None, scope="s")
        finally:
            turn.set()
        served = service.drain()
    assert len(served) == 1
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
    events = [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "submitted", "done"]
    assert "answered late" not in caplog.text  # (the rerun recorded it: nothing to do by hand)


class SearchFails(WaitsForItsTurn):
    """Its job search fails while the run waits for the late answer."""

    def find(self, tag):
        raise RuntimeError("search unavailable")


def test_a_late_answer_is_logged_when_the_wait_for_it_ends_in_an_error(tmp_path, caplog):
    spool, run, turn = tmp_path / "spool", tmp_path / "run", threading.Event()
    with SpoolService(spool), caplog.at_level(logging.WARNING, logger="qpeft.jobs.engine"):
        try:
            engine = JobEngine(SearchFails(spool, turn), run, submit_timeout=0.1, job_timeout=5, **FAST)
            with pytest.raises(RuntimeError, match="search unavailable"):
                engine.run(CIRCUITS, None, scope="s")
        finally:
            turn.set()
        tag = next(r["tag"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "unknown")
        job_id = _late(run, tag).future.result(timeout=30)
        waited = time.monotonic()
        while "answered late" not in caplog.text and time.monotonic() - waited < 10:
            time.sleep(0.01)
    assert f"--resolve {tag} --job-id {job_id}" in caplog.text


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "answered late" in r.getMessage()]


def test_a_late_answer_is_told_once_in_every_order(caplog):
    """The answer of a call no run waits for is logged once, whether it comes before or after the
    run stops waiting, and however often it stops; not when a run waits for it again."""
    caplog.set_level(logging.WARNING, logger="qpeft.jobs.engine")
    come_first = Late("s", "k.1", Future())
    come_first.future.set_result("job-1")
    assert not come_first.give_up()  # it has come: read it, nothing logged
    assert _warnings(caplog) == []
    come_first.abandon()
    come_first.abandon()
    assert len(_warnings(caplog)) == 1 and "job-1" in _warnings(caplog)[0]

    later = Late("s", "k.2", Future())
    assert later.give_up()
    later.abandon()  # (an error on its way after the give-up: stays given up)
    later.future.set_result("job-2")
    assert len(_warnings(caplog)) == 2 and "--resolve k.2 --job-id job-2" in _warnings(caplog)[1]

    waited_again = Late("s", "k.3", Future())
    assert waited_again.give_up()
    waited_again.wait_again()  # a rerun waits for it and records it
    waited_again.future.set_result("job-3")
    assert len(_warnings(caplog)) == 2
    for late in (come_first, later, waited_again):
        late.settle()
        assert late_submit("s", late.tag) is None
    older, newer = Late("s", "k.4", Future()), Late("s", "k.4", Future())  # (a call made again for the same tag)
    older.settle()
    assert late_submit("s", "k.4") is newer  # settling a call forgets that call only
    other = Late("t", "k.4", Future())  # (another run directory's call of the same tag)
    assert late_submit("s", "k.4") is newer and late_submit("t", "k.4") is other
    newer.settle()
    assert late_submit("t", "k.4") is other
    other.settle()


def test_another_process_can_neither_settle_nor_rerun_a_submission_whose_call_is_in_flight_here(tmp_path):
    """The run gave up on the call and its engine closed, but the call's request may not have left
    this process: no console shows the job yet, so a `--resolve TAG` ("not created") or a rerun in
    another process would pay twice. This process keeps the run directory locked until the call
    answers; a rerun here waits for it; then the directory is free again."""
    spool, run, turn = tmp_path / "spool", tmp_path / "run", threading.Event()
    resolve = [sys.executable, "-m", "qpeft.cli", "jobs", str(run), "--resolve"]
    with SpoolService(spool) as service:
        try:
            with JobEngine(WaitsForItsTurn(spool, turn), run, submit_timeout=0.1, job_timeout=0.3, **FAST) as first:
                with pytest.raises(SubmissionUnknownError, match="still in flight in this process") as stop:
                    first.run(CIRCUITS, None, scope="s")
            assert "--resolve" not in str(stop.value)  # (no one can settle it by hand yet)
            tag = next(r["tag"] for r in read_ledger(run / "jobs" / "ledger.jsonl") if r["event"] == "unknown")
            elsewhere = subprocess.run([*resolve, tag], env=ENV, capture_output=True, text=True, timeout=120)
            assert elsewhere.returncode != 0 and "still in flight" in elsewhere.stderr, elsewhere.stderr
            threading.Timer(1.0, turn.set).start()
            with JobEngine(WaitsForItsTurn(spool, turn), run, submit_timeout=5, **FAST) as rerun:
                out = rerun.run(CIRCUITS, None, scope="s")
        finally:
            turn.set()
        served = service.drain()
    assert len(served) == 1
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
    events = [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "unknown", "submitted", "done"]
    after = subprocess.run([*resolve, tag], env=ENV, capture_output=True, text=True, timeout=120)
    assert "in use" not in after.stderr and "no unresolved submission" in after.stderr, after.stderr  # (unlocked)


class SentThenDropped(WaitsForItsTurn):
    """Its request reaches the service (the job exists), then the connection drops before the
    answer: a transient error that does not say whether a job was created. Its search shows the
    job only once the call has ended."""

    def __init__(self, spool, turn: threading.Event):
        super().__init__(spool, turn)
        self.ended = threading.Event()

    def submit(self, circuits, shots, tag):
        super().submit(circuits, shots, tag)
        self.ended.set()
        raise TransientError("connection reset by peer")

    def created_nothing(self, error):
        return False

    def find(self, tag):
        return super().find(tag) if self.ended.is_set() else None


def test_a_late_answer_that_does_not_say_whether_it_created_the_job_is_looked_up_not_paid_again(tmp_path):
    """The call gives no answer within submit_timeout; while the run waits for it, it ends with a
    dropped connection after its request reached the service: the job is looked up by its tag and
    used, not submitted again."""
    spool, run, turn = tmp_path / "spool", tmp_path / "run", threading.Event()
    with SpoolService(spool) as service:
        try:
            threading.Timer(1.0, turn.set).start()
            engine = JobEngine(SentThenDropped(spool, turn), run, submit_timeout=0.1, job_timeout=20, **FAST)
            out = engine.run(CIRCUITS, None, scope="s")
        finally:
            turn.set()
        served = service.drain()
    assert len(served) == 1
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
    events = [r["event"] for r in read_ledger(run / "jobs" / "ledger.jsonl")]
    assert events == ["intent", "unknown", "submitted", "done"]


class SeesItsRegistration(SpoolProvider):
    """Notes, as its request leaves, whether this process has the call registered (a rerun of this
    process would wait for it)."""

    def __init__(self, spool, run: Path):
        super().__init__(spool=spool)
        self.run, self.registered = run, []

    def submit(self, circuits, shots, tag):
        self.registered.append(_late(self.run, tag) is not None)
        return super().submit(circuits, shots, tag)


def test_a_call_is_registered_before_its_request_leaves(tmp_path):
    """Registered in the call's own thread, before the request: a Ctrl-C in the caller, however
    early, cannot leave a call in flight that a rerun of this process would not wait for."""
    spool, run = tmp_path / "spool", tmp_path / "run"
    with SpoolService(spool) as service:
        provider = SeesItsRegistration(spool, run)
        for n in range(5):  # (a race would show in some of them)
            JobEngine(provider, run, **FAST).run(CIRCUITS, None, scope=f"s{n}")
        assert len(service.drain()) == 5
    assert provider.registered == [True] * 5


def test_two_run_directories_with_the_same_tags_keep_their_own_calls(tmp_path):
    """Two runs of one process on different run directories (here on different services) with
    the same circuits share tags: the second one's call must not replace (or settle) the first
    one's, which a rerun of the first waits for; looking the tag up at its own service, which the
    call has not reached, it would conclude that nothing was created and pay again."""
    turn = threading.Event()
    a, b = tmp_path / "a", tmp_path / "b"
    with SpoolService(tmp_path / "spool-a") as service_a, SpoolService(tmp_path / "spool-b") as service_b:
        try:
            tag = _give_up_on_the_submission(tmp_path / "spool-a", a, turn)
            a_call = _late(a, tag)
            assert a_call is not None and not a_call.future.done()
            JobEngine(SpoolProvider(spool=tmp_path / "spool-b"), b, **FAST).run(CIRCUITS, None, scope="s")
            assert tag in {r["tag"] for r in read_ledger(b / "jobs" / "ledger.jsonl")}  # (the same tag)
            assert _late(a, tag) is a_call and _late(b, tag) is None
            time.sleep(0.3)  # (well past the intent's submit_timeout)
            threading.Timer(1.0, turn.set).start()
            provider = WaitsForItsTurn(tmp_path / "spool-a", turn)
            out = JobEngine(provider, a, submit_timeout=0.1, job_timeout=20, **FAST).run(CIRCUITS, None, scope="s")
        finally:
            turn.set()
        served_a, served_b = service_a.drain(), service_b.drain()
    assert len(served_a) == 1 and len(served_b) == 1
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
    records = read_ledger(a / "jobs" / "ledger.jsonl")
    assert [r["event"] for r in records] == ["intent", "unknown", "submitted", "done"]
    assert records[2]["job_id"] == a_call.future.result()


def test_the_late_answer_of_a_call_a_ctrl_c_cut_short_is_logged_and_frees_the_run_directory(tmp_path, caplog):
    """No rerun follows: the answer is logged with its job id, and once the call has answered
    another process may open the run directory and record the job by the logged command."""
    spool, run, turn = tmp_path / "spool", tmp_path / "run", threading.Event()
    with SpoolService(spool) as service, caplog.at_level(logging.WARNING, logger="qpeft.jobs.engine"):
        try:
            engine = JobEngine(CtrlCWhileItWaits(spool, turn), run, **FAST)
            with _ctrl_c_raises(), pytest.raises(KeyboardInterrupt), engine:
                engine.run(CIRCUITS, None, scope="s")
        finally:
            turn.set()
        tag = read_ledger(run / "jobs" / "ledger.jsonl")[0]["tag"]
        job_id = _late(run, tag).future.result(timeout=30)
        waited = time.monotonic()
        while "answered late" not in caplog.text and time.monotonic() - waited < 10:
            time.sleep(0.01)
        assert f"--resolve {tag} --job-id {job_id}" in caplog.text
        command = [sys.executable, "-m", "qpeft.cli", "jobs", str(run), "--resolve", tag, "--job-id", job_id]
        elsewhere = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
        assert elsewhere.returncode == 0, elsewhere.stderr
        out = JobEngine(SpoolProvider(spool=spool), run, **FAST).run(CIRCUITS, None, scope="s")
        assert len(service.drain()) == 1
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=1e-6)
