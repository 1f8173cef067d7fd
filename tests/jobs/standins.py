"""Stand-ins for what tests cannot reach, and a scripted provider for fault injection.

* ``StandInQCloudService``: Origin's QCloud service is a remote network service; this object
  replaces it (and only it) at the SDK's service boundary. Its chips run the QProg objects
  the origin provider builds on pyqpanda3's own CPUQVM, so everything on our side of the
  network is real. Jobs live in the service (a re-created ``QCloudJob(id)`` re-attaches); an id
  it does not know is answered with an HTTP 404 ``RuntimeError`` in the SDK's words (QCloud
  documents no answer for an unknown job; the provider takes none as the job being lost).
* ``StandInRuntimeService``: IBM Quantum's runtime service, likewise: its backends are the
  SDK's own fake-backend snapshots under device names, its Sampler is the SDK's real Sampler in
  local testing mode (Aer), and it keeps jobs by id, tag and instance as the service does; an
  unknown id raises the SDK's ``RuntimeJobNotFound``, an unknown backend
  ``QiskitBackendNotFoundError``; ``jobs()`` searches the instance it is given, else the active one.
* ``StandInRefusingRuntimeService``: IBM's runtime service that refuses every submission (it
  replaces the service and only it): its backends are real ``IBMBackend`` objects built from a
  fake backend's snapshot (so transpilation and the Sampler's client-side code run for real),
  and a job submission (``_run``, the HTTP POST) fails the way the service answers a bad token.
* ``ScriptedProvider``: a provider whose submissions fail transiently, get throttled, hang,
  end FAILED, get lost and finish out of order, on a seeded script; it computes results
  with the real local provider and keeps its own log to check the engine against.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time

import pytest

from qpeft.jobs.base import JobLostError, Limits, Provider, State, Status, TransientError
from qpeft.jobs.local import LocalProvider

#: the IBM Cloud instance (a CRN) the stand-in runtime service's account names by default
STANDIN_CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/standin:instance-a::"


def _pyqpanda3():
    """pyqpanda3's ``core`` and ``qcloud`` (the stand-in QCloud service runs its chips on the SDK's
    CPUQVM), imported when a test first uses the service: a test that needs it skips where
    pyqpanda3 is not installed, and the engine tests that use only the scripted provider run."""
    pytest.importorskip("pyqpanda3")
    from pyqpanda3 import core, qcloud

    return core, qcloud


class _Result:
    def __init__(self, counts, failed_message="", timing=None):
        self._counts, self._message, self._timing = counts, failed_message, timing or {}

    def get_counts_list(self):
        return self._counts

    def timing_info(self):
        return dict(self._timing)

    def job_status(self):
        _, qcloud = _pyqpanda3()
        return qcloud.JobStatus.FAILED if self._message else qcloud.JobStatus.FINISHED

    def error_message(self):
        return self._message


class _ServerJob:
    """A job as the remote service holds it: it queues for ``polls`` status queries."""

    def __init__(self, job_id, progs, shots, fail_message, polls):
        self.id, self.progs, self.shots, self.fail_message, self.polls = job_id, progs, shots, fail_message, polls
        self.counts = None

    def run(self):
        core, _ = _pyqpanda3()
        counts = []
        for prog in self.progs:
            qvm = core.CPUQVM()
            qvm.run(prog, self.shots)
            counts.append(qvm.result().get_counts())
        self.counts = counts


class StandInQCloudService:
    """QCloudService's surface the provider uses: ``backends()``, ``backend(name)``, and a
    job constructor (``job(id)``, what ``QCloudJob(id)`` is with a real service)."""

    def __init__(self, backends=None, fail_first=0, key_in_errors="", timing=None, polls=2, submit_error=""):
        _pyqpanda3()  # a test that builds the service skips where pyqpanda3 is not installed
        self._backends = backends or {"full_amplitude": True, "WK_C180": True, "WK_C102_400": False}
        self.jobs: dict[str, _ServerJob] = {}
        self.submissions: list[tuple[int, int]] = []  # (programs, shots) per run call
        self.fail_first = fail_first
        self.fail_message = ""  # what the first fail_first jobs end FAILED with (default: a calibration)
        self.key_in_errors = key_in_errors
        self.timing = timing or {"qpuRunTime": "1500", "totalTime": "2100", "startTime": "2026-01-01 10:00:00"}
        self.polls = polls
        self.submit_error = submit_error  # every run call raises this (pybind RuntimeError) text
        self._ids = itertools.count(1)

    def set_backends(self, backends):
        """The chips' availability changes (a chip goes down, another comes up)."""
        self._backends = dict(backends)

    def forget(self, job_id):
        """The service no longer knows the job (purged, expired)."""
        del self.jobs[job_id]

    def backends(self):
        return dict(self._backends)

    def backend(self, name):
        if name not in self._backends:
            raise RuntimeError(f"resource is null: {name}")
        return _Chip(self)

    def job(self, job_id):
        """``QCloudJob(id)``: made without asking the service (as the SDK does); asked on use."""
        return _Job(self, job_id)


