"""What the job engine and every provider share: bound circuits, job states, provider
limits and the provider interface (submit / status / result / cancel); its errors are in
:mod:`qpeft.jobs.errors` (and importable from here).

A result is the circuit's basis-probability vector (length ``2**n_qubits``, wire 0 the most
significant bit, qpeft's order): exact for an exact simulator, ``counts / shots`` otherwise.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qpeft.jobs.errors import (  # noqa: F401 (re-exported: providers and plugins import them from here)
    JobFailedError,
    JobLostError,
    JobStillRunningError,
    SubmissionUnknownError,
    TransientError,
    error_chain,
)
from qpeft.quantum.circuit import Circuit, Const, Weight


@dataclass(frozen=True, eq=False)
class BoundCircuit:
    """A circuit template plus the values of its weights (and inputs): one executable circuit."""

    circuit: Circuit
    weights: tuple[float, ...] = ()
    inputs: tuple[float, ...] = ()
    #: the weights' float64 bytes, set only by :meth:`batch` (the engine keys circuits by them);
    #: not an init field, so ``dataclasses.replace`` never carries it to other weights
    _row: bytes | None = field(default=None, init=False, repr=False)

    @classmethod
    def batch(cls, circuit: Circuit, weights: np.ndarray) -> list[BoundCircuit]:
        """One bound circuit per row of ``weights`` (n, circuit.n_weights), for an input-free
        template: made at once, and keyed by the engine without reading every angle again."""
        w = np.ascontiguousarray(weights, dtype=np.float64)
        if circuit.n_inputs or w.ndim != 2 or w.shape[1] != circuit.n_weights:
            raise ValueError(
                f"BoundCircuit.batch takes an input-free template and an (n, {circuit.n_weights}) array of "
                f"weights; got a template reading {circuit.n_inputs} inputs and weights of shape {w.shape}"
            )
        rows = w.view(np.dtype((np.void, 8 * w.shape[1]))).ravel().tolist() if w.shape[1] else [b""] * len(w)
        out = [cls(circuit, tuple(values)) for values in w.tolist()]
        for bound, row in zip(out, rows):
            object.__setattr__(bound, "_row", row)  # frozen: set once, here
        return out

    def angles(self) -> list[float]:
        """The value of every angle slot, in op order (what a parameterised template reads)."""
        return [a for op in self.circuit.ops for a in op.row_angles(self.inputs, self.weights)]

    def bound(self) -> Circuit:
        """The template with this circuit's inputs and weights written in as constants: a
        :class:`~qpeft.quantum.circuit.Circuit` with every angle a ``Const`` (what exporters and SDK
        converters take)."""
        return self.circuit.bind(self.inputs or None, self.weights or None)


def circuit_text(circuit: Circuit) -> str:
    """A canonical text of the template (gates, wires, where each angle comes from), e.g.
    ``2|RY|(0,)|w0|;|CZ|(0, 1)|;``; built once per template object, so kept to plain appends."""
    out = [str(circuit.n_qubits)]
    for op in circuit.ops:
        out.append(op.gate)
        out.append(str(op.wires))
        for p in op.params:
            kind = type(p)
            out.append(f"c{p.value!r}" if kind is Const else f"w{p.index}" if kind is Weight else f"i{p.index}")
        out.append(";")
    return "|".join(out)


def digest(*parts) -> str:
    """A 32-hex-digit SHA-256 digest of ``parts`` (JSON-encoded compactly): a stable key for
    values that JSON can encode."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:32]


def fast_digest(data: str | bytes) -> str:
    """A 32-hex-digit BLAKE2b digest of ``data`` (text is UTF-8 encoded): the quick hash for
    circuit contents and sampling seeds."""
    return hashlib.blake2b(data.encode() if isinstance(data, str) else data, digest_size=16).hexdigest()


def two_qubit_gates(circuit: Circuit) -> int:
    """The number of two-qubit gates in ``circuit`` (ops on two wires), as written (before any
    transpilation)."""
    return sum(len(op.wires) == 2 for op in circuit.ops)


class State(enum.Enum):
    """The state of a job, as every provider's status is mapped onto it: QUEUED, RUNNING, DONE,
    FAILED or CANCELLED (the last three are terminal)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (DONE, FAILED or CANCELLED): nothing about it changes any more."""
        return self in (State.DONE, State.FAILED, State.CANCELLED)


@dataclass(frozen=True)
class Status:
    """What a provider says about a job: its :class:`State` and, for a failure, the provider's
    message (secrets removed)."""

    state: State
    message: str = ""


