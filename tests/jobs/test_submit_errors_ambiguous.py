"""A submit call that fails with an error after its request may have reached the service (a
timeout, a dropped connection, a gateway's 5xx) may have created the job: it is never repeated
blindly. The provider's stand-in service creates the job and then loses its answer; the service's
own record of the jobs it created is the bill. Where the provider can look jobs up by tag (IBM)
the engine finds the job and re-attaches to it; where it cannot (Origin) the submission is
reported unresolved (``qpeft jobs --resolve``), never paid again. A rejection that certainly
created nothing (a throttle, a 503, a refused connection) is still retried."""

import time

import numpy as np
import pytest
from standins import StandInQCloudService, StandInRuntimeService

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.base import SubmissionUnknownError
from qpeft.jobs.ledger import read_ledger
from qpeft.quantum.circuit import Circuit, Weight

RY = Circuit(1).add("RY", [0], Weight(0))
THETAS = np.linspace(0.1, 3.0, 3)
EXPECTED = np.stack([np.cos(THETAS / 2) ** 2, np.sin(THETAS / 2) ** 2], axis=1)  # RY|0>, closed form
FAST = dict(poll_interval=0.001, max_poll_interval=0.004, submit_timeout=0.2, progress=False)


def _circuits():
    return [BoundCircuit(RY, (float(t),)) for t in THETAS]


def _events(run_dir):
    return [r["event"] for r in read_ledger(run_dir / "jobs" / "ledger.jsonl")]


def _answer_lost(run, error: Exception, after: float = 0.0):
    """``run`` whose first call reaches the service (the job is created) and then fails with
    ``error`` on the way back, ``after`` seconds later; later calls answer normally."""
    calls = []

    def lossy(*args, **kwargs):
        job = run(*args, **kwargs)
        calls.append(job)
        if len(calls) == 1:
            time.sleep(after)
            raise error
        return job

    return lossy


def _refused_once(run, error: Exception):
    """``run`` whose first call is refused before it reaches the service (nothing created)."""
    calls = []

    def refusing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return run(*args, **kwargs)

    return refusing


def _origin(service):
    pytest.importorskip("pyqpanda3")
    from qpeft.jobs.origin import OriginProvider

    return OriginProvider(api_key="sk-test-KEY", service=service, job_factory=service.job)


@pytest.mark.parametrize(
    "text",
    [
        "curl_easy_perform() failed: Timeout was reached",
        "curl_easy_perform() failed: Failure when receiving data from the peer",
        "QCloud HTTP request failed with status 504",
        "QCloud HTTP request failed with status 524",  # (a gateway's timeout after the request got through)
        "QCloud HTTP request failed with status 520",
        "response missing success field, preview: <html>",  # (an answer the SDK could not read)
        ValueError("stod"),  # (pybind's answer to a number it could not parse)
        IndexError("map::at"),  # (pybind's std::out_of_range)
        "QCloud HTTP request failed with status 520: <html>HTTP Status 404 - Not Found</html>",  # (a quoted body)
    ],
)
@pytest.mark.parametrize("after", [0.0, 0.5], ids=["at-once", "past-submit_timeout"])
def test_origin_a_submit_whose_answer_was_lost_is_reported_unresolved_not_paid_again(tmp_path, text, after):
    from qpeft.cli import main

    service = StandInQCloudService()
    provider = _origin(service)
    error = text if isinstance(text, Exception) else RuntimeError(text)
    provider._chip.run = _answer_lost(provider._chip.run, error, after)
    with pytest.raises(SubmissionUnknownError, match="--resolve") as info:
        JobEngine(provider, tmp_path, **FAST).run(_circuits(), 200, scope="s")
    assert len(service.submissions) == 1  # the job exists; it was not created a second time
    tag = next(r["tag"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "unknown")
    assert _events(tmp_path) == ["intent", "unknown"]  # still unresolved: `qpeft jobs` lists it
    assert tag in str(info.value) and "sk-test-KEY" not in str(info.value)
    assert main(["jobs", str(tmp_path), "--resolve", tag, "--job-id", "origin-1"]) == 0  # found in the console
    out = JobEngine(_origin(service), tmp_path, **FAST).run(_circuits(), 200, scope="s")
    assert len(service.submissions) == 1  # re-attached to origin-1
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=0.15)