class _Chip:
    def __init__(self, service):
        self.service = service

    def run(self, progs, shots, options):
        core, qcloud = _pyqpanda3()
        assert isinstance(options, qcloud.QCloudOptions) and isinstance(shots, int)
        assert all(isinstance(p, core.QProg) for p in progs) and len(progs) <= 200
        s = self.service
        if s.submit_error:
            raise RuntimeError(s.submit_error)
        s.submissions.append((len(progs), shots))
        job_id = f"origin-{next(s._ids)}"
        message = ""
        if s.fail_first > 0:
            s.fail_first -= 1
            message = s.fail_message or f"chip calibration failed (key {s.key_in_errors})"
        s.jobs[job_id] = _ServerJob(job_id, progs, shots, message, polls=s.polls)
        return _Job(s, job_id)


class _Job:
    def __init__(self, service, job_id):
        self.service, self.id = service, job_id

    def job_id(self):
        return self.id

    def _server_job(self):
        if self.id not in self.service.jobs:  # the SDK's answer to an id the service does not know
            raise RuntimeError(f"QCloud HTTP request failed with status 404: task {self.id} not found")
        return self.service.jobs[self.id]

    def status(self):
        _, qcloud = _pyqpanda3()
        job = self._server_job()
        if job.polls > 0:
            job.polls -= 1
            return qcloud.JobStatus.QUEUING if job.polls else qcloud.JobStatus.COMPUTING
        if job.fail_message:
            return qcloud.JobStatus.FAILED
        if job.counts is None:
            job.run()
        return qcloud.JobStatus.FINISHED

    def result(self):
        job = self._server_job()
        assert job.polls == 0, "result() called before the job finished: it would block"
        if job.fail_message:
            return _Result([], job.fail_message)
        return _Result(job.counts, timing=self.service.timing)

    def cancel(self):
        self._server_job()
        return True


class StandInRuntimeService:
    """``QiskitRuntimeService``'s surface the ibm provider uses (see module docstring).

    backends: device names (``ibm_nairobi``) of fake-backend snapshots; ``least`` the one
    ``least_busy`` answers; ``usage_s`` the QPU seconds its jobs' metrics report; ``fail_next``
    the error the next job submitted ends with (status ERROR; its metrics still report its usage);
    ``instance`` the CRN the account names (None: an account saved without one, or a token alone),
    where the backends are (``_instance``, as the SDK's ``IBMBackend``) and jobs run; ``active`` the
    instance ``jobs()`` searches when it is given none (without a named instance: the SDK's active
    client, which need not be the backend's); ``others`` the account's other instances, for which,
    without a named instance, the service holds clients too (``_api_clients``, as the SDK does).
    The SDK's service object switches its active instance inside its lookups (``job``, ``jobs``,
    ``instances``), which its submissions (a Sampler's ``run``) read: ``overlaps`` counts the calls
    that met a lookup in flight or, being a lookup, met any call; ``side_by_side`` the submissions
    that met another (harmless: each sets the backend's instance); each call takes ``call_s``
    seconds. ``refusing``: instance -> the status code its job search raises with (403: an
    instance the SDK itself skips as unusable; 503: one that is down for now).
    """

    def __init__(
        self, backends=("ibm_nairobi",), least=None, usage_s=2.5, polls=0, instance=STANDIN_CRN, others=("instance-b",)
    ):
        from qiskit_ibm_runtime import fake_provider

        self.instance = instance
        self.active = where = instance or STANDIN_CRN
        self.others = [STANDIN_CRN.replace("instance-a", other) for other in others]
        self.refusing: dict[str, int] = {}
        self._crns = [where, *self.others]
        self._api_clients = {where: None} if instance else dict.fromkeys(self._crns)
        self.call_s, self.overlaps, self.side_by_side, self.instance_lists = 0.0, 0, 0, 0
        self._in_flight = {"lookup": 0, "submit": 0}
        self._counting = threading.Lock()
        self._backends = {}
        for name in backends:
            stem = name.removeprefix("ibm_").title()
            fake = (getattr(fake_provider, f"Fake{stem}V2", None) or getattr(fake_provider, f"Fake{stem}"))()
            fake.name = name  # (BackendV2.name is a plain attribute)
            fake._instance = where
            self._backends[name] = fake
        self.least = least or backends[0]
        self.usage_s = usage_s
        self.polls = polls  # status queries each job reads QUEUED first
        self.by_id: dict[str, _RuntimeJob] = {}
        self.submissions = 0
        self.fail_next = ""

    def backend(self, name):
        from qiskit.providers.exceptions import QiskitBackendNotFoundError

        if name not in self._backends:
            raise QiskitBackendNotFoundError("No backend matches the criteria.")
        return self._backends[name]

    def backends(self):
        return list(self._backends.values())

    def least_busy(self, operational=True, simulator=False):
        return self._backends[self.least]

    def active_account(self):
        # (as the SDK's: the account's fields that are set; the token is the tests' environment one)
        account = {"channel": "ibm_quantum_platform", "token": ""}
        return {**account, "instance": self.instance} if self.instance else account

    @contextlib.contextmanager
    def call(self, kind="lookup"):
        """One call of the service object, a ``lookup`` or a ``submit`` (see the class docstring)."""
        with self._counting:
            lookups, submits = self._in_flight["lookup"], self._in_flight["submit"]
            self.overlaps += bool(lookups or (kind == "lookup" and submits))
            self.side_by_side += kind == "submit" and submits > 0
            self._in_flight[kind] += 1
        try:
            time.sleep(self.call_s)
            yield
        finally:
            with self._counting:
                self._in_flight[kind] -= 1

    def instances(self):
        with self.call():
            self.instance_lists += 1
        return [{"crn": crn, "plan": "open", "name": crn.split(":")[-3]} for crn in self._crns]

    def job(self, job_id):
        from qiskit_ibm_runtime import RuntimeJobNotFound

        with self.call():
            if job_id not in self.by_id:
                raise RuntimeJobNotFound(f"Job not found: {job_id}")
            return self.by_id[job_id]

    def jobs(self, job_tags=None, limit=10, instance=None, **_):
        from qiskit_ibm_runtime.api.exceptions import RequestsApiError

        with self.call():
            pass
        where = instance or self.active
        if where in self.refusing:
            code = self.refusing[where]
            words = {403: "Client Error: Forbidden", 503: "Server Error: Service Unavailable"}[code]
            raise RequestsApiError(f"{code} {words} for url: .../jobs", status_code=code)
        found = [j for j in self.by_id.values() if set(job_tags or []) <= set(j.tags) and j.instance == where]
        return found[:limit]

    def forget(self, job_id):
        del self.by_id[job_id]

    def sampler(self, mode, options):
        """What ``Sampler(mode=backend, options=...)`` is against this service."""
        return _StandInSampler(self, mode, options)