@dataclass(frozen=True)
class Limits:
    """A provider's per-job limits (None: no limit of that kind)."""

    max_circuits: int | None = None
    max_executions: int | None = None  # circuits x shots
    max_two_qubit_gates: int | None = None

    def chunk_size(self, shots: int | None, two_qubit_per_circuit: int = 0) -> int:
        """Circuits per job for this shot count and circuit size."""
        caps = [self.max_circuits or math.inf]
        if self.max_executions and shots:
            caps.append(self.max_executions // shots)
        if self.max_two_qubit_gates and two_qubit_per_circuit:
            caps.append(self.max_two_qubit_gates // two_qubit_per_circuit)
        size = min(caps)
        if size < 1:
            raise ValueError(
                f"one circuit with {shots} shots and {two_qubit_per_circuit} two-qubit gates exceeds the "
                f"provider's per-job limits {self}; lower `shots`"
            )
        return int(size) if size != math.inf else 1_000_000


def split(n_circuits: int, chunk: int) -> list[range]:
    """Consecutive index ranges of at most ``chunk`` circuits (input order kept)."""
    return [range(start, min(start + chunk, n_circuits)) for start in range(0, n_circuits, chunk)]


def jobs_for(n_circuits: int, limits: Limits, shots: int | None, two_qubit_per_circuit: int = 0) -> int:
    """How many jobs the engine submits for ``n_circuits`` circuits of one shot count."""
    return len(split(n_circuits, limits.chunk_size(shots, two_qubit_per_circuit)))


class Provider(ABC):
    """Submits jobs of bound circuits to one backend and follows them.

    ``submit`` returns a job id; ``status`` never blocks on the job, and raises
    :class:`JobLostError` for an id the service does not know (then, and only then, the engine
    may submit the job again); ``result`` is called only after ``status`` said DONE; ``cancel``
    is a request (the engine believes the status that follows it). ``find(tag)`` looks a job up by
    the tag given to ``submit`` (when :attr:`can_find`). Errors a provider classifies as transient
    (:meth:`is_transient`) are retried by the engine; everything else is final. ``usage`` reports
    what a finished job used, ``two_qubit_gates`` what its per-job gate limit counts. ``result`` gives
    one probability vector per circuit, in job order: a list, or a 2-D float64 array (one row per
    circuit) when all have one width, which spares the engine a copy per circuit.
    """

    name: str = "provider"
    backend: str = ""
    limits: Limits = Limits()
    #: option values that change results (part of every cache key)
    options: dict = {}
    #: whether :meth:`find` can look a job up by its tag
    can_find: bool = False
    #: whether jobs outlive this process (then their ledger records are fsynced)
    durable: bool = True
    #: whether a submit may block on a network (then it runs under ``submit_timeout``)
    remote: bool = True

    @abstractmethod
    def submit(self, circuits: Sequence[BoundCircuit], shots: int | None, tag: str) -> str:
        """Create one job of ``circuits`` on the provider's backend and return its id at once.

        Args:
            circuits: the job's bound circuits (within :attr:`limits`), in the order results must come
                back.
            shots: shots per circuit, or None for exact probabilities (simulators only).
            tag: the engine's name for this submission (job key and attempt); a provider that can
                look jobs up by it (:attr:`can_find`) stores it with the job.

        Returns:
            The provider's job id (what the ledger records).

        Raises:
            TransientError: (or an SDK error :meth:`is_transient` accepts) only when the service
                created nothing; any other error is final for the job.
        """

    @abstractmethod
    def status(self, job_id: str) -> Status:
        """The job's state as the provider reports it now; must not block on the job.

        Args:
            job_id: the id :meth:`submit` returned (possibly in an earlier process).

        Returns:
            A :class:`Status`: QUEUED, RUNNING, DONE, FAILED (with the provider's message) or
            CANCELLED.

        Raises:
            JobLostError: the service does not know this id; only then does the engine submit the
                job again.
            TransientError: (or an SDK error :meth:`is_transient` accepts) a call that may be repeated.
        """

    @abstractmethod
    def result(self, job_id: str, circuits: Sequence[BoundCircuit], shots: int | None) -> list[np.ndarray] | np.ndarray:
        """The results of a finished job (called only after :meth:`status` said DONE).

        Args:
            job_id: the id :meth:`submit` returned (possibly in an earlier process).
            circuits: the job's circuits, in the order they were submitted.
            shots: the shots per circuit of the job, or None (exact).

        Returns:
            One probability vector per circuit, in job order (qpeft's bit order: wire 0 the most
            significant bit): a list of float64 arrays, or a 2-D float64 array with one row per
            circuit when all have one width.

        Raises:
            JobLostError: the service does not know the job (any more).
        """

    @abstractmethod
    def cancel(self, job_id: str) -> bool | None:
        """Ask the provider to cancel a job: False when it refuses (e.g. a job already running on
        a provider that cannot stop one), True or None when it took the request. Either way the
        engine believes only the job's status afterwards."""

    def find(self, tag: str) -> str | None:
        """The id of the job submitted with ``tag``, or None if the provider has none (only
        called when :attr:`can_find`)."""
        return None

    def usage(self, job_id: str) -> dict | None:
        """What the provider reports a finished job used (e.g. IBM's QPU seconds, Origin's
        timing fields), as numbers or text by the provider's own names; None where the SDK
        reports nothing. Called once per finished job; its errors are ignored."""
        return None

    def two_qubit_gates(self, circuit: Circuit) -> int:
        """Two-qubit gates of one circuit of this template as the provider runs it (what its
        per-job gate limit counts): the logical count unless the provider transpiles."""
        return two_qubit_gates(circuit)

    @classmethod
    def backend_name(cls, backend: str | None) -> str | None:
        """The name this provider records for a backend asked for as ``backend`` (what its
        ledger records and its prices are keyed by), offline; by default ``backend`` itself."""
        return backend

    @classmethod
    def plan_limits(cls, backend: str | None, **options) -> Limits:
        """The per-job limits of ``backend``, offline (what ``qpeft plan`` splits with): the
        class's :attr:`limits` unless the provider's limits depend on the backend."""
        return cls.limits

    @classmethod
    def plan_gate_count(cls, backend: str | None, **options) -> tuple[Callable[[Circuit], int], str]:
        """(two-qubit gates per circuit as :meth:`two_qubit_gates` counts them, offline, for
        ``qpeft plan``; what they were counted on)."""
        return two_qubit_gates, "the logical circuit"

    def wait(self, job_id: str, seconds: float) -> None:
        """Sleep between two status polls; a provider that can tell when a job ends may return early."""
        time.sleep(seconds)

    def is_transient(self, error: BaseException) -> bool:
        """Whether ``error`` (raised by one of this provider's calls) is safe to retry; by default
        :meth:`is_transient_error` of the class.

        Args:
            error: the exception a call raised.

        Returns:
            True when retrying cannot create or change anything twice (a submit the service answered
            having created nothing; a status or result call).
        """
        return type(self).is_transient_error(error)

    @classmethod
    def is_transient_error(cls, error: BaseException) -> bool:
        """Whether an error of this provider's SDK is safe to retry (also while the provider is
        being made, e.g. a service that did not answer)."""
        return isinstance(error, TransientError)

    def created_nothing(self, error: BaseException) -> bool:
        """Whether a submit call that failed with ``error`` (one :meth:`is_transient` calls
        transient) certainly created no job, so the engine may make the call again: True by
        default (:class:`TransientError`'s contract). A provider whose transient errors include
        timeouts or dropped connections (the request may have reached the service, and the job
        exist) answers False for those; the engine then looks the job up by its tag, or reports
        the submission unresolved, and never repeats it blindly."""
        return True

    def is_transient_failure(self, message: str) -> bool:
        """Whether a FAILED job's message names a cause that a new submission may not hit."""
        return False

    def secrets(self) -> list[str]:
        """Values that must never reach a ledger, log or error message."""
        return []

    def redact(self, text: str) -> str:
        """``text`` with every value of :meth:`secrets` replaced by ``***`` (applied to every error
        message and status text the engine records or raises)."""
        for secret in self.secrets():
            if secret:
                text = text.replace(secret, "***")
        return text

    def describe(self, error: BaseException) -> str:
        """``TYPE: message`` of an error of this provider's calls, secrets redacted."""
        return f"{type(error).__name__}: {self.redact(str(error))}"

    def account(self) -> str | None:
        """Which account the provider submits jobs as, as a short digest (:func:`account_digest`:
        never the key or token itself), or None where that is not known. A job is visible to the
        account that made it only: the ledger records this with each submission, and a rerun as
        another account is stopped before its open jobs would be taken as lost and paid for again
        (:func:`qpeft.jobs.pin.check_account`)."""
        return None

    def fingerprint(self) -> str:
        """A JSON text of the provider's name, backend and result-changing ``options``: part of
        every job and template key, so results of another backend or setting are never reused."""
        return json.dumps([self.name, self.backend, self.options], sort_keys=True, default=str)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend!r})"


