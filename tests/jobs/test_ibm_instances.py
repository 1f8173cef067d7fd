"""IBM Quantum accounts with several service instances. qiskit-ibm-runtime's service object asks,
for a job id, its active instance and then every other one it has a client for, passing over
their errors, and searches job tags in its active instance unless given one; it switches its
active instance inside its calls. So a "not found" is final only where the service asks one
instance alone, a tag is looked up wherever the job may be, and the provider calls the service
one thread at a time. IBM's service is remote: ``StandInRuntimeService`` stands in for it (and
only it; the SDK's Sampler runs in its local testing mode on Aer)."""

import numpy as np
import pytest
from standins import STANDIN_CRN, StandInRuntimeService

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.base import Limits, account_digest
from qpeft.jobs.calls import ProviderError
from qpeft.jobs.ledger import read_ledger
from qpeft.quantum.circuit import Circuit, Weight

pytest.importorskip("qiskit_ibm_runtime")
pytest.importorskip("qiskit_aer")

RY = Circuit(1).add("RY", [0], Weight(0))
THETAS = np.linspace(0.1, 3.0, 4)
EXPECTED = np.stack([np.cos(THETAS / 2) ** 2, np.sin(THETAS / 2) ** 2], axis=1)  # RY|0>, closed form
FAST = dict(poll_interval=0.001, max_poll_interval=0.004, progress=False)
INSTANCE_B = STANDIN_CRN.replace("instance-a", "instance-b")


def _circuits():
    return [BoundCircuit(RY, (float(t),)) for t in THETAS]


def _provider(service, **kw):
    from qpeft.jobs.ibm import IBMProvider

    return IBMProvider("ibm_nairobi", service=service, sampler_factory=service.sampler, **kw)


def test_without_a_named_instance_a_tag_is_looked_up_in_every_instance():
    """The job was made in instance b (where the first process's SDK found the backend); after a
    restart the SDK finds the backend in instance a (b's listing failed once): the tag is still
    found, so the submission is not taken as having created nothing (and paid again)."""
    service = StandInRuntimeService(instance=None)
    backend = service.backend("ibm_nairobi")
    backend._instance = INSTANCE_B
    job_id = _provider(service).submit(_circuits()[:1], 100, "k.1")
    assert service.by_id[job_id].instance == INSTANCE_B
    backend._instance = STANDIN_CRN
    assert _provider(service).find("k.1") == job_id and service.instance_lists == 1
    assert _provider(service).find("k.2") is None


def test_a_search_that_fails_in_one_instance_asks_the_others_and_is_no_answer_if_none_has_it():
    """Without a named instance the account lists instances the SDK cannot use (their search
    fails): the job is still found in another; where no instance has it and one failed, the
    lookup is an error (the job may be in the failed one), never "no job", which pays again:
    transient where the failure may pass (retried), else one that says how to settle it."""
    from qpeft.jobs.base import TransientError

    service = StandInRuntimeService(instance=None, others=("instance-c", "instance-b"))
    backend = service.backend("ibm_nairobi")
    backend._instance = INSTANCE_B
    job_id = _provider(service).submit(_circuits()[:1], 100, "k.1")
    backend._instance = STANDIN_CRN
    instance_c = STANDIN_CRN.replace("instance-a", "instance-c")
    service.refusing = {instance_c: 403}
    assert _provider(service).find("k.1") == job_id
    with pytest.raises(RuntimeError, match=f"failed in 1 of the account's instances \\({instance_c}: .*403.*--resolve"):
        _provider(service).find("k.2")
    service.refusing = {instance_c: 403, INSTANCE_B: 503}
    with pytest.raises(TransientError, match="503"):
        _provider(service).find("k.2")
    service.refusing = {}
    assert _provider(service).find("k.2") is None


def test_a_named_instance_is_the_only_one_searched():
    service = StandInRuntimeService()  # (the account names its instance)
    job_id = _provider(service).submit(_circuits()[:1], 100, "k.1")
    assert _provider(service).find("k.1") == job_id and service.instance_lists == 0