class _StandInSampler:
    def __init__(self, service, mode, options):
        from qiskit_ibm_runtime.executor_sampler import Sampler

        self.service, self.tags = service, list(options["environment"]["job_tags"])
        self.instance = mode._instance  # (the SDK runs a job in its backend's instance)
        self._sampler = Sampler(mode=mode, options=options)  # the SDK's own, in local testing mode

    def run(self, pubs, shots=None):
        with self.service.call("submit"):
            pass
        job = _RuntimeJob(self._sampler.run(pubs, shots=shots), self.tags, self.service.usage_s, self.service.polls)
        job.failure, self.service.fail_next = self.service.fail_next, ""
        job.instance = self.instance
        self.service.by_id[job.job_id()] = job
        self.service.submissions += 1
        return job


class _RuntimeJob:
    """A service job: the local job's status and results, the service's tags and usage metrics."""

    def __init__(self, local_job, tags, usage_s, polls=0):
        self._job, self.tags, self._usage_s, self._polls = local_job, tags, usage_s, polls
        self.failure = ""

    def job_id(self):
        return self._job.job_id()

    def status(self):
        if self._polls > 0:
            self._polls -= 1
            return "QUEUED"
        return "ERROR" if self.failure else self._job.status()

    def result(self):
        return self._job.result()

    def cancel(self):
        return self._job.cancel()

    def error_message(self):
        return self.failure

    def metrics(self):
        return {"usage": {"quantum_seconds": self._usage_s, "seconds": self._usage_s}}


class StandInRefusingRuntimeService:
    """QiskitRuntimeService's surface the ibm provider uses: ``backend(name)``,
    ``least_busy()``, ``active_account()``, and ``_run`` (the job submission the Sampler makes
    through the backend's service), which raises ``error`` as the SDK raises a refused request."""

    is_local = False

    def __init__(self, error: str, saved_token: str = "", fake: str = "FakeNairobiV2"):
        from qiskit_ibm_runtime import fake_provider

        self.error, self.saved_token = error, saved_token
        self._fake = getattr(fake_provider, fake)()
        self.submissions = 0

    def active_account(self):
        return {"channel": "ibm_quantum_platform", "token": self.saved_token} if self.saved_token else None

    def backend(self, name):
        import copy

        from qiskit_ibm_runtime.ibm_backend import IBMBackend

        configuration = copy.deepcopy(self._fake.configuration())
        configuration.backend_name = name
        return IBMBackend(configuration, self, _SnapshotClient(self._fake))

    def least_busy(self, **filters):
        return self.backend("ibm_least_busy")

    def _run(self, **request):
        from qiskit_ibm_runtime.exceptions import IBMRuntimeError

        self.submissions += 1
        raise IBMRuntimeError(self.error)