@pytest.mark.parametrize("code", [503, 429])
def test_origin_a_submit_refused_before_it_created_anything_is_retried(tmp_path, code):
    service = StandInQCloudService()
    provider = _origin(service)
    provider._chip.run = _refused_once(
        provider._chip.run, RuntimeError(f"QCloud HTTP request failed with status {code}")
    )
    out = JobEngine(provider, tmp_path, **FAST).run(_circuits(), 200, scope="s")
    assert len(service.submissions) == 1
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=0.15)
    assert _events(tmp_path) == ["intent", "submitted", "done"]


@pytest.mark.parametrize(
    "text",
    [
        "QCloud HTTP request failed with status 400: program not valid",
        "api key error",
        "QCloud HTTP request failed with status 401: unauthorized",
    ],
)
def test_origin_a_submit_refused_with_an_answer_stops_the_run_and_created_nothing(tmp_path, text):
    """An HTTP 4xx or a refusal the SDK names is an answer: nothing was created, the run stops."""
    from qpeft.jobs.calls import ProviderError

    service = StandInQCloudService()
    provider = _origin(service)
    provider._chip.run = _refused_once(provider._chip.run, RuntimeError(text))
    with pytest.raises(ProviderError, match="nothing was created"):
        JobEngine(provider, tmp_path, **FAST).run(_circuits(), 200, scope="s")
    assert len(service.submissions) == 0 and _events(tmp_path) == ["intent", "rejected"]


class _LossySampler:
    """The SDK's Sampler against the stand-in service, whose answer to the first job submission
    is lost after the service created the job (``error`` raised on the way back)."""

    lost: list = []

    def __init__(self, sampler, error):
        self.sampler, self.error = sampler, error

    def run(self, pubs, shots=None):
        job = self.sampler.run(pubs, shots=shots)
        if not _LossySampler.lost:
            _LossySampler.lost.append(job)
            raise self.error
        return job


def _wrapped(words: str):
    """The error the SDK raises for a requests error of its POST (qiskit_runtime_service._run)."""
    from qiskit_ibm_runtime.exceptions import IBMRuntimeError

    return lambda message: IBMRuntimeError(f"Failed to run program: {words}")


DROPPED = "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))"
READ_TIMEOUT = "HTTPSConnectionPool(host='quantum.cloud.ibm.com', port=443): Read timed out. (read timeout=120)"
REFUSED = (
    "HTTPSConnectionPool(host='quantum.cloud.ibm.com', port=443): Max retries exceeded with url: /api/v1/jobs "
    "(Caused by NewConnectionError('<urllib3.connection.HTTPSConnection>: Failed to establish a new connection: "
    "[Errno 111] Connection refused'))"
)


SSL_EOF = (
    "HTTPSConnectionPool(host='quantum.cloud.ibm.com', port=443): Max retries exceeded with url: /api/v1/jobs "
    "(Caused by SSLError(SSLEOFError(8, '[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol')))"
)
WRAPPED = {"wrapped-dropped": DROPPED, "wrapped-read-timeout": READ_TIMEOUT, "wrapped-ssl-eof": SSL_EOF}


@pytest.mark.parametrize(
    "error",
    [ConnectionError, TimeoutError, *WRAPPED],
    ids=["connection-dropped", "timed-out", *(f"sdk-{name}" for name in WRAPPED)],
)
def test_ibm_a_submit_whose_answer_was_lost_is_found_by_its_tag_not_paid_again(tmp_path, error):
    pytest.importorskip("qiskit_ibm_runtime")
    pytest.importorskip("qiskit_aer")
    from qpeft.jobs.ibm import IBMProvider

    if isinstance(error, str):
        error = _wrapped(WRAPPED[error])
    service = StandInRuntimeService()
    provider = IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler)
    _LossySampler.lost = []
    provider._sampler_factory = lambda **kw: _LossySampler(service.sampler(**kw), error("the answer was lost"))
    out = JobEngine(provider, tmp_path, **FAST).run(_circuits(), 400, scope="s")
    assert service.submissions == 1  # found by its tag and re-attached
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=0.15)
    assert _events(tmp_path) == ["intent", "unknown", "submitted", "done"]


