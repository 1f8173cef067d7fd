"""A run stays on the backend it started on. ``origin`` without a chip takes the first available
one and ``ibm`` without a backend the least busy; after a restart the choice can differ, which
would orphan the open jobs (the backend is part of every job key) and pay for their steps again.
The backend of the first submission, recorded in the run's ledger, is reused on every rerun; an
unavailable one stops the run with a clear message; switching needs an explicit option and says
what happens to the open jobs. Through the stand-ins for the unreachable services (standins.py)."""

import logging

import numpy as np
import pytest
from standins import StandInQCloudService, StandInRuntimeService

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.step import connect_provider
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
CIRCUITS = [BoundCircuit(RY, (t,)) for t in (0.3, 1.1, 2.0)]
EXPECTED = np.stack([np.cos(np.array([0.3, 1.1, 2.0]) / 2) ** 2, np.sin(np.array([0.3, 1.1, 2.0]) / 2) ** 2], axis=1)
FAST = dict(poll_interval=0.001, max_poll_interval=0.002, progress=False)
SHOTS = 4000


@pytest.fixture
def origin(monkeypatch):
    """The QCloud service stand-in, patched in at the SDK's service class (the network boundary)."""
    qcloud = pytest.importorskip("pyqpanda3.qcloud")
    service = StandInQCloudService(backends={"full_amplitude": True, "WK_C180": True, "WK_C102_400": False})
    monkeypatch.setattr(qcloud, "QCloudService", lambda api_key: service)
    monkeypatch.setattr(qcloud, "QCloudJob", service.job)
    monkeypatch.setenv("QPEFT_ORIGIN_API_KEY", "sk-test-KEY")
    return service


def _open_job(spec, run_dir, service, options=None):
    """A first run that leaves its job open in the queue (past its deadline)."""
    service.polls = 10_000
    provider = connect_provider(spec, SHOTS, options, run_dir)
    with pytest.raises(TimeoutError, match="still open"):
        JobEngine(provider, run_dir, deadline=2.0, **FAST).run(CIRCUITS, SHOTS, scope="s")
    service.polls = 0
    return provider


def test_a_rerun_stays_on_the_chip_the_run_started_on(tmp_path, origin):
    first = _open_job("origin", tmp_path, origin)
    assert first.backend == "WK_C180"
    origin.set_backends({"full_amplitude": True, "WK_C102_400": True, "WK_C180": True})  # another chip is up, first
    again = connect_provider("origin", SHOTS, None, tmp_path)
    assert again.backend == "WK_C180"
    out = JobEngine(again, tmp_path, **FAST).run(CIRCUITS, SHOTS, scope="s")
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=0.05)
    assert len(origin.submissions) == 1  # re-attached to the open job: not paid again on the other chip


def test_an_unavailable_recorded_chip_stops_the_run_with_a_clear_message(tmp_path, origin):
    _open_job("origin", tmp_path, origin)
    origin.set_backends({"full_amplitude": True, "WK_C102_400": True, "WK_C180": False})
    with pytest.raises(ValueError, match="'WK_C180' is not available now.*ledger records it.*switch_backend"):
        connect_provider("origin", SHOTS, None, tmp_path)
    assert len(origin.submissions) == 1


def test_switching_needs_the_option_and_says_what_happens_to_the_open_jobs(tmp_path, origin, caplog):
    _open_job("origin", tmp_path, origin)
    (job_id,) = [r["job_id"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]
    origin.set_backends({"full_amplitude": True, "WK_C102_400": True, "WK_C180": True})
    other = connect_provider("origin:WK_C102_400", SHOTS, None, tmp_path)
    with pytest.raises(ValueError, match=f"ran on origin:WK_C180.*switch_backend.*{job_id}.*not cancelled"):
        JobEngine(other, tmp_path, **FAST)
    assert len(origin.submissions) == 1
    with caplog.at_level(logging.WARNING):
        moved = connect_provider("origin:WK_C102_400", SHOTS, {"switch_backend": True}, tmp_path)
        JobEngine(moved, tmp_path, switch_backend=True, **FAST).run(CIRCUITS, SHOTS, scope="s")
    assert "switching the run from origin:WK_C180 to origin:WK_C102_400" in caplog.text and job_id in caplog.text
    assert len(origin.submissions) == 2  # the step on the new chip (the old job is left, as the message said)
    # from now on the run is on the new chip: a plain `origin` reuses it
    assert connect_provider("origin", SHOTS, None, tmp_path).backend == "WK_C102_400"


def test_ibm_a_rerun_stays_on_the_backend_least_busy_chose(tmp_path):
    pytest.importorskip("qiskit_aer")
    service = StandInRuntimeService(backends=("ibm_nairobi", "ibm_lima"), least="ibm_nairobi")
    options = {"service": service, "sampler_factory": service.sampler}
    _open_job("ibm", tmp_path, service, options)
    service.least = "ibm_lima"  # the queues moved
    again = connect_provider("ibm", SHOTS, options, tmp_path)
    assert again.backend == "ibm_nairobi"
    out = JobEngine(again, tmp_path, **FAST).run(CIRCUITS, SHOTS, scope="s")
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=0.12)
    assert service.submissions == 1