def test_a_name_that_matched_two_instances_does_not_make_not_found_final(tmp_path):
    """An account saved with an instance name that two instances share gets a client for each:
    the SDK asks both for a job and passes over their errors, so "not found" stops the run."""
    service = StandInRuntimeService(polls=10**6)
    service._api_clients[INSTANCE_B] = None  # (the SDK's client per matching CRN)
    with pytest.raises(TimeoutError, match="still open"):
        JobEngine(_provider(service), tmp_path, deadline=1.0, **FAST).run(_circuits()[:1], 100, scope="s")
    (job_id,) = [r["job_id"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl") if r["event"] == "submitted"]
    service.forget(job_id)
    with pytest.raises(ProviderError, match=f"--lost {job_id}.*QPEFT_IBM_INSTANCE"):  # (not a job made anew)
        JobEngine(_provider(service), tmp_path, deadline=5.0, **FAST).run(_circuits()[:1], 100, scope="s")
    assert service.submissions == 1
    assert "lost" not in [r["event"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl")]


def test_the_service_object_is_called_one_thread_at_a_time(tmp_path):
    """Four jobs left open are re-attached by a restart in four engine threads; every call that
    reaches the service object (job lookups; submissions) comes alone."""
    service = StandInRuntimeService(polls=10**6, instance=None)
    service.call_s = 0.05

    def provider():
        made = _provider(service)
        made.limits = Limits(max_circuits=1)  # (one job per circuit: four jobs)
        return made

    with pytest.raises(TimeoutError, match="still open"):
        JobEngine(provider(), tmp_path, deadline=1.5, max_parallel=4, **FAST).run(_circuits(), 400, scope="s")
    for job in service.by_id.values():
        job._polls = 0
    out = JobEngine(provider(), tmp_path, max_parallel=4, **FAST).run(_circuits(), 400, scope="s")
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=0.15)
    assert service.submissions == 4 and service.overlaps == 0


def test_QPEFT_IBM_INSTANCE_names_the_instance(monkeypatch):
    runtime = pytest.importorskip("qiskit_ibm_runtime")
    made = []

    def service(token=None, **kw):
        made.append(kw)
        return StandInRuntimeService(instance=kw.get("instance"))

    monkeypatch.setattr(runtime, "QiskitRuntimeService", service)
    monkeypatch.setenv("QPEFT_IBM_INSTANCE", STANDIN_CRN)
    from qpeft.jobs.ibm import IBMProvider

    provider = IBMProvider("ibm_nairobi")
    assert made == [{"instance": STANDIN_CRN}] and provider.account() == account_digest(STANDIN_CRN)
    assert provider._one_instance()
    monkeypatch.delenv("QPEFT_IBM_INSTANCE")
    assert not IBMProvider("ibm_nairobi")._one_instance() and made[-1] == {}
    # an account that names no instance, with one client (it can use one): still not "named"
    one = StandInRuntimeService(instance=None, others=())
    monkeypatch.setattr(runtime, "QiskitRuntimeService", lambda token=None: one)
    assert not IBMProvider("ibm_nairobi")._one_instance()


def test_an_instance_the_token_cannot_reach_is_a_clear_error(monkeypatch):
    runtime = pytest.importorskip("qiskit_ibm_runtime")
    from qiskit_ibm_runtime.exceptions import IBMInputValueError

    def refusing(token=None, instance=None):
        raise IBMInputValueError(
            f"The given API token is associated with an account that does not have access to the instance {instance}."
        )

    monkeypatch.setattr(runtime, "QiskitRuntimeService", refusing)
    from qpeft.jobs.ibm import IBMProvider

    with pytest.raises(ValueError, match="does not have access.*check QPEFT_IBM_INSTANCE"):
        IBMProvider("ibm_nairobi", instance="crn:v1:other")


def test_a_submission_that_never_answers_does_not_hold_up_the_lookup_of_its_tag(tmp_path):
    """The SDK's requests have no read timeout: a submission whose answer never comes holds the
    service object. The engine's lookup of its tag finds the object busy (a transient error,
    retried as such: max_attempts, with backoff) and the run stops with the submission unknown,
    to be settled by a rerun; the lookup does not wait for the stuck call."""
    import threading
    import time

    service = StandInRuntimeService(instance=None)
    provider = _provider(service)
    provider.busy_s = 0.1
    sampler, release = service.sampler, threading.Event()

    def stuck(**kw):
        made = sampler(**kw)
        made.run = lambda *args, **kwargs: release.wait(30) and None
        return made

    provider._sampler_factory = stuck
    engine = JobEngine(provider, tmp_path, deadline=2.0, submit_timeout=0.3, **FAST)
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError, match="busy for 0.1 s") as stopped:
            engine.run(_circuits()[:1], 100, scope="s")
        waited = time.monotonic() - started
    finally:
        release.set()
    assert waited < 15, f"the run waited {waited:.0f} s for a stuck call"  # (the call holds out for 30 s)
    events = [r["event"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl")]
    assert events[-1] == "unknown" and service.submissions == 0, (events, stopped.value)


@pytest.mark.parametrize("instance", [STANDIN_CRN, None], ids=["named-instance", "no-named-instance"])
def test_submissions_run_side_by_side(tmp_path, instance):
    """Submissions agree on the service object's active instance (each sets the backend's), so
    they are not queued one behind another (queued, each would wait out submit_timeout and read
    as a submission of unknown outcome, or find the object busy and use up its attempts)."""
    service = StandInRuntimeService(instance=instance)
    service.call_s = 0.4

    def provider():
        made = _provider(service)
        made.limits = Limits(max_circuits=1)
        return made

    out = JobEngine(provider(), tmp_path, max_parallel=4, submit_timeout=1.2, **FAST).run(_circuits(), 400, scope="s")
    np.testing.assert_allclose(np.stack(out), EXPECTED, atol=0.15)
    events = [r["event"] for r in read_ledger(tmp_path / "jobs" / "ledger.jsonl")]
    assert "unknown" not in events and service.submissions == 4
    assert service.side_by_side > 0 and (instance is not None or service.overlaps == 0)
