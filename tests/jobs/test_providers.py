"""One contract over the provider table: local backends, IBM (local testing mode on a fake
backend: the provider's real Sampler code path, offline; and its remote path against a stand-in
for the unreachable runtime service), Origin (a stand-in for the unreachable QCloud service,
at the service boundary only; see standins.py) and Amazon Braket (its LocalSimulator, state vector
and density matrix; and its remote path, program sets and one circuit per task, against a stand-in
for the unreachable service, braket_standin.py). A job id the service does not know is
JobLostError on every provider, so the engine submits such a job again instead of stopping."""

import math
import shutil
import time

import numpy as np
import pytest
from braket_standin import IQM_GARNET, SV1, StandInBraketService
from standins import StandInQCloudService, StandInRuntimeService

from qpeft.jobs import BoundCircuit, JobEngine, JobFailedError, State
from qpeft.jobs.base import JobLostError, counts_to_probs
from qpeft.jobs.ledger import read_ledger
from qpeft.jobs.providers import get_provider, parse_spec
from qpeft.quantum.circuit import Circuit, Weight

SHOTS = 4000
# RY(a) on wire 0, RY(b) on wire 1, CZ: P(wire0 = 1) = sin^2(a/2), P(wire1 = 1) = sin^2(b/2)
BELL_FREE = Circuit(2).add("RY", [0], Weight(0)).add("RY", [1], Weight(1)).add("CZ", [0, 1])
ANGLES = [(0.3, 2.0), (1.2, 0.1), (math.pi, 0.0)]


def _expected(a, b):
    p0, p1 = math.sin(a / 2) ** 2, math.sin(b / 2) ** 2
    return np.array([(1 - p0) * (1 - p1), (1 - p0) * p1, p0 * (1 - p1), p0 * p1])  # wire 0 most significant


def _local_sdk(name, module):
    """A local provider that runs on an optional SDK: the test skips where it is not installed."""
    pytest.importorskip(module)
    return get_provider(name)


def _origin(**kw):
    pytest.importorskip("pyqpanda3")
    from qpeft.jobs.origin import OriginProvider

    service = StandInQCloudService(**kw)
    return OriginProvider(api_key="sk-test-SECRET", service=service, job_factory=service.job)


def _ibm():
    pytest.importorskip("qiskit_ibm_runtime")
    pytest.importorskip("qiskit_aer")
    return get_provider("ibm:fake_nairobi")


def _ibm_remote(service=None):
    pytest.importorskip("qiskit_ibm_runtime")
    pytest.importorskip("qiskit_aer")
    service = service or StandInRuntimeService()
    return get_provider("ibm:ibm_nairobi", service=service, sampler_factory=service.sampler)


def _braket_local(device="local"):
    pytest.importorskip("braket.default_simulator")
    return get_provider(f"braket:{device}")


def _braket_remote(service=None, device=IQM_GARNET):
    pytest.importorskip("braket.default_simulator")
    service = service or StandInBraketService()
    return get_provider(f"braket:{device}", aws_session=service.aws_session(), s3_folder="s3://bucket/qpeft")


PROVIDERS = {
    "local:torch": (lambda: get_provider("local:torch"), None, 1e-6),
    "local:shots": (lambda: get_provider("local:shots"), SHOTS, 0.03),
    "local:noisy": (lambda: get_provider("local:noisy"), None, 1e-6),
    "local:qiskit": (lambda: _local_sdk("local:qiskit", "qiskit_aer"), SHOTS, 0.03),
    "local:pyqpanda3": (lambda: _local_sdk("local:pyqpanda3", "pyqpanda3"), None, 1e-9),
    "ibm:fake_nairobi": (_ibm, SHOTS, 0.12),  # the snapshot noise (readout error up to ~8 %)
    "ibm:stand-in": (_ibm_remote, SHOTS, 0.12),
    "origin:stand-in": (_origin, SHOTS, 0.03),
    "braket:local": (_braket_local, SHOTS, 0.03),
    "braket:local_dm": (lambda: _braket_local("local_dm"), SHOTS, 0.03),
    "braket:stand-in": (_braket_remote, SHOTS, 0.03),  # a QPU's ARN: program sets
    "braket:stand-in-sv1": (lambda: _braket_remote(device=SV1), SHOTS, 0.03),  # one circuit per task
}


def _wait(provider, job_id):
    for _ in range(2000):
        status = provider.status(job_id)
        if status.state.terminal:
            return status
        time.sleep(0.005)
    raise AssertionError("job never finished")


