"""The ``origin`` provider: Origin Quantum's QCloud through pyqpanda3 (reference/hardware.md §1).

* The API key comes from ``QPEFT_ORIGIN_API_KEY`` (never logged, never in the ledger).
* The chip is chosen from ``service.backends()`` (names move: ``72``, ``WK_C102_400``,
  ``WK_C180``, ...): the given name must be listed and available; without one, the first
  available QPU in the service's list is used. Nothing is hard-coded.
* One job = ``QCloudBackend.run(list of QProg, shots, QCloudOptions)``: at most 200 programs,
  one shot count.
* ``QCloudJob.result()`` blocks with no timeout, so the engine polls ``status()`` and calls
  ``result()`` only after FINISHED or FAILED; a FAILED job is a status, not an exception.
* Re-attach: ``QCloudJob(job_id)`` once the service exists. QCloud documents no answer for a
  job id it does not know, and an HTTP 404 (``RuntimeError: QCloud HTTP request failed with
  status 404``) also comes from a moved or misrouted endpoint, so no answer is taken as the job
  being lost (that would pay for it again): the run stops with the job's id, and a user who finds
  the job gone from the QCloud console records it with ``qpeft jobs RUN --lost ID``.
* No lookup by tag: the SDK lists no jobs by tag or ``batch_id`` (reference/hardware.md §1.2),
  so a submission of unknown outcome is settled by hand (``qpeft jobs RUN --resolve``). A submit
  error is of unknown outcome unless it is a refusal: a throttle (429), a 503, maintenance, a
  connection never made (retried), another HTTP 4xx or a refusal the SDK names (bad API key, no
  computing power: the run stops, nothing was created). A timeout, a dropped connection, any
  other 5xx or an answer the SDK could not read may come after the job was created
  (:class:`SubmitUnsettled`).
* What a job used: ``QCloudResult.timing_info()`` (``qpuRunTime``, ``totalTime``, ...: the
  SDK's names and units), kept from the result fetch, no extra call.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence

import numpy as np

from qpeft.backends.base import require
from qpeft.backends.pyqpanda3 import to_qprog
from qpeft.jobs.base import (
    BoundCircuit,
    Limits,
    Provider,
    State,
    Status,
    TransientError,
    account_digest,
    counts_to_probs,
)

logger = logging.getLogger(__name__)

API_KEY_ENV = "QPEFT_ORIGIN_API_KEY"
#: Origin's documented cap on the tasks of one batch (tutorial_qcloud_service, note 1)
MAX_PROGRAMS = 200
#: QCloud's simulators; they reject batched QCloudOptions runs ("Run with QCloudOptions is only for QPU")
SIMULATORS = ("full_amplitude", "single_amplitude", "partial_amplitude")
# Messages (pybind RuntimeError text) that name a passing condition of the network or service.
_TRANSIENT = (
    "curl_easy_perform",
    "timed out",
    "timeout",
    "status 429",
    "status 500",
    "status 502",
    "status 503",
    "status 504",
    "server connection failed",
    "under maintenance",
)
# Of those, what a submit may be retried after: the service refused the request (a throttle, a
# 503, maintenance) or it never left (no connection). After a timeout, a dropped connection or
# another 5xx the job may exist; its outcome is unknown (settled by hand: Origin cannot find jobs).
_REFUSED = ("status 429", "status 503", "under maintenance", "couldn't connect", "couldn't resolve")
# FAILED-task messages of a passing condition of the service, not of the task (is_transient_failure)
_FAILURE_PASSING = ("under maintenance", "server connection failed", "status 429", "status 503")
# Submit errors that are answers refusing the request (nothing was created): an HTTP 4xx, or a
# refusal the SDK names (QPanda's error list, reference/hardware.md §1)
_CLIENT_ERROR = re.compile(r"request failed with status 4\d\d\b")  # (the SDK's words, not a body it quotes)
_REFUSALS = ("api key error", "un-activate products", "lack of computing power", "exceeding maximum timing sequence")
_NOT_FOUND = "status 404"


class SubmitUnsettled(TransientError):
    """A submit error that may have come after QCloud created the job (a 5xx other than 503, an
    answer the SDK could not read, ...): :meth:`OriginProvider.created_nothing` is False, so the
    engine records the submission as unknown, to be settled by hand."""


def measured_qprog(circuit: BoundCircuit):
    """A ``QProg`` of the bound circuit with every qubit measured into its own bit."""
    core = require("pyqpanda3.core", "pyqpanda3")
    prog = to_qprog(circuit.circuit, circuit.inputs or None, circuit.weights or None)
    n = circuit.circuit.n_qubits
    prog << core.measure(list(range(n)), list(range(n)))
    return prog


class OriginProvider(Provider):
    """Origin QCloud chips (see module docstring).

    service / job_factory: the QCloud service and the ``QCloudJob`` constructor; tests pass a
    stand-in for the unreachable service here, and nowhere else.
    """

    name = "origin"
    limits = Limits(max_circuits=MAX_PROGRAMS)

    def __init__(
        self,
        backend: str | None = None,
        *,
        api_key: str | None = None,
        service=None,
        job_factory: Callable | None = None,
        amend: bool = True,
        mapping: bool = True,
        optimization: bool = True,
    ):
        qcloud = require("pyqpanda3.qcloud", "pyqpanda3")
        self._qcloud = qcloud
        self._key = api_key or os.environ.get(API_KEY_ENV, "")
        if service is None and not self._key:
            raise ValueError(f"the origin provider needs an API key: set {API_KEY_ENV} (account.originqc.com.cn)")
        try:  # the service is asked here, before any model loads: a bad key or chip fails at once
            self._service = service if service is not None else self._call(qcloud.QCloudService, self._key)
            self.backend = self._choose(backend)
            self._chip = self._call(self._service.backend, self.backend)
        except RuntimeError as err:  # (TransientError: retried by providers.connect)
            if isinstance(err, TransientError):
                raise
            raise ValueError(
                f"Origin QCloud refused the request ({err}): check the API key in {API_KEY_ENV} "
                "(account.originqc.com.cn) and the chip name"
            ) from None
        self._job_factory = job_factory or qcloud.QCloudJob
        self._run_options = qcloud.QCloudOptions()
        self._run_options.set_amend(amend)
        self._run_options.set_mapping(mapping)
        self._run_options.set_optimization(optimization)
        self.options = {"amend": amend, "mapping": mapping, "optimization": optimization}
        self._jobs: dict = {}
        self._timing: dict[str, dict] = {}  # job id -> timing_info() of its fetched result

    def _call(self, fn, *args, job_id: str | None = None):
        """``fn(*args)``, its RuntimeErrors redacted: transient ones as TransientError; for a call
        about a job (``job_id``), an HTTP 404 says what to do (see module docstring)."""
        try:
            return fn(*args)
        except RuntimeError as err:
            text = self.redact(str(err))
            if self.is_transient(err):
                raise TransientError(text) from None
            if job_id is not None and _NOT_FOUND in text:
                raise RuntimeError(
                    f"QCloud answered HTTP 404 ({text}). QCloud documents no answer for a job it "
                    "does not know, and a moved or misrouted endpoint answers 404 too, so the job is not taken as lost "
                    "(that would pay for it again). Look it up in the QCloud console of the account that made it: if "
                    f"it is listed, rerun later; if it is gone, run `qpeft jobs RUN_DIR --lost {job_id}` and rerun "
                    "(the rerun pays for it again)"
                ) from None
            raise RuntimeError(text) from None

    def _choose(self, backend: str | None) -> str:
        available = dict(self._call(self._service.backends))
        qpus = [name for name, up in available.items() if up and name not in SIMULATORS]
        if backend is None:
            if not qpus:
                raise ValueError(f"Origin QCloud lists no available QPU; backends: {available}")
            logger.info("origin: using chip %s (available QPUs: %s)", qpus[0], qpus)
            return qpus[0]
        if backend not in available:
            raise ValueError(f"Origin QCloud has no backend {backend!r}; it lists {sorted(available)}")
        if backend in SIMULATORS:
            raise ValueError(f"{backend!r} is a QCloud simulator, which takes no program batches; choose a QPU: {qpus}")
        if not available[backend]:
            raise ValueError(f"Origin backend {backend!r} is not available now; available QPUs: {qpus}")
        return backend

    def secrets(self) -> list[str]:
        return [self._key]

    def account(self) -> str | None:
        """The API key's digest: QCloud tasks belong to the account of the key that made them."""
        return account_digest(self._key)

    @classmethod
    def is_transient_error(cls, error: BaseException) -> bool:
        if isinstance(error, TransientError):
            return True
        return isinstance(error, RuntimeError) and any(t in str(error).lower() for t in _TRANSIENT)

    def created_nothing(self, error: BaseException) -> bool:
        """Whether a transient submit error certainly created no job: a refusal (429, 503,
        maintenance) or a connection never made; not a timeout, a dropped connection or another 5xx."""
        return not isinstance(error, SubmitUnsettled) and any(t in str(error).lower() for t in _REFUSED)

    def is_transient_failure(self, message: str) -> bool:
        """Whether a FAILED task's message names a passing condition of the service (maintenance,
        a throttle, a lost connection inside it): submitted again. Not a timeout: a task that ran
        out of time may do so again, and be paid for again; the run stops with its id."""
        return any(t in message.lower() for t in _FAILURE_PASSING)

    def submit(self, circuits: Sequence[BoundCircuit], shots: int | None, tag: str) -> str:
        """One QCloud batch job: every circuit as a measured QProg, one shot count for all.

        Origin cannot look jobs up by tag, so ``tag`` is not sent; a submission whose answer never
        comes is settled by hand (``qpeft jobs RUN_DIR --resolve TAG``).

        Args:
            circuits: the job's circuits (at most 200 programs).
            shots: shots per program (required).
            tag: the engine's submission tag (unused by the service).

        Returns:
            The QCloud job id.

        Raises:
            ValueError: ``shots`` is None (a QPU samples).
        """
        if shots is None:
            raise ValueError("a QPU samples: the origin provider needs `shots`")
        progs = [measured_qprog(c) for c in circuits]
        try:
            job = self._call(self._chip.run, progs, shots, self._run_options)
        except Exception as err:  # (pybind turns C++ exceptions into RuntimeError, ValueError, IndexError, ...)
            text = self.redact(str(err)).lower()
            if isinstance(err, TransientError) or _CLIENT_ERROR.search(text) or any(r in text for r in _REFUSALS):
                raise  # (TransientError: created_nothing decides)
            raise SubmitUnsettled(
                f"the submit failed with an error that does not say whether QCloud created the job "
                f"({self.describe(err)})"
            ) from None
        job_id = job.job_id()
        self._jobs[job_id] = job
        return job_id

    def _job(self, job_id: str):
        job = self._jobs.get(job_id)
        if job is None:  # re-attach (e.g. after a restart)
            job = self._jobs[job_id] = self._call(self._job_factory, job_id, job_id=job_id)
        return job

    def status(self, job_id: str) -> Status:
        """The job's QCloud status mapped onto :class:`State` (WAITING, QUEUING: queued; COMPUTING:
        running; FINISHED: done; FAILED: failed, with the result's error message, secrets removed).

        Raises:
            RuntimeError: the service's error (an HTTP 404 says what to do: see module docstring).
        """
        s = self._qcloud.JobStatus
        state = self._call(self._job(job_id).status, job_id=job_id)
        if state == s.FINISHED:
            return Status(State.DONE)
        if state == s.FAILED:  # a failure is a status; its message comes with the (now prompt) result
            message = self._call(self._job(job_id).result, job_id=job_id).error_message()
            return Status(State.FAILED, self.redact(str(message)))
        if state == s.COMPUTING:
            return Status(State.RUNNING)
        return Status(State.QUEUED)  # WAITING, QUEUING

    def result(self, job_id: str, circuits, shots) -> list[np.ndarray]:
        """The job's counts as probabilities in qpeft's bit order, one per program in job order; keeps
        the result's ``timing_info`` for :meth:`usage`.

        Raises:
            RuntimeError: the service returned another number of results than programs, or its
                error (an HTTP 404 says what to do: see module docstring).
        """
        result = self._call(self._job(job_id).result, job_id=job_id)
        counts = result.get_counts_list()
        if len(counts) != len(circuits):
            raise RuntimeError(f"origin job {job_id} returned {len(counts)} results for {len(circuits)} programs")
        try:
            self._timing[job_id] = dict(result.timing_info())
        except (AttributeError, RuntimeError):  # (older SDKs, or a result without timing fields)
            pass
        return [counts_to_probs(c, b.circuit.n_qubits) for c, b in zip(counts, circuits)]

    def cancel(self, job_id: str) -> bool:
        """The SDK's answer: False when the service says the task cannot be cancelled."""
        return bool(self._call(self._job(job_id).cancel, job_id=job_id))

    def usage(self, job_id: str) -> dict | None:
        """``timing_info()`` of the job's result (numbers where the text is one), as the SDK names them."""
        timing = self._timing.pop(job_id, None)
        return {k: _number(v) for k, v in timing.items()} if timing else None


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text
