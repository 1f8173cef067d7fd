"""The ``local`` provider: qpeft's in-process backends behind the job interface, so a
training run takes the same path (engine, ledger, cache) on a simulator as on a QPU.

Each job runs on a worker thread. The chosen backend computes every circuit's exact
distribution (one batched call per circuit template); with ``shots`` the job then draws
its samples from it, with a seed derived from the circuit's content, so the same circuit
gives the same counts in any job, order or process (a resumed run reproduces a straight one).
``delay`` makes every job wait that long first (a slow QPU queue, for tests). With the default
``workers=0`` a job runs inside ``submit`` on the engine's job thread; ``workers=N`` runs jobs
on a background pool instead.
"""

from __future__ import annotations

import threading
import time
import uuid
from array import array
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np
import torch

from qpeft.backends.base import REGISTRY as BACKEND_REGISTRY
from qpeft.backends.base import get_backend
from qpeft.jobs.base import BoundCircuit, JobLostError, Limits, Provider, State, Status, circuit_text, fast_digest

#: qpeft's backends the local provider runs; ``noisy:DEVICE`` passes ``noise=DEVICE``
LOCAL_BACKENDS = ("torch", "shots", "noisy", "qiskit", "pyqpanda3")


def local_backend_names() -> list[str]:
    """The backends the local provider runs: qpeft's (:data:`LOCAL_BACKENDS`) and plugins'."""
    return [*LOCAL_BACKENDS, *BACKEND_REGISTRY.plugin_names()]


def exact_probabilities(backend, circuits: Sequence[BoundCircuit]) -> list[np.ndarray]:
    """Every circuit's basis probabilities from ``backend``, one batched run per template."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(circuits):
        groups[id(c.circuit)].append(i)
    out: list[np.ndarray | None] = [None] * len(circuits)
    for members in groups.values():
        template = circuits[members[0]].circuit
        weights = torch.tensor([circuits[i].weights for i in members], dtype=torch.float64)
        inputs = torch.tensor([circuits[i].inputs for i in members], dtype=torch.float64)
        with torch.no_grad():
            probs = backend.run(
                template,
                inputs if template.n_inputs else None,
                weights if template.n_weights else torch.zeros(len(members), 0, dtype=torch.float64),
                "probs",
            )
        probs = probs.detach().double().cpu().numpy().reshape(len(members), -1)
        for row, i in zip(probs, members):
            out[i] = np.clip(row, 0.0, None) / max(row.clip(0.0, None).sum(), 1e-300)
    return out


def sample(probs: np.ndarray, shots: int, seed: bytes) -> np.ndarray:
    """``counts / shots`` of ``shots`` draws from ``probs``, seeded by the circuit's content."""
    rng = np.random.default_rng(int(fast_digest(seed)[:16], 16))
    return rng.multinomial(shots, probs) / shots


class LocalProvider(Provider):
    """Runs jobs on an in-process backend (``torch``, ``shots``, ``noisy[:DEVICE]``, ``qiskit``
    (Aer), ``pyqpanda3`` (CPUQVM), or one a plugin package registers)."""

    name = "local"
    can_find = True
    durable = False  # local jobs end with their process
    remote = False

    def __init__(
        self,
        backend: str = "torch",
        *,
        max_circuits: int = 200,
        delay: float = 0.0,
        workers: int = 0,
        seed: int = 0,
        **backend_options,
    ):
        kind, _, device = backend.partition(":")
        if kind not in local_backend_names():
            raise ValueError(f"unknown local backend {backend!r}; choose one of {', '.join(local_backend_names())}")
        if device:
            if kind != "noisy":
                raise ValueError(f"only the noisy backend takes a device (noisy:DEVICE), got {backend!r}")
            backend_options = {**backend_options, "noise": device}
        # 'shots' is the exact simulator plus this provider's sampling
        self._backend = get_backend("torch" if kind == "shots" else kind, **backend_options)
        self.backend = backend
        self.limits = Limits(max_circuits=max_circuits)
        self.options = {"seed": seed, **{k: repr(v) for k, v in backend_options.items()}}
        self.delay, self.seed = delay, seed
        # workers = 0: a job runs inside submit, on the engine's job thread (no thread handoff
        # per job); workers > 0: a pool runs jobs in the background, like a remote queue
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qpeft-local") if workers else None
        self._jobs: dict[str, Future] = {}
        self._tags: dict[str, str] = {}
        self._lock = threading.Lock()
        self.run_seconds = 0.0  # time spent simulating, all jobs together (for the benchmark)

    def _execute(self, circuits: Sequence[BoundCircuit], shots: int | None) -> list[np.ndarray] | np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        started = time.perf_counter()
        probs = exact_probabilities(self._backend, circuits)
        if shots is not None:
            texts: dict[int, bytes] = {}
            for i, c in enumerate(circuits):
                text = texts.get(id(c.circuit))
                if text is None:
                    text = texts[id(c.circuit)] = f"{self.seed}|{circuit_text(c.circuit)}|".encode()
                angles = array("d", c.weights).tobytes() + b"|" + array("d", c.inputs).tobytes()
                probs[i] = sample(probs[i], shots, text + angles)
        if probs and len(set(map(len, probs))) == 1:
            probs = np.stack(probs)  # one row per circuit: the engine's fast path
        with self._lock:
            self.run_seconds += time.perf_counter() - started
        return probs

    def submit(self, circuits: Sequence[BoundCircuit], shots: int | None, tag: str) -> str:
        """Run the job on the in-process backend (inside this call, or on the worker pool when
        ``workers`` > 0) and return a new job id; ``tag`` is kept for :meth:`find`. A failure of the
        simulation is the job's FAILED status, not an error of this call."""
        job_id = uuid.uuid4().hex
        if self._pool is None:
            future: Future = Future()
            try:
                future.set_result(self._execute(list(circuits), shots))
            except Exception as err:  # a failed job is a FAILED status, as on any provider
                future.set_exception(err)
        else:
            future = self._pool.submit(self._execute, list(circuits), shots)
        with self._lock:
            self._jobs[job_id] = future
            self._tags[tag] = job_id
        return job_id

    def _future(self, job_id: str) -> Future:
        future = self._jobs.get(job_id)
        if future is None:
            raise JobLostError(f"local job {job_id} is unknown (local jobs end with their process)")
        return future

    def status(self, job_id: str) -> Status:
        """DONE, FAILED (with the error), or, with a worker pool, QUEUED / RUNNING / CANCELLED.

        Raises:
            JobLostError: an id this provider did not create (local jobs end with their process).
        """
        future = self._future(job_id)
        if future.cancelled():
            return Status(State.CANCELLED)
        if not future.done():
            return Status(State.RUNNING if future.running() else State.QUEUED)
        err = future.exception()
        return Status(State.FAILED, f"{type(err).__name__}: {err}") if err else Status(State.DONE)

    def result(self, job_id: str, circuits, shots) -> list[np.ndarray] | np.ndarray:
        """The job's probabilities, one per circuit in job order (a 2-D array when all have one
        width); with shots, sampled from the exact ones, seeded by each circuit's content.

        Raises:
            JobLostError: an id this provider did not create (local jobs end with their process).
        """
        return self._future(job_id).result()

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not started; False for one already running or done."""
        return self._future(job_id).cancel()

    def find(self, tag: str) -> str | None:
        return self._tags.get(tag)

    def wait(self, job_id: str, seconds: float) -> None:
        future = self._jobs.get(job_id)
        if future is None:
            time.sleep(seconds)
        else:
            wait([future], timeout=seconds)