@pytest.mark.parametrize("name", PROVIDERS)
def test_provider_contract(name):
    make, shots, atol = PROVIDERS[name]
    provider = make()
    fits = provider.limits.chunk_size(shots, 1)  # (a provider may take fewer circuits per job)
    circuits = [BoundCircuit(BELL_FREE, a) for a in ANGLES][:fits]
    job_id = provider.submit(circuits, shots, tag="contract.1")
    assert isinstance(job_id, str) and job_id
    assert _wait(provider, job_id).state is State.DONE
    probs = provider.result(job_id, circuits, shots)
    assert len(probs) == len(circuits)
    for p, a in zip(probs, ANGLES):
        np.testing.assert_allclose(p, _expected(*a), atol=atol)
    if provider.can_find:
        assert provider.find("contract.1") == job_id and provider.find("contract.9") is None
    provider.cancel(job_id)  # cancelling a finished job is harmless
    if provider.name == "origin":  # (QCloud documents no answer for an unknown job: the run stops with its id)
        with pytest.raises(RuntimeError, match="--lost no-such-job") as info:
            provider.status("no-such-job")
        assert not isinstance(info.value, JobLostError)
    else:
        with pytest.raises(JobLostError):  # the service does not know the id: the engine may submit again
            provider.status("no-such-job")
    chunk = provider.limits.chunk_size(shots, 1)
    assert chunk >= 1 and provider.name in provider.fingerprint()


def test_spec_parsing():
    assert parse_spec("origin:WK_C180") == ("origin", "WK_C180") and parse_spec("ibm") == ("ibm", None)
    assert parse_spec("braket:arn:aws:braket:::device/x") == ("braket", "arn:aws:braket:::device/x")
    with pytest.raises(ValueError, match="unknown quantum provider 'aws'.*braket.*qpeft providers"):
        parse_spec("aws:sv1")
    with pytest.raises(ValueError, match="unknown local backend 'gpu'"):
        get_provider("local:gpu")


def test_counts_bit_order():
    # SDK bit strings put qubit 0 last; qpeft's wire 0 is the most significant bit
    assert counts_to_probs({"01": 3, "0x2": 1}, 2).tolist() == [0, 0.25, 0.75, 0]


def test_origin_chooses_a_listed_available_qpu():
    assert _origin().backend == "WK_C180"  # the only available QPU; simulators and busy chips are skipped
    with pytest.raises(ValueError, match="not available now"):
        _origin().__class__(backend="WK_C102_400", api_key="k", service=StandInQCloudService())
    with pytest.raises(ValueError, match="has no backend 'origin_wukong'.*WK_C180"):
        _origin().__class__(backend="origin_wukong", api_key="k", service=StandInQCloudService())


def test_origin_without_a_key_says_which_variable(monkeypatch):
    pytest.importorskip("pyqpanda3")
    from qpeft.jobs.origin import OriginProvider

    monkeypatch.delenv("QPEFT_ORIGIN_API_KEY", raising=False)
    with pytest.raises(ValueError, match="QPEFT_ORIGIN_API_KEY"):
        OriginProvider()


def test_origin_failed_job_is_a_status_and_no_secret_leaks(tmp_path):
    provider = _origin(fail_first=5, key_in_errors="sk-test-SECRET")
    circuits = [BoundCircuit(BELL_FREE, a) for a in ANGLES]
    engine = JobEngine(provider, tmp_path, poll_interval=0.001, max_poll_interval=0.002, progress=False)
    with pytest.raises(JobFailedError, match="chip calibration failed") as info:
        engine.run(circuits, 100)
    assert "SECRET" not in str(info.value) and "***" in str(info.value)
    assert "SECRET" not in (tmp_path / "jobs" / "ledger.jsonl").read_text()


def test_origin_reattaches_by_id_after_a_restart():
    first = _origin()
    circuits = [BoundCircuit(BELL_FREE, a) for a in ANGLES]
    job_id = first.submit(circuits, SHOTS, tag="t.1")
    from qpeft.jobs.origin import OriginProvider

    service = first._service  # the same remote service, seen from a new process
    second = OriginProvider(api_key="k", service=service, job_factory=service.job)
    assert _wait(second, job_id).state is State.DONE
    probs = second.result(job_id, circuits, SHOTS)
    np.testing.assert_allclose(probs[0], _expected(*ANGLES[0]), atol=0.03)
    assert len(service.submissions) == 1