class _SnapshotClient:
    """The backend's API client: calibration properties from the fake backend's snapshot."""

    def __init__(self, fake):
        self._properties = fake._load_json(fake.props_filename)

    def backend_properties(self, name, datetime=None, calibration_id=None):
        return self._properties


class ScriptedProvider(Provider):
    """Faults on a seeded script (rates per submission), results from the real local provider.

    Log: ``created`` (tag -> job ids created for it), ``states`` (job id -> final fate).
    """

    name = "scripted"
    backend = "torch"
    can_find = True

    def __init__(
        self,
        seed=0,
        max_circuits=50,
        transient=0.3,
        throttle=0.05,
        hang=0.03,
        slow=0.03,
        failed=0.05,
        lost=0.03,
        fatal_weights=None,
        hang_s=0.05,
    ):
        self.limits = Limits(max_circuits=max_circuits)
        self.local = LocalProvider("torch", max_circuits=max_circuits, workers=4)
        self.rng = random.Random(seed)
        self.rates = dict(transient=transient, throttle=throttle, hang=hang, slow=slow, failed=failed, lost=lost)
        self.fatal_weights, self.hang_s = fatal_weights, hang_s
        self.hung: set[str] = set()
        self.lock = threading.Lock()
        self.created: dict[str, list[str]] = {}
        self.fate: dict[str, str] = {}
        self.jobs: dict[str, dict] = {}
        self.rejected = 0
        self.calls = {"submit": 0, "status": 0, "result": 0}

    def _roll(self, name):
        with self.lock:
            return self.rng.random() < self.rates[name]

    def submit(self, circuits, shots, tag):
        with self.lock:
            self.calls["submit"] += 1
        if self._roll("transient"):
            self.rejected += 1
            raise TransientError("503 Service Unavailable (nothing created)")
        if self._roll("throttle"):
            self.rejected += 1
            raise TransientError("429 Too Many Requests (nothing created)")
        key = tag.split(".")[0]
        with self.lock:
            live = [j for j in self.created.get(key, []) if self.fate[j] in ("live", "done", "slow")]
            assert not live, f"key {key} submitted again while job(s) {live} live or done"
            inner = self.local.submit(circuits, shots, tag)
            self.created.setdefault(key, []).append(inner)
            fatal = any(c.weights == self.fatal_weights for c in circuits)
            fate = "failed" if fatal else "live"
            for kind in ("failed", "lost", "slow"):
                if fate == "live" and self.rng.random() < self.rates[kind]:
                    fate = kind
            self.fate[inner] = fate
            self.jobs[inner] = {"tag": tag, "polls": self.rng.randint(0, 4), "circuits": len(circuits), "fatal": fatal}
        if self._roll("hang"):
            with self.lock:
                self.hung.add(inner)
            time.sleep(self.hang_s)  # the job exists, the answer comes late (past submit_timeout)
        return inner

    def status(self, job_id):
        with self.lock:
            self.calls["status"] += 1
            fate = self.fate.get(job_id)
            if fate is None or fate == "lost":
                raise JobLostError(f"job {job_id} not found")
            if fate == "failed":
                fatal = self.jobs[job_id]["fatal"]
                return Status(State.FAILED, "invalid circuit" if fatal else "device calibration error (transient)")
            if fate == "slow":
                return Status(State.RUNNING)
            if fate == "cancelled":
                return Status(State.CANCELLED)
            job = self.jobs[job_id]
            if job["polls"] > 0:  # out of order: each job takes its own number of polls
                job["polls"] -= 1
                return Status(State.QUEUED)
        status = self.local.status(job_id)
        if status.state is State.DONE:
            with self.lock:
                self.fate[job_id] = "done"
        return status

    def result(self, job_id, circuits, shots):
        with self.lock:
            self.calls["result"] += 1
            assert self.fate[job_id] == "done", "result() before DONE"
        return self.local.result(job_id, circuits, shots)

    def cancel(self, job_id):
        with self.lock:
            if self.fate.get(job_id) in ("slow", "live"):
                self.fate[job_id] = "cancelled"

    def find(self, tag):
        with self.lock:
            for job_id, job in self.jobs.items():
                if job["tag"] == tag:
                    return job_id
        return None

    def is_transient_failure(self, message):
        return "transient" in message
