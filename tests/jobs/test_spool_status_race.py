"""The spool service (its own process) moves a job from queued to running by renaming its file
while a client may be reading the job's status. A status read that races with that rename must
never answer that the service does not know the job: the engine would take it as lost and pay
for it again (the race was seen as a job submitted twice in test_crash on a loaded machine)."""

from pathlib import Path

import pytest

from qpeft.jobs import BoundCircuit, JobEngine, State
from qpeft.jobs.spool import SpoolProvider
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))


@pytest.mark.parametrize("looks", range(4))
def test_a_status_read_racing_the_service_taking_the_job_never_says_lost(tmp_path, monkeypatch, looks):
    """The service renames ``<id>.job.json`` to ``<id>.running.json`` right after the status
    read's ``looks``-th file check, whichever that is."""
    provider = SpoolProvider(spool=tmp_path)
    job_id = provider.submit([BoundCircuit(RY, (0.3,))], None, "key.1")
    queued, running = tmp_path / f"{job_id}.job.json", tmp_path / f"{job_id}.running.json"
    is_file, seen = Path.is_file, []

    def racing(path):
        answer = is_file(path)
        if path.name.startswith(job_id):
            seen.append(path.name)
            if len(seen) == looks + 1 and queued.exists():
                queued.rename(running)  # the service takes the job now
        return answer

    monkeypatch.setattr(Path, "is_file", racing)
    assert provider.status(job_id).state in (State.QUEUED, State.RUNNING)


def test_a_job_the_spool_never_had_is_still_lost(tmp_path):
    from qpeft.jobs.base import JobLostError

    with pytest.raises(JobLostError):
        SpoolProvider(spool=tmp_path).status("0123456789abcdef")


def test_the_engine_pays_once_when_the_service_takes_its_job_mid_status_read(tmp_path, monkeypatch):
    """The same race through the engine: the service takes the job right after the second file
    check of the client's status reads, and finishes it after the sixth: one job, its results used."""
    import numpy as np

    spool = tmp_path / "spool"
    provider = SpoolProvider(spool=spool)
    submitted = []
    submit = provider.submit

    def submit_and_record(circuits, shots, tag):
        submitted.append(submit(circuits, shots, tag))
        return submitted[-1]

    provider.submit = submit_and_record
    is_file, checks = Path.is_file, []

    def racing(path):
        answer = is_file(path)
        if submitted and path.name.startswith(submitted[0]):
            checks.append(path.name)
            if len(checks) == 2:
                (spool / f"{submitted[0]}.job.json").rename(spool / f"{submitted[0]}.running.json")
            if len(checks) == 6:
                _serve_one(spool, submitted[0])
        return answer

    monkeypatch.setattr(Path, "is_file", racing)
    fast = dict(poll_interval=0.001, max_poll_interval=0.002, deadline=10, progress=False)
    try:  # (a second job would never run: no service takes it; the deadline ends the wait)
        out = JobEngine(provider, tmp_path / "run", **fast).run([BoundCircuit(RY, (0.3,))], None, scope="s")
    finally:
        assert len(submitted) == 1, f"the job was submitted {len(submitted)} times"
    np.testing.assert_allclose(out[0], [np.cos(0.15) ** 2, np.sin(0.15) ** 2], atol=1e-6)


def _serve_one(spool: Path, job_id: str) -> None:
    """What the service process does to finish a running job: its result file, written atomically."""
    import json

    import numpy as np

    from qpeft.jobs.local import LocalProvider
    from qpeft.jobs.spool import _decode

    data = json.loads((spool / f"{job_id}.running.json").read_text())
    probs = LocalProvider("torch")._execute(_decode(data), data["shots"])
    tmp = spool / f"{job_id}.tmp.npz"
    np.savez(tmp, probs=np.concatenate(probs), offsets=np.cumsum([0] + [len(p) for p in probs]))
    tmp.rename(spool / f"{job_id}.result.npz")