def test_ibm_local_testing_jobs_end_with_their_process():
    provider = _ibm()
    job_id = provider.submit([BoundCircuit(BELL_FREE, ANGLES[0])], 100, tag="t.1")
    with pytest.raises(JobLostError, match="local-testing job"):
        get_provider("ibm:fake_nairobi").status(job_id)


def _origin_remote(service):
    from qpeft.jobs.origin import OriginProvider

    return OriginProvider(api_key="sk-test-KEY", service=service, job_factory=service.job)


REMOTE = {  # (a service stand-in whose jobs wait `polls` status queries, the provider on it)
    "origin": (lambda polls: StandInQCloudService(polls=polls), _origin_remote),
    "ibm": (lambda polls: StandInRuntimeService(polls=polls), _ibm_remote),  # (its account names its instance)
    "ibm-no-instance": (lambda polls: StandInRuntimeService(polls=polls, instance=None), _ibm_remote),  # (asks two)
    "braket": (lambda polls: StandInBraketService(polls=polls), _braket_remote),
}
SDK = {"origin": "pyqpanda3", "braket": "braket.default_simulator", "ibm": "qiskit_aer"}
SDK["ibm-no-instance"] = SDK["ibm"]
FAST = dict(poll_interval=0.001, max_poll_interval=0.002, progress=False)


def _submissions(service) -> int:
    if isinstance(service, StandInBraketService):
        return len(service.bill)
    return len(service.submissions) if isinstance(service.submissions, list) else service.submissions


@pytest.mark.parametrize("name", REMOTE)
def test_an_open_job_the_service_no_longer_knows_is_submitted_again(tmp_path, name):
    pytest.importorskip(SDK[name])
    make_service, make = REMOTE[name]
    service = make_service(polls=10_000)  # the job waits in the queue past the first run's deadline
    circuits = [BoundCircuit(BELL_FREE, a) for a in ANGLES]
    with pytest.raises(TimeoutError, match="still open"):
        JobEngine(make(service), tmp_path, deadline=2.0, **FAST).run(circuits, SHOTS, scope="s")
    (job_id,) = [r["job_id"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]
    service.forget(job_id)  # purged on the service's side
    service.polls = 0
    out = _restart(service, make, tmp_path, circuits, job_id)
    for p, a in zip(out, ANGLES):
        np.testing.assert_allclose(p, _expected(*a), atol=0.12)
    lost = [r for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "lost"]
    why = "does not know it" if name in ("ibm", "braket") else "recorded by hand"
    assert [r["job_id"] for r in lost] == [job_id] and why in lost[0]["message"]
    assert _submissions(service) == 2


def _restart(service, make, run_dir, circuits, job_id):
    """A restart after the service forgot ``job_id``. Origin's QCloud documents no answer for a job
    it does not know (its HTTP 404 also comes from a moved endpoint), and IBM's "not found" from a
    service that asked several instances may be another instance's error passed over: the run stops with
    the job's id and pays nothing; the user, finding the job gone from the console, records it with
    ``qpeft jobs --lost``, and the next run submits it again."""
    from qpeft.cli import main
    from qpeft.jobs.calls import ProviderError

    if isinstance(service, StandInQCloudService) or len(getattr(service, "_api_clients", ())) > 1:
        with pytest.raises(ProviderError, match=f"--lost {job_id}"):
            JobEngine(make(service), run_dir, **FAST).run(circuits, SHOTS, scope="s")
        assert _submissions(service) == 1
        assert main(["jobs", str(run_dir), "--lost", job_id]) == 0
    return JobEngine(make(service), run_dir, **FAST).run(circuits, SHOTS, scope="s")


@pytest.mark.parametrize("name", REMOTE)
def test_a_finished_job_gone_from_cache_and_service_is_submitted_again(tmp_path, name):
    pytest.importorskip(SDK[name])
    make_service, make = REMOTE[name]
    service = make_service(polls=0)
    circuits = [BoundCircuit(BELL_FREE, a) for a in ANGLES]
    JobEngine(make(service), tmp_path, **FAST).run(circuits, SHOTS, scope="s")
    (job_id,) = [r["job_id"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "done"]
    shutil.rmtree(tmp_path / "jobs" / "results")  # the cache is lost ...
    service.forget(job_id)  # ... and the service has purged the job
    out = _restart(service, make, tmp_path, circuits, job_id)
    np.testing.assert_allclose(out[0], _expected(*ANGLES[0]), atol=0.12)
    gone = [r for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "gone"]
    assert [r["job_id"] for r in gone] == [job_id] and _submissions(service) == 2