def account_digest(*parts) -> str | None:
    """A 12-hex-digit digest naming an account by what identifies it (an API key, a token, an
    instance, an account number), or None when no part is given. It tells two accounts apart in a
    ledger without holding anything that signs a request; it is slow to compute (PBKDF2, 600,000
    rounds) so that a guessable identity, such as a 12-digit AWS account number, cannot be
    recovered from it by trying every candidate."""
    parts = tuple(str(p) for p in parts if p)
    if not parts:
        return None
    text = json.dumps(parts, separators=(",", ":")).encode()
    return hashlib.pbkdf2_hmac("sha256", text, b"qpeft-account", 600_000).hex()[:12]


def counts_to_probs(counts: dict, n_qubits: int, little_endian: bool = True) -> np.ndarray:
    """Counts keyed by bit strings (or ``0x..`` hex) to qpeft-ordered probabilities.

    SDKs write qubit 0 as the least significant bit (``little_endian``); qpeft's wire 0 is
    the most significant one, so indices are bit-reversed.
    """
    probs = np.zeros(2**n_qubits)
    for key, count in counts.items():
        key = str(key)
        index = int(key, 16) if key.startswith("0x") else int(key, 2)
        if little_endian:
            index = int(format(index, f"0{n_qubits}b")[::-1], 2)
        probs[index] += count
    total = probs.sum()
    if total <= 0:
        raise ValueError(f"a result holds no counts ({counts!r})")
    return probs / total
