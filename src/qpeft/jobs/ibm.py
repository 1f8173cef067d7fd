"""The ``ibm`` provider: IBM Quantum through qiskit-ibm-runtime's Sampler (reference/hardware.md §3).

* A backend name starting with ``fake_`` (``fake_torino``, ``fake_nairobi``, ...) runs in the
  runtime's local testing mode: the same Sampler code path, on Aer with the fake backend's
  noise snapshot, offline. Any other name (or none: the least busy QPU) needs an account:
  the token from ``QPEFT_IBM_TOKEN``, else the saved account.
* Circuits are transpiled once per template to the backend's target with Qiskit's preset
  pass manager; a job sends one PUB per template with the array of its parameter bindings.
* Limits per job: 10 M executions (circuits x shots) and < 10,000 two-qubit gates, counted on
  the transpiled (ISA) circuit, whose routing adds gates; one shot count per job. Jobs are
  tagged, so a submission with no answer is found by its tag.
* A job id the service does not know (``RuntimeJobNotFound``) is :class:`JobLostError` where the
  service asks one instance alone: the account names it (``instance=``, ``QPEFT_IBM_INSTANCE``;
  a saved account's, where no token is given: ``QiskitRuntimeService(token=...)`` does not read the
  saved account) and it matched one. Otherwise ``QiskitRuntimeService.job`` asks the active
  instance and then every other one it has a client for, passing over their errors, so its "not
  found" may be a failed or missed lookup: the run stops with the job's id, and a user who finds
  the job gone records it with ``qpeft jobs RUN --lost ID``. A tag is looked up in the backend's
  instance, and without one named instance in every instance the account lists (the backend's
  instance may differ after a restart); a lookup that failed somewhere and found the job nowhere
  is an error, never "no job".
* Without one named instance those lookups switch the service object's active instance, which
  its job submissions also read (each sets the backend's, so submissions agree among themselves):
  the provider then makes a lookup alone and submissions side by side (the engine calls from
  several threads). A call that finds the object busy for ``busy_s`` (10 s, e.g. a lookup behind a
  submission whose answer has not come) is a transient error, retried as the engine retries
  those (``max_attempts``, with backoff), never a wait without end (the SDK's requests have no read
  timeout); a busy submission sent nothing.
* What a finished job used is its ``metrics()["usage"]`` (QPU seconds).
* Checked when the provider is made, before any model loads: a missing account, a refused
  token or an unknown backend name is a ValueError saying what to fix.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from qpeft.backends.base import require
from qpeft.backends.qiskit import to_qiskit
from qpeft.jobs.base import (
    BoundCircuit,
    JobLostError,
    Limits,
    Provider,
    State,
    Status,
    TransientError,
    account_digest,
    circuit_text,
    counts_to_probs,
)
from qpeft.jobs.turns import Turns

TOKEN_ENV = "QPEFT_IBM_TOKEN"
INSTANCE_ENV = "QPEFT_IBM_INSTANCE"
_STATES = {
    "INITIALIZING": State.QUEUED,
    "QUEUED": State.QUEUED,
    "VALIDATING": State.QUEUED,
    "RUNNING": State.RUNNING,
    "DONE": State.DONE,
    "ERROR": State.FAILED,
    "CANCELLED": State.CANCELLED,
}
# HTTP codes the IBM API guarantees safe to retry (its own RetrySession's STATUS_FORCELIST)
_TRANSIENT_CODES = re.compile(r"\b(500|502|503|504|520|521|522|524)\b")
# The words of the requests / urllib3 errors the SDK wraps in IBMRuntimeError ("Failed to run
# program: ...", status -1): connection errors, all transient. None of them says that nothing was
# sent: one that broke, timed out or failed its TLS after the request may have created the job, and
# urllib3's retries resend a request, so a final "could not connect" may follow an earlier attempt
# that got through. The job is looked up by its tag (one lookup, never a second job).
_CONNECTION = re.compile(
    r"NewConnectionError|Failed to establish a new connection|ConnectTimeout|NameResolutionError|Max retries exceeded"
    r"|Connection aborted|RemoteDisconnected|Read timed out|ReadTimeout|IncompleteRead|ChunkedEncodingError"
    r"|ProtocolError|Connection reset|ConnectionResetError|BrokenPipe|SSLError|SSLEOFError|EOF occurred"
)
#: the snapshot `qpeft plan` counts two-qubit gates on when the backend has none of its own
PLAN_BACKEND = "fake_torino"


def _templates(circuits: Sequence[BoundCircuit]) -> dict[str, list[int]]:
    """Circuit template text -> the indices of the circuits that share it (one PUB each)."""
    groups: dict[str, list[int]] = defaultdict(list)
    texts: dict[int, str] = {}
    for i, c in enumerate(circuits):
        groups[texts.setdefault(id(c.circuit), circuit_text(c.circuit))].append(i)
    return groups


def _fake_backend(fake_provider, name: str):
    """A fake backend by its name (``fake_torino`` -> FakeTorino, ``fake_nairobi`` -> FakeNairobiV2)."""
    stem = "Fake" + name.removeprefix("fake_").replace("_", " ").title().replace(" ", "")
    for cls in (stem, stem + "V2"):
        if hasattr(fake_provider, cls):
            return getattr(fake_provider, cls)()
    known = sorted(n for n in dir(fake_provider) if n.startswith("Fake") and "Provider" not in n)
    raise ValueError(f"no IBM fake backend {name!r}; qiskit-ibm-runtime has {', '.join(known)}")


class IBMProvider(Provider):
    """IBM Quantum, or its local testing mode for ``fake_*`` backends (see module docstring)."""

    name = "ibm"
    limits = Limits(max_executions=10_000_000, max_two_qubit_gates=9_999)  # "fewer than 10,000" (§3.3)
    can_find = True

    def __init__(
        self,
        backend: str | None = None,
        *,
        token: str | None = None,
        instance: str | None = None,
        service=None,
        sampler_factory: Callable | None = None,
        optimization_level: int = 1,
        seed: int | None = 0,
    ):
        runtime = require("qiskit_ibm_runtime", "ibm")
        self._token = token or os.environ.get(TOKEN_ENV, "")
        self._instance = instance or os.environ.get(INSTANCE_ENV) or None  # (a CRN or name: signs nothing)
        self._turns = Turns()  # (the service object is not thread-safe: see module docstring)
        self.busy_s = 10.0
        self.local = backend is not None and backend.startswith("fake_")
        self.durable = not self.local  # local testing mode: jobs end with the process
        if self.local:
            self._service = None
            self._backend = _fake_backend(runtime.fake_provider, backend)
        else:
            self._service, self._backend = self._connect(runtime, service, backend)
        self.backend = self._backend.name
        self.options = {"optimization_level": optimization_level, "seed": seed}
        self._seed = seed
        self._sampler_factory = sampler_factory  # tests: a stand-in for the unreachable service's primitive
        transpiler = require("qiskit.transpiler", "qiskit")
        self._pass_manager = transpiler.generate_preset_pass_manager(
            optimization_level=optimization_level, backend=self._backend, seed_transpiler=seed
        )
        self._isa: dict[str, tuple] = {}
        self._jobs: dict = {}
        self._tags: dict[str, str] = {}

    def _connect(self, runtime, service, backend: str | None):
        """(service, backend object); the account, the token and the backend name are checked
        here, each failure a ValueError saying what to fix (transient ones raised as they are,
        for :func:`qpeft.jobs.providers.connect` to retry)."""
        from qiskit.providers.exceptions import QiskitBackendNotFoundError

        accounts = require("qiskit_ibm_runtime.accounts", "ibm")
        try:
            if service is None:
                named = {"instance": self._instance} if self._instance else {}
                service = runtime.QiskitRuntimeService(token=self._token or None, **named)
            # the token of a saved account (QiskitRuntimeService() reads it from disk) is a secret too
            active = service.active_account() or {}
            self._token = self._token or active.get("token", "")
            self._instance = active.get("instance")  # (a CRN: names the instance, signs nothing)
            if not backend:
                return service, service.least_busy(operational=True, simulator=False)
            return service, service.backend(backend)
        except accounts.AccountNotFoundError:
            raise ValueError(
                f"no IBM Quantum account: set {TOKEN_ENV}, or save one once with "
                "QiskitRuntimeService.save_account(token=..., instance=...)"
            ) from None
        except QiskitBackendNotFoundError as err:
            if not backend:
                raise ValueError(f"IBM Quantum lists no operational QPU for this account ({err})") from None
            try:
                names = sorted(b.name for b in service.backends())
            except Exception:  # (the list is a courtesy)
                names = ["(could not list them)"]
            raise ValueError(
                f"IBM Quantum has no backend {backend!r} for this account (renamed or retired?); it lists "
                f"{', '.join(names)}"
            ) from None
        except (runtime.IBMNotAuthorizedError, accounts.InvalidAccountError) as err:
            raise ValueError(
                f"IBM Quantum refused the account ({self.redact(str(err))}): check {TOKEN_ENV} or the saved account"
            ) from None
        except runtime.IBMInputValueError as err:  # (e.g. an instance the token has no access to)
            raise ValueError(
                f"IBM Quantum refused the account's settings ({self.redact(str(err))}): check {INSTANCE_ENV} "
                "(or the provider's `instance` option) and the saved account"
            ) from None

    def secrets(self) -> list[str]:
        return [self._token]

    def account(self) -> str | None:
        """The digest of the service instance jobs run in (its CRN), else of the token: a job is
        retrieved through an account with access to its instance. None in local testing mode."""
        if self.local:
            return None
        return account_digest(self._instance) if self._instance else account_digest(self._token)

    @classmethod
    def is_transient_error(cls, error: BaseException) -> bool:
        if isinstance(error, TransientError | ConnectionError | TimeoutError):
            return True
        if type(error).__name__ in ("ConnectionError", "Timeout"):
            return True
        return any(words.search(str(error)) for words in (_TRANSIENT_CODES, _CONNECTION))

    def created_nothing(self, error: BaseException) -> bool:
        """Whether a transient submit error certainly created no job: the 5xx codes IBM's API
        documents as safe to retry, yes; a timeout or a connection error (the request may have
        reached the service; also as the words of the error the SDK wraps it in), no: the engine
        looks the job up by its tag."""
        if isinstance(error, ConnectionError | TimeoutError) or _CONNECTION.search(str(error)):
            return False
        return type(error).__name__ not in ("ConnectionError", "Timeout")

    @classmethod
    def plan_gate_count(
        cls, backend: str | None, optimization_level: int = 1, seed: int | None = 0, **_
    ) -> tuple[Callable, str]:
        """(two-qubit gates per circuit on the transpiled ISA circuit, offline; what they were
        counted on): the backend's own snapshot (``fake_X``, or ``ibm_X`` -> ``fake_X``) where
        qiskit-ibm-runtime has one, else :data:`PLAN_BACKEND`'s."""
        runtime = require("qiskit_ibm_runtime", "ibm")
        wanted = "fake_" + backend.removeprefix("fake_").removeprefix("ibm_") if backend else PLAN_BACKEND
        try:
            _fake_backend(runtime.fake_provider, wanted)
            name, note = wanted, f"the ISA circuit on the {wanted} snapshot"
            if not backend:
                note += " (the backend is chosen when the run starts: the least busy)"
        except ValueError:
            name, note = PLAN_BACKEND, f"the ISA circuit on {PLAN_BACKEND} (no snapshot of {backend})"
        return cls(name, optimization_level=optimization_level, seed=seed).two_qubit_gates, note

    def _sampler(self, tag: str):
        sampler_module = require("qiskit_ibm_runtime.executor_sampler", "ibm")
        options = {"environment": {"job_tags": [tag]}}
        if self.local and self._seed is not None:
            options["simulator"] = {"seed_simulator": self._seed}
        return (self._sampler_factory or sampler_module.Sampler)(mode=self._backend, options=options)

    def _isa_template(self, template):
        """(ISA circuit, column of each of its parameters in the slot values), cached."""
        key = circuit_text(template)
        if key not in self._isa:
            qiskit = require("qiskit", "qiskit")
            n_slots = sum(len(op.params) for op in template.ops)
            params = qiskit.circuit.ParameterVector("a", n_slots)
            qc = to_qiskit(template, parameters=params)
            qc.measure_all()
            isa = self._pass_manager.run(qc)
            # the transpiler may drop parameters; bind the ones left, in the circuit's order
            self._isa[key] = (isa, [p.index for p in isa.parameters])
        return self._isa[key]

    def two_qubit_gates(self, circuit) -> int:
        """Two-qubit gates of the template's transpiled (ISA) circuit: routing on the device's
        coupling map adds some (on fake_torino, 21 CZ where the logical circuit has 6)."""
        return self._isa_template(circuit)[0].num_nonlocal_gates()

    def submit(self, circuits: Sequence[BoundCircuit], shots: int | None, tag: str) -> str:
        """One Sampler job: one PUB per circuit template, transpiled once to the backend's ISA, with
        a row of parameter values per circuit; the job carries ``tag`` as a job tag, so a lost answer
        is found again by it.

        Args:
            circuits: the job's circuits.
            shots: shots per circuit (required).
            tag: the engine's submission tag.

        Returns:
            The runtime job id.

        Raises:
            ValueError: ``shots`` is None (a QPU samples).
        """
        if shots is None:
            raise ValueError("a QPU samples: the ibm provider needs `shots`")
        pubs = []
        for members in _templates(circuits).values():
            isa, columns = self._isa_template(circuits[members[0]].circuit)
            values = np.array([circuits[i].angles() for i in members], dtype=np.float64)[:, columns]
            pubs.append((isa, values) if columns else (isa,))  # no parameters: one circuit (deduplicated)
        with self._service_call(alone=False):
            job = self._sampler(tag).run(pubs, shots=shots)
        self._jobs[job.job_id()] = job
        self._tags[tag] = job.job_id()
        return job.job_id()

    def _job(self, job_id: str):
        job = self._jobs.get(job_id)
        if job is None:
            if self._service is None:
                raise JobLostError(f"ibm local-testing job {job_id} ended with its process")
            runtime = require("qiskit_ibm_runtime", "ibm")
            try:
                with self._service_call(alone=True):
                    job = self._jobs[job_id] = self._service.job(job_id)
            except runtime.RuntimeJobNotFound as err:
                words = self.redact(str(err))
                if self._one_instance():
                    raise JobLostError(f"ibm job {job_id}: the service does not know it ({words})") from None
                raise RuntimeError(
                    f"the service answered {words!r}, but it asked more than one instance (the account names none, "
                    "or its name matched several) and passed over their errors, so the job is not taken as lost "
                    "(that would pay for it again). Look it up in the IBM Quantum console: if it is gone, run "
                    f"`qpeft jobs RUN_DIR --lost {job_id}` and rerun (the rerun pays for it again); if it is listed, "
                    f"cancel it there first if this account cannot reach it. Naming the instance ({INSTANCE_ENV}=CRN) "
                    "makes this answer final for new runs (a run keeps the account its jobs were made with)"
                ) from None
        return job

    @contextlib.contextmanager
    def _service_call(self, alone: bool):
        """A call to the service object: without one named instance a lookup (``alone``) waits for
        no other call, a submission for no lookup (see module docstring); TransientError where
        that takes ``busy_s`` (nothing was sent)."""
        if self._one_instance():  # (its calls keep the one active instance: no call changes what another reads)
            yield
            return
        if not self._turns.take(alone, self.busy_s):
            raise TransientError(
                f"the IBM service object was busy for {self.busy_s:g} s with a call that has not answered yet (a "
                f"{'submission or lookup' if alone else 'lookup'}); nothing was sent"
            )
        try:
            yield
        finally:
            self._turns.give(alone)

    def _one_instance(self) -> bool:
        """Whether the service asks one instance alone for a job: the account names it and the
        service holds one client (the SDK's own: a name that matched several CRNs gets one each)."""
        clients = getattr(self._service, "_api_clients", None)
        return bool(self._instance) and isinstance(clients, dict) and len(clients) == 1

    def status(self, job_id: str) -> Status:
        """The job's runtime status mapped onto :class:`State` (INITIALIZING, QUEUED, VALIDATING:
        queued; ERROR: failed, with the job's error message, secrets removed).

        Raises:
            JobLostError: ``RuntimeJobNotFound``, or a local-testing job that ended with its process.
        """
        job = self._job(job_id)
        raw = job.status()
        state = _STATES.get(getattr(raw, "name", str(raw)).upper(), State.QUEUED)
        message = ""
        if state is State.FAILED:
            message = str(getattr(job, "error_message", lambda: "")() or "job ERROR")
        return Status(state, self.redact(message))

    def result(self, job_id: str, circuits, shots) -> list[np.ndarray]:
        """The job's counts as probabilities in qpeft's bit order, one per circuit in job order (the
        job's PUBs are per template; each row is put back at its circuit's place).

        Raises:
            JobLostError: the service does not know the job, or a local-testing job ended with its
                process.
        """
        pub_results = self._job(job_id).result()
        out: list[np.ndarray | None] = [None] * len(circuits)
        for pub, members in zip(pub_results, _templates(circuits).values()):
            bits = pub.data.meas
            n = circuits[members[0]].circuit.n_qubits
            for row, i in enumerate(members):
                loc = row if bits.shape else ()
                out[i] = counts_to_probs(bits.get_counts(loc), n)
        return out

    def cancel(self, job_id: str) -> None:
        self._job(job_id).cancel()

    def usage(self, job_id: str) -> dict | None:
        """The numbers of the job's ``metrics()["usage"]`` (e.g. ``quantum_seconds``,
        ``qpu_charge_time_seconds``), by the service's names."""
        usage = (self._job(job_id).metrics() or {}).get("usage") or {}
        numbers = {k: v for k, v in usage.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        return numbers or None

    def find(self, tag: str) -> str | None:
        if tag in self._tags:
            return self._tags[tag]
        if self._service is None:
            return None
        failed = []
        with self._service_call(alone=True):  # (jobs() searches the active instance unless given one: the backend's)
            places = [getattr(self._backend, "_instance", None)]
            if not self._one_instance():  # (this process's backend may be another instance's than the job's)
                places += [found["crn"] for found in self._service.instances()]
            for where in dict.fromkeys(places):
                try:
                    found = self._service.jobs(job_tags=[tag], limit=1, **({"instance": where} if where else {}))
                except Exception as err:  # (another instance may have it: asked on; failed nowhere is "none")
                    failed.append((where, err))
                    continue
                if found:
                    return found[0].job_id()
        if not failed:
            return None
        # (the job may be in an instance that failed: not "no job"; retried if any failure may pass)
        words = "; ".join(f"{where or 'the active one'}: {self.describe(err)}" for where, err in failed)
        text = f"the search for the job tagged {tag} failed in {len(failed)} of the account's instances ({words})"
        text += " and found it in no other"
        if any(self.is_transient_error(err) for _, err in failed):
            raise TransientError(text)
        raise RuntimeError(
            f"{text}: it may be there. Name the instance jobs run in ({INSTANCE_ENV}=CRN) if the account cannot "
            "use the failing one, or settle the submission by hand (qpeft jobs RUN_DIR --resolve TAG [--job-id ID])"
        )
