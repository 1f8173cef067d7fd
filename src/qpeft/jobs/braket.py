"""The ``braket`` provider: Amazon Braket through the amazon-braket-sdk (reference/hardware.md §5, §7).

* ``braket:DEVICE``: a short name of :data:`DEVICES` (``ionq_forte``, ``iqm_garnet``,
  ``rigetti_ankaa``, ``sv1``, ...) or a device ARN. ``braket:local`` and ``braket:local_dm`` run
  Braket's LocalSimulator (state vector; density matrix, where ``noise`` (a dict of qpeft's
  :class:`~qpeft.quantum.density.NoiseModel` fields) becomes a Braket noise model): in-process,
  offline and free; their jobs end with the process.
* A job is one quantum task. Where the device lists program sets (``braket.ir.openqasm.program_set``
  in its action map: Braket's local simulators and its gate-based QPUs), the task is a
  ``ProgramSet`` with one ``CircuitBinding`` per circuit template holding the angles of its
  circuits, within the device's ``maximumExecutables`` and ``maximumTotalShots``; the per-task fee is
  paid once per program set. Elsewhere a task holds one circuit (Braket's ``run_batch`` convention:
  one task per circuit), and the engine's ``max_parallel`` plays ``run_batch``'s (10 by default in
  both). ``CreateQuantumTask`` is limited to 20 per second per account (burst 40).
* Every task is tagged ``{"qpeft-tag": TAG}``. :meth:`BraketProvider.find` looks a task up by it:
  ``SearchQuantumTasks`` filters by device and creation time only (not by tag), so the tags of the
  summaries of the device's tasks created in the last ``find_days`` are read.
* States: CREATED and QUEUED are QUEUED; RUNNING and CANCELLING are RUNNING; COMPLETED is DONE;
  FAILED (with the service's ``failureReason``) and CANCELLED end the job. A task ARN the service
  does not know (``ResourceNotFoundException``) is :class:`JobLostError`.
* Transient (retried by the engine; on a submit, the service created nothing): ``ThrottlingException``,
  ``ServiceQuotaExceededException`` (a concurrent-task quota), and a connection that could not be
  made. A create call whose outcome is unknown (``InternalServiceException``, a read timeout or a
  dropped connection after the request was sent) is settled by the task's tag, looked up for
  ``settle_s`` seconds, then by the create call made again with the same ``clientToken``
  (``CreateQuantumTask``'s idempotency token, which botocore otherwise makes anew per call, and
  keeps for its own retries of a call): the service is to answer a token it has seen with the
  task that token made (AWS's idempotency convention; the API reference states no window), so
  a task the search does not list yet (its index lags) is not made twice. Every create call of
  one submission by one provider object carries the token; it holds a random part of the
  provider's own, so another provider (another run, this one after a restart) gets no task by
  it. After :data:`CREATES` calls without an answer the submission is unsettled
  (:class:`CreateUnsettled`): the engine records it as unknown and settles it by its tag.
* What a finished task used: its shots, the seconds from creation to end, and for a program set
  its successful shots and failed executables (GetQuantumTask and the result's metadata).
* Credentials: boto3's chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
  ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, SSO); the secret key and session token never reach a
  ledger, log or message. Results go to ``s3_folder`` (``s3://bucket/prefix``), by default the
  SDK's ``amazon-braket-{region}-{account}/tasks``.
* Checked when the provider is made: no credentials, an unknown device, a device that is not
  ONLINE, or a refused request is a ValueError saying what to fix.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
import warnings
from collections.abc import Sequence

import numpy as np

from qpeft.backends.base import require
from qpeft.backends.braket import noise_model
from qpeft.jobs.base import (
    BoundCircuit,
    JobLostError,
    Limits,
    Provider,
    State,
    Status,
    TransientError,
)
from qpeft.jobs.braket_session import (
    DEVICES,
    MAYBE_SENT,
    NOT_SENT,
    TRANSIENT_CODES,
    client_token,
    connect,
    error_code,
    results_folder,
    session_account,
    session_secrets,
)
from qpeft.jobs.braket_tasks import probabilities, result_usage, task_specification, task_usage

#: the LocalSimulator backends
LOCAL = {"local": "braket_sv", "local_dm": "braket_dm"}
#: program-set limits (maximumExecutables, maximumTotalShots) of the LocalSimulator's properties
#: (amazon-braket-default-simulator 1.41); ``qpeft plan`` assumes them for remote devices too,
#: whose own properties (read when the provider connects) decide the split of a run
PROGRAM_SET_LIMITS = (100, 200_000)
#: the tag key every task carries (its value: the engine's tag)
TAG_KEY = "qpeft-tag"
#: create calls of one submission, each after the one before gave no answer and the search by tag
#: did not list its task within ``settle_s``
CREATES = 3


class CreateUnsettled(TransientError):
    """Create calls of unknown outcome that neither the search by tag nor a call made again
    settled: the task may exist (:meth:`BraketProvider.created_nothing` is False; the engine
    records the submission as unknown and settles it by its tag, never submitting it blindly)."""


_STATES = {
    "CREATED": State.QUEUED,
    "QUEUED": State.QUEUED,
    "RUNNING": State.RUNNING,
    "CANCELLING": State.RUNNING,
    "COMPLETED": State.DONE,
    "FAILED": State.FAILED,
    "CANCELLED": State.CANCELLED,
}


class BraketProvider(Provider):
    """Amazon Braket devices, or its LocalSimulator for ``local`` / ``local_dm`` (see module docstring).

    aws_session: a ``braket.aws.AwsSession`` (default: one on boto3's credentials in the device's
    region; tests pass one whose boto3 session answers for the unreachable service).
    """

    name = "braket"
    limits = Limits(max_circuits=PROGRAM_SET_LIMITS[0], max_executions=PROGRAM_SET_LIMITS[1])
    can_find = True

    def __init__(
        self,
        backend: str | None = None,
        *,
        noise: dict | None = None,
        s3_folder: str | None = None,
        region: str | None = None,
        aws_session=None,
        find_days: float = 90.0,
        settle_s: float = 60.0,
    ):
        if not backend:
            raise ValueError(
                "name a Braket device: braket:local or braket:local_dm (LocalSimulator, offline), "
                f"braket:{', braket:'.join(DEVICES)}, or braket:ARN"
            )
        require("braket.circuits", "braket")
        self.backend = self.backend_name(backend)
        self.local = self.backend in LOCAL
        self.durable = self.remote = not self.local  # LocalSimulator tasks end with the process
        if noise and self.backend != "local_dm":
            raise ValueError(f"`noise` needs the density-matrix simulator, braket:local_dm (not braket:{backend})")
        self._noise = noise_model(noise) if noise else None
        self.options = {"noise": repr(sorted(noise.items()))} if noise else {}
        self.find_days, self.settle_s = find_days, settle_s
        self._tasks: dict[str, object] = {}  # task ARN (or local id) -> its AwsQuantumTask
        self._tags: dict[str, str] = {}
        self._results: dict[str, object] = {}  # local tasks: id -> result (or the exception it raised)
        self._usage: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._nonce = uuid.uuid4().hex  # (the clientToken's own part: see module docstring)
        self._token = threading.local()  # the clientToken of the create call this thread is making
        self._token_client = None  # the braket client _client_token is registered on
        if self.local:
            self._session, self._s3 = None, None
            self._device = require("braket.devices", "braket").LocalSimulator(LOCAL[self.backend])
        else:
            self._session, self._device = connect(self.backend, aws_session, region, self._keep, self.redact)
            self._s3 = results_folder(s3_folder)
        self._properties = self._device.properties
        self.limits = self._limits()

    # ---- naming and limits (offline) -----------------------------------------------------

    @classmethod
    def backend_name(cls, backend: str | None) -> str | None:
        """The short name of a device asked for by its ARN (``...ionq/Forte-1`` -> ``ionq_forte``),
        else ``backend`` itself."""
        by_arn = {arn: name for name, arn in DEVICES.items()}
        return by_arn.get(backend, backend) if backend else backend

    @classmethod
    def plan_limits(cls, backend: str | None, **options) -> Limits:
        """The program-set limits :data:`PROGRAM_SET_LIMITS` (offline, for ``qpeft plan``)."""
        return cls.limits

    def _limits(self) -> Limits:
        action_type = require("braket.device_schema", "braket").DeviceActionType
        action = self._properties.action
        task_shots = self._properties.service.shotsRange[1]
        program_set = action.get(action_type.OPENQASM_PROGRAM_SET)
        if program_set is None:  # one circuit per task (Braket's run_batch)
            return Limits(max_circuits=1, max_executions=task_shots)
        total = min(x for x in (program_set.maximumTotalShots, task_shots) if x)
        return Limits(max_circuits=program_set.maximumExecutables, max_executions=total)

    # ---- connecting ----------------------------------------------------------------------

    def _keep(self, session) -> None:
        self._session = session  # (secrets() reads its credentials from here on)

    def secrets(self) -> list[str]:
        return session_secrets(getattr(self, "_session", None))

    def account(self) -> str | None:
        if self.local:
            return None
        if not hasattr(self, "_account"):
            self._account = session_account(self._session, self.redact)
        return self._account

    @classmethod
    def is_transient_error(cls, error: BaseException) -> bool:
        if isinstance(error, TransientError):
            return True
        return error_code(error) in TRANSIENT_CODES or type(error).__name__ in (*NOT_SENT, *MAYBE_SENT)

    def created_nothing(self, error: BaseException) -> bool:
        return not isinstance(error, CreateUnsettled)

    # ---- submitting ----------------------------------------------------------------------

    def _supported(self) -> set[str] | None:
        action_type = require("braket.device_schema", "braket").DeviceActionType
        action = self._properties.action.get(action_type.OPENQASM)
        return {op.lower() for op in action.supportedOperations} if action is not None else None

    def submit(self, circuits: Sequence[BoundCircuit], shots: int | None, tag: str) -> str:
        """Create one quantum task of ``circuits`` (``shots`` each), tagged ``tag``; returns its ARN
        (a ``local-...`` id on the LocalSimulator, which has run it by then). Raises ValueError for
        missing shots, too many circuits for one task, a circuit wider than the device or a gate it
        lacks; the SDK's errors otherwise (a create of unknown outcome is settled by the tag)."""
        if shots is None:
            raise ValueError("Braket samples: the braket provider needs `shots`")
        if len(circuits) > self.limits.chunk_size(shots):
            raise ValueError(
                f"{len(circuits)} circuits of {shots} shots pass Braket device {self.backend}'s per-task limits "
                f"{self.limits}; the job engine splits calls within them"
            )
        qubits = self._properties.paradigm.qubitCount
        widest = max(c.circuit.n_qubits for c in circuits)
        if widest > qubits:
            raise ValueError(f"a {widest}-qubit circuit does not fit Braket device {self.backend} ({qubits} qubits)")
        one_per_task = self.limits.max_circuits == 1
        spec = task_specification(circuits, shots, one_per_task, self._supported(), self._noise)
        total = shots * len(circuits)
        if self.local:
            return self._run_local(spec, total, tag)
        self._hand_tokens()
        self._token.value = client_token(self._nonce, tag)
        try:
            task, arn = self._create(spec, total, tag)
        finally:
            self._token.value = None
        with self._lock:
            self._tasks[arn] = task
            self._tags[tag] = arn
        return arn

    def _create(self, spec, total: int, tag: str) -> tuple[object | None, str]:
        """(AwsQuantumTask or None, ARN) of the one task of this submission. A create call of
        unknown outcome is settled by the tag (looked up for ``settle_s`` seconds), then made again
        with the same client token (the service answers with the task that token made, or makes
        it), at most :data:`CREATES` calls; past them, :class:`CreateUnsettled`."""
        for call in range(1, CREATES + 1):
            try:
                task = self._device.run(
                    spec, s3_destination_folder=self._s3, shots=total, tags={TAG_KEY: tag}, quiet=True
                )
                return task, task.id
            except Exception as err:
                if type(err).__name__ in MAYBE_SENT or error_code(err) == "InternalServiceException":
                    lost = err
                elif call == 1:
                    raise
                else:  # (an earlier call may have made the task)
                    raise CreateUnsettled(
                        self._unsettled(tag, lost, f"create call {call} failed ({self.describe(err)})")
                    ) from None
            try:
                arn = self._settle(tag)
            except Exception as err:  # (a search that failed settles nothing)
                raise CreateUnsettled(
                    self._unsettled(tag, lost, f"the search for it failed ({self.describe(err)})")
                ) from None
            if arn is not None:
                return None, arn
        why = f"{CREATES} create calls gave no answer, and the search listed no task within {self.settle_s:g} s of each"
        raise CreateUnsettled(self._unsettled(tag, lost, why))

    def _unsettled(self, tag: str, lost: BaseException, why: str) -> str:
        return (
            f"a create call of the task tagged {tag} may have reached the service, but its answer was lost "
            f"({self.describe(lost)}), and {why}: the task may exist"
        )

    def _hand_tokens(self) -> None:
        """Our client token goes into the create calls of the client the SDK creates tasks with
        (the session's braket_client: a plugin sharing the session may have replaced it)."""
        client = self._session.braket_client
        if client is not self._token_client:  # (the most specific event: before botocore fills in a new token)
            client.meta.events.register(
                "before-parameter-build.braket.CreateQuantumTask", self._client_token, unique_id=self._nonce
            )
            self._token_client = client

    def _client_token(self, params: dict, **_) -> None:
        token = getattr(self._token, "value", None)
        if token is not None:
            params["clientToken"] = token

    def _run_local(self, spec, total: int, tag: str) -> str:
        task_id = f"local-{uuid.uuid4().hex}"
        try:
            with warnings.catch_warnings():  # (its density-matrix simulator warns about a noiseless circuit)
                warnings.filterwarnings("ignore", message="You are running a noise-free circuit")
                result = self._device.run(spec, shots=total).result()
        except Exception as err:  # a failed task is a FAILED status, as on the service
            result = err
        with self._lock:
            self._results[task_id] = result
            self._tags[tag] = task_id
        return task_id

    def _settle(self, tag: str) -> str | None:
        """The ARN of the task tagged ``tag`` if the search lists one within ``settle_s`` seconds."""
        give_up = time.time() + self.settle_s
        while True:
            arn = self.find(tag)
            if arn is not None or time.time() >= give_up:
                return arn
            time.sleep(min(2.0, max(give_up - time.time(), 0.0)))

    # ---- following -----------------------------------------------------------------------

    def _task(self, job_id: str):
        with self._lock:
            task = self._tasks.get(job_id)
        if task is None:  # re-attach (a task submitted by another process, or whose create call gave no answer)
            task = require("braket.aws", "braket").AwsQuantumTask(job_id, aws_session=self._session, quiet=True)
            with self._lock:
                self._tasks[job_id] = task
        return task

    def _metadata(self, job_id: str) -> dict:
        try:
            return self._task(job_id).metadata()
        except Exception as err:
            if error_code(err) == "ResourceNotFoundException":
                words = self.redact(str(err))
                raise JobLostError(f"braket task {job_id}: the service does not know it ({words})") from None
            raise

    def status(self, job_id: str) -> Status:
        """The task's state from GetQuantumTask (module docstring); JobLostError for an ARN the
        service does not know, or a LocalSimulator task of another process."""
        if self.local:
            if job_id not in self._results:
                raise JobLostError(f"braket local task {job_id} ended with its process")
            failure = self._results[job_id]
            if isinstance(failure, Exception):
                return Status(State.FAILED, self.redact(f"{type(failure).__name__}: {failure}"))
            return Status(State.DONE)
        metadata = self._metadata(job_id)
        state = _STATES.get(metadata.get("status", ""), State.QUEUED)
        message = metadata.get("failureReason", "") if state is State.FAILED else ""
        if state.terminal:
            self._usage[job_id] = task_usage(metadata)
        return Status(state, self.redact(str(message)))

    def result(self, job_id: str, circuits, shots) -> list[np.ndarray]:
        """One probability vector per circuit (input order) from the finished task's counts."""
        result = self._results[job_id] if self.local else self._task(job_id).result()
        if job_id in self._usage:  # (a remote task's GetQuantumTask figures, from its last status)
            self._usage[job_id].update(result_usage(result))
        try:
            return probabilities(result, circuits)
        except RuntimeError as err:
            raise RuntimeError(f"braket task {job_id}: {err}") from None

    def cancel(self, job_id: str) -> bool | None:
        """Ask the service to cancel a task; False when it refuses (a task that already ended).
        LocalSimulator tasks run inside ``submit``: they have always ended."""
        if self.local:
            return False
        try:
            self._task(job_id).cancel()
        except Exception as err:
            if error_code(err) == "ResourceNotFoundException":
                raise JobLostError(f"braket task {job_id}: the service does not know it") from None
            if error_code(err) == "ConflictException":
                return False
            raise
        return True

    def usage(self, job_id: str) -> dict | None:
        """The finished task's ``shots`` and ``seconds`` from creation to end (GetQuantumTask), and
        a program set's ``successful_shots`` and ``failed_executables``
        (:mod:`qpeft.jobs.braket_tasks`)."""
        return self._usage.pop(job_id, None) or None

    def find(self, tag: str) -> str | None:
        """The ARN of the task tagged ``tag`` (see module docstring), or None."""
        with self._lock:
            if tag in self._tags:
                return self._tags[tag]
        if self.local:
            return None
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=self.find_days)
        filters = [
            {"name": "deviceArn", "operator": "EQUAL", "values": [self._device.arn]},
            {"name": "createdAt", "operator": "GTE", "values": [since.strftime("%Y-%m-%dT%H:%M:%SZ")]},
        ]
        pages = self._session.braket_client.get_paginator("search_quantum_tasks").paginate(filters=filters)
        for page in pages:
            for summary in page["quantumTasks"]:
                if (summary.get("tags") or {}).get(TAG_KEY) == tag:
                    return summary["quantumTaskArn"]
        return None