def test_ibm_a_lost_submit_answer_is_looked_up_in_the_backends_instance(tmp_path):
    """An account saved without an instance: the SDK searches jobs by tag in its active instance,
    which need not be the one the backend (and so the job) is in. The lookup names the backend's
    instance, so the job is found there and not paid again."""
    pytest.importorskip("qiskit_ibm_runtime")
    pytest.importorskip("qiskit_aer")
    from qpeft.jobs.ibm import IBMProvider

    service = StandInRuntimeService(instance=None)
    service.active = "crn:v1:bluemix:public:quantum-computing:us-east:a/standin:instance-b::"
    provider = IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler)
    _LossySampler.lost = []
    provider._sampler_factory = lambda **kw: _LossySampler(service.sampler(**kw), ConnectionError("answer lost"))
    out = JobEngine(provider, tmp_path, **FAST).run(_circuits(), 400, scope="s")
    assert service.submissions == 1 and service.jobs(job_tags=[]) == []  # (none in the active instance)
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=0.15)
    assert _events(tmp_path) == ["intent", "unknown", "submitted", "done"]


def test_ibm_a_submit_that_could_not_connect_is_looked_up_by_its_tag_then_made_and_pays_once(tmp_path):
    """'Could not connect' ends urllib3's retries, which resend the POST: an earlier attempt may
    have got through, so the job is looked up by its tag before it is submitted again."""
    pytest.importorskip("qiskit_ibm_runtime")
    pytest.importorskip("qiskit_aer")
    from qpeft.jobs.ibm import IBMProvider

    service = StandInRuntimeService()
    provider = IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler)
    sampler, refused = service.sampler, []

    def never_sent(*args, **kwargs):
        raise _wrapped(REFUSED)("")

    def refusing(**kw):
        made = sampler(**kw)
        if not refused:  # (the first job's POST never connects: nothing is created)
            refused.append(1)
            made.run = never_sent
        return made

    provider._sampler_factory = refusing
    out = JobEngine(provider, tmp_path, **FAST).run(_circuits(), 400, scope="s")
    assert service.submissions == 1 and refused == [1]
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=0.15)
    assert _events(tmp_path) == ["intent", "unknown", "rejected", "intent", "submitted", "done"]


def test_a_late_answer_that_refuses_the_job_stops_the_run_and_is_not_submitted_again(tmp_path):
    """A submit past submit_timeout whose late answer is a refusal (not transient): the run stops
    with the provider's words; the job is not submitted again (a refusal for a cause that a new
    submission would hit again, or one the engine cannot tell from a lost answer, is not retried)."""
    from qpeft.jobs.calls import ProviderError

    service = StandInQCloudService()
    provider = _origin(service)
    calls = []

    def slow_refusal(*args):
        calls.append(1)
        time.sleep(0.5)
        raise RuntimeError("QCloud HTTP request failed with status 400: program not valid for this chip")

    provider._chip.run = slow_refusal
    with pytest.raises(ProviderError, match="status 400"):
        JobEngine(provider, tmp_path, **FAST).run(_circuits(), 200, scope="s")
    assert len(calls) == 1
    assert _events(tmp_path) == ["intent", "unknown", "rejected"]


@pytest.mark.parametrize(
    "message, submitted",
    [("chip under maintenance", 2), ("task timeout: exceeded the chip's maximum run time", 1)],
    ids=["maintenance-submitted-again", "timeout-stops"],
)
def test_origin_a_failed_task_is_submitted_again_only_for_a_passing_condition_of_the_service(
    tmp_path, message, submitted
):
    """A task FAILED for maintenance is submitted again; one that timed out may time out again
    (and be paid for again): the run stops with its id."""
    from qpeft.jobs.errors import JobFailedError

    service = StandInQCloudService(polls=0, fail_first=1)
    service.fail_message = message
    engine = JobEngine(_origin(service), tmp_path, **FAST)
    if submitted == 1:
        with pytest.raises(JobFailedError, match="origin-1.*timeout"):
            engine.run(_circuits(), 200, scope="s")
    else:
        np.testing.assert_allclose(np.stack(engine.run(_circuits(), 200, scope="s")), EXPECTED, atol=0.15)
    assert len(service.submissions) == submitted
