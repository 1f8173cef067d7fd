"""The job engine: bound circuits in, results in input order out, whatever the provider does.

``JobEngine(provider, run_dir).run(circuits, shots)`` de-duplicates the circuits, splits
them into jobs within the provider's limits, serves jobs already finished from the cache,
re-attaches to jobs the ledger shows as still open (after a crash or restart), submits the
rest with at most ``max_parallel`` jobs in flight, polls with exponential backoff, and
retries only what the provider classifies as transient. A submit that gives no answer is
never resubmitted: the engine waits for the late answer or looks the job up by its tag. A
job that keeps failing raises :class:`JobFailedError` with its id, message and attempts;
the results of the jobs that did finish stay in the cache. A job the ledger has as finished
whose results the cache no longer has (its step compacted away, or data a power loss damaged)
is fetched again from the provider by its id; only where the provider no longer has it is it
submitted again.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from qpeft.jobs.base import (
    BoundCircuit,
    JobFailedError,
    Provider,
    State,
    SubmissionUnknownError,
    split,
)
from qpeft.jobs.cache import ResultCache
from qpeft.jobs.calls import NoAnswer, ProviderCalls, ProviderError  # noqa: F401 (ProviderError: public here too)
from qpeft.jobs.keys import Keyed, Templates, key_circuits, pick
from qpeft.jobs.keys import job_key as job_key_of
from qpeft.jobs.ledger import Ledger

logger = logging.getLogger(__name__)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class EngineOptions:
    max_parallel: int = 10  # jobs in flight at once (Braket's default)
    poll_interval: float = 1.0  # first wait between status polls, doubling ...
    max_poll_interval: float = 30.0  # ... up to this
    job_timeout: float = 3 * 3600.0  # a job not finished this long after submission is cancelled and resubmitted
    submit_timeout: float = 120.0  # a submit call with no answer by then has an unknown outcome
    deadline: float | None = None  # seconds for a whole run() call; open jobs stay in the ledger
    max_attempts: int = 4  # submissions per job, all causes together
    reuse_results: bool = False  # serve identical circuits from earlier calls (e.g. earlier steps)
    progress: bool | None = None  # job progress bar (None: only on a terminal)

    def __post_init__(self) -> None:
        for name in ("max_parallel", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        for name in ("poll_interval", "max_poll_interval", "job_timeout", "submit_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be a positive number of seconds, got {getattr(self, name)!r}")


class JobEngine:
    """Runs bound circuits through a provider (see module docstring).

    run_dir: the ledger goes to ``run_dir/jobs/ledger.jsonl`` and finished results to
    ``run_dir/jobs/results/``; None keeps both in memory (no crash recovery).
    """

    def __init__(self, provider: Provider, run_dir: str | Path | None = None, **options):
        self.provider = provider
        self.options = EngineOptions(**options)
        jobs_dir = Path(run_dir) / "jobs" if run_dir is not None else None
        self.ledger = Ledger(jobs_dir / "ledger.jsonl" if jobs_dir else None, fsync=provider.durable)
        self.cache = ResultCache(jobs_dir / "results" if jobs_dir else None)
        self._scope = ""
        self._templates = Templates()
        self._memory: dict[tuple, np.ndarray] = {}  # (shots, template key, angles) -> result, with reuse_results
        self.calls = ProviderCalls(provider, self.options)
        # one thread writes finished jobs (results to the cache, then their `done` record), in
        # order, while the next job runs; every write ends before run() returns
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qpeft-persist")
        self._writes: list[Future] = []

    # ---- run ------------------------------------------------------------------------------

    def run(self, circuits: Sequence[BoundCircuit], shots: int | None, scope: str = "") -> list[np.ndarray]:
        """Results (probability vectors) of ``circuits``, in input order.

        scope: names the call (e.g. ``"step-12"``); results are reused only within a scope
        unless ``reuse_results`` is on. A rerun of the same scope after a crash finds its jobs.
        Circuit templates are keyed once per object: do not change a circuit after running it.
        """
        if shots is not None and (not isinstance(shots, int) or shots < 1):
            raise ValueError(f"`shots` must be a positive integer or None (exact), got {shots!r}")
        deadline_at = time.time() + self.options.deadline if self.options.deadline else float("inf")
        fingerprint = self.provider.fingerprint()
        self._templates.reset(fingerprint)
        keyed = key_circuits(circuits, self._templates)
        results: list[np.ndarray | None] = [None] * len(keyed.circuits)
        reuse = self.options.reuse_results
        todo: Sequence[int] = range(len(results))
        if reuse:
            for i in todo:
                results[i] = self._memory.get((shots, *keyed.content(i)))
            todo = [i for i, r in enumerate(results) if r is None]
        # the job size fits the largest template of the call (what `qpeft plan` counts with)
        two_qubit = max((t.two_qubit for t in keyed.templates), default=0)
        header = f"{fingerprint}|{shots}|{'' if reuse else scope}"
        self._drain_writes(raise_errors=False)  # writes left by an interrupted call land first
        self.cache.refresh()
        pending = []
        for chunk in split(len(todo), self.provider.limits.chunk_size(shots, two_qubit)):
            members = todo[chunk.start : chunk.stop]
            job_key = job_key_of(header, keyed, members)
            done = self.cache.get_job(job_key, len(members))
            if done is None:
                pending.append((job_key, members, pick(keyed.circuits, members), pick(keyed.widths, members)))
            else:
                self._store(results, keyed, members, done, shots)
        if pending:
            try:
                self._run_jobs(pending, shots, deadline_at, scope, results, keyed)
            except BaseException:
                self._drain_writes(raise_errors=False)  # the finished jobs are kept; the job's error is raised
                raise
            self._drain_writes()
        return results if isinstance(keyed.index, range) else [results[i] for i in keyed.index]

    def _store(self, results: list, keyed: Keyed, members: Sequence[int], probs: list[np.ndarray], shots) -> None:
        if isinstance(members, range):
            results[members.start : members.stop] = probs
        else:
            for i, p in zip(members, probs):
                results[i] = p
        if self.options.reuse_results:
            self._memory.update(((shots, *keyed.content(i)), p) for i, p in zip(members, probs))

    def _run_jobs(self, pending, shots, deadline_at, scope, results: list, keyed: Keyed) -> None:
        self._scope = scope  # recorded with every ledger event of this call
        bar = self._bar(len(pending))
        if self.options.max_parallel == 1 or len(pending) == 1:  # one job at a time: no thread handoff
            try:
                for job_key, members, circuits, widths in pending:
                    probs = self._run_job(job_key, circuits, widths, shots, deadline_at)
                    self._store(results, keyed, members, probs, shots)
                    bar.update(1)
            finally:
                bar.close()
            return
        errors: list[BaseException] = []
        with ThreadPoolExecutor(self.options.max_parallel, thread_name_prefix="qpeft-job") as pool:
            futures = {
                pool.submit(self._run_job, job_key, circuits, widths, shots, deadline_at): members
                for job_key, members, circuits, widths in pending
            }
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
                for f in finished:
                    if f.cancelled():
                        continue
                    if f.exception() is not None:
                        errors.append(f.exception())
                    else:
                        self._store(results, keyed, futures[f], f.result(), shots)
                        bar.update(1)
                if errors:  # let running jobs finish (their results get cached), start no new ones
                    for f in remaining:
                        f.cancel()
        bar.close()
        if errors:
            raise errors[0]

    def _bar(self, total: int):
        """tqdm's bar over the call's jobs; when it would be hidden (``progress`` off, or None and
        stderr not a terminal: tqdm's rule) none is made, which keeps small calls cheap."""
        show = self.options.progress
        if show is None:
            show = sys.stderr is not None and sys.stderr.isatty()
        if not show:
            return _NoBar()
        return tqdm(total=total, unit="job", desc=f"{self.provider.name} jobs")

    def _record(self, event: str, job_key: str, job_id: str | None, attempt: int, circuits, shots, tag, **extra):
        p = self.provider
        return self.ledger.append(
            event,
            key=job_key,
            provider=p.name,
            backend=p.backend,
            job_id=job_id,
            circuits=len(circuits),
            shots=shots,
            attempt=attempt,
            tag=tag,
            scope=self._scope,
            **extra,
        )

    def _run_job(self, job_key: str, circuits: list[BoundCircuit], widths: list[int], shots, deadline_at) -> list:
        live = self.ledger.live().get(job_key)
        attempt = self.ledger.attempts(job_key)
        done = self.ledger.done(job_key)
        # a job submitted again because its finished results were lost gets a new budget of attempts
        limit = self.options.max_attempts + (done.get("attempt", 0) if done is not None else 0)
        job_id = last_id = None
        submitted_at, message = time.time(), ""
        if done is not None and live is None:  # finished before, but its results are not in the cache
            probs = self._refetch(job_key, done, circuits, widths, shots, deadline_at)
            if probs is not None:
                return probs
        if live is not None:
            attempt = live["attempt"]
            if live["event"] == "submitted":
                job_id, submitted_at = live["job_id"], live["time"]
                logger.info("re-attaching to job %s (key %s) from the ledger", job_id, job_key)
            else:
                job_id = self._resolve(None, job_key, live["tag"], attempt, circuits, shots, deadline_at)
        while True:
            if job_id is None:
                if attempt >= limit:
                    raise JobFailedError(job_key, last_id, message, attempt)
                attempt += 1
                job_id = self._submit(job_key, circuits, shots, attempt, deadline_at)
                submitted_at = time.time()
                if job_id is None:  # the unanswered submit turned out rejected: nothing to follow
                    continue
            state, message, queue_s = self.calls.poll(job_id, submitted_at, deadline_at)
            if state == "timeout":
                state = self.calls.cancel(job_id) or state
            timing = {"wall_s": time.time() - submitted_at, "queue_s": queue_s}
            last_id = job_id
            common = (job_key, job_id, attempt, circuits, shots, None)
            if state is State.DONE:
                probs = self.calls.fetch(job_id, circuits, widths, shots)
                try:
                    self._writes.append(self._writer.submit(self._persist, job_key, probs, common, timing))
                except RuntimeError:  # the interpreter is shutting down: no new threads, write it here
                    self._persist(job_key, probs, common, timing)
                return probs
            if state == "lost":
                self._record("lost", *common, message=message, **timing)
            elif state == "timeout":
                self._record("timeout", *common, message=message, **timing)
            elif state is State.FAILED and self.provider.is_transient_failure(message):
                self._record("failed", *common, message=message, **timing)
            else:
                event = "failed" if state is State.FAILED else "cancelled"
                self._record(event, *common, message=message, **timing)
                raise JobFailedError(job_key, job_id, message, attempt)
            logger.warning("job %s (key %s): %s (%s); resubmitting", job_id, job_key, state, message)
            job_id = None

    def _persist(self, job_key: str, probs, common: tuple, timing: dict, event: str = "done") -> None:
        """A finished job's results into the cache, then its ``done`` record (never the other
        way round: a ``done`` job is looked up in the cache first)."""
        self.cache.put_job(job_key, probs)
        self._record(event, *common, **timing)

    def _refetch(self, job_key: str, done: dict, circuits, widths, shots, deadline_at) -> list | None:
        """The results of a job the ledger has as ``done`` that the cache does not have (its step
        compacted away, data damaged by a power loss; an engine without a run directory keeps no
        cache), fetched again by the job's id: it was paid for once. The provider is asked as a
        poll asks (transient errors retried with backoff, anything else raised); None only when
        it answers that the job or its results are gone (local jobs end with their process;
        clouds keep results for a while): then a ``gone`` record, and the job is submitted again."""
        job_id, started = done.get("job_id"), time.time()
        if job_id is None or self.ledger.gone(job_id):  # (asked already, by an earlier run)
            return None
        common = (job_key, job_id, done.get("attempt", 0), circuits, shots, None)
        state, message, _ = self.calls.poll(job_id, started, deadline_at)
        if state is State.DONE:
            probs = self.calls.fetch(job_id, circuits, widths, shots)
            self._persist(job_key, probs, common, {"wall_s": time.time() - started, "queue_s": 0.0}, "refetched")
            logger.info("job %s (key %s): results fetched again from the provider", job_id, job_key)
            return probs
        why = getattr(state, "name", state) + (f": {message}" if message else "")
        self._record("gone", *common, message=why)
        logger.warning(
            "job %s (key %s) finished before, but its results are gone from the cache and the provider (%s); "
            "submitting it again",
            job_id,
            job_key,
            why,
        )
        return None

    def _drain_writes(self, raise_errors: bool = True) -> None:
        """Wait for every pending write; the first one that failed (e.g. a full disk) is raised,
        the others logged (all logged when another error is on its way already). A write leaves
        the list only once it has ended: an interrupted wait (Ctrl-C) leaves the rest for the
        next call, which waits for them before it looks anything up."""
        writes = list(self._writes)
        errors = [err for err in (w.exception() for w in writes) if err is not None]
        for w in writes:
            self._writes.remove(w)
        for err in errors[1:] if raise_errors else errors:
            logger.error("a finished job could not be written to %s: %s", self.cache.directory, err)
        if errors and raise_errors:
            raise errors[0]

    # ---- submissions: never twice -----------------------------------------------------------

    def _submit(self, job_key, circuits, shots, attempt, deadline_at) -> str:
        """Submit one job; transient rejections are retried with backoff (the provider
        guarantees they created nothing); no answer at all goes to :meth:`_resolve`."""
        tag = f"{job_key}.{attempt}"
        try:
            job_id = self.calls.submit(circuits, shots, tag, deadline_at)
        except NoAnswer as no_answer:
            return self._resolve(no_answer.future, job_key, tag, attempt, circuits, shots, deadline_at)
        self._record("submitted", job_key, job_id, attempt, circuits, shots, tag)
        return job_id

    def _resolve(self, future, job_key, tag, attempt, circuits, shots, deadline_at) -> str | None:
        """A submit whose outcome is unknown: wait for its late answer or find the job by its
        tag; never submit it again blindly. None means the provider confirmed nothing was created."""
        if future is not None:
            self._record("unknown", job_key, None, attempt, circuits, shots, tag)
        opts = self.options
        give_up = min(time.time() + opts.job_timeout, deadline_at)
        if future is None and not self.provider.can_find:
            give_up = 0.0  # nothing left to wait for
        wait_s = opts.poll_interval
        while time.time() < give_up:
            if future is not None and future.done():
                err = future.exception()
                if err is None:
                    job_id = future.result()
                    break
                if self.provider.is_transient(err):
                    message = self.provider.redact(str(err))
                    self._record("rejected", job_key, None, attempt, circuits, shots, tag, message=message)
                    return None
                raise self.calls.clean(err)
            job_id = self.provider.find(tag) if self.provider.can_find else None
            if job_id is not None:
                break
            time.sleep(min(wait_s, max(give_up - time.time(), 0.0)))
            wait_s = min(2 * wait_s, opts.max_poll_interval)
        else:
            raise SubmissionUnknownError(
                f"the submission of job key {job_key} (tag {tag}) gave no answer and the provider "
                f"{self.provider.name} cannot say whether it created the job; it was not resubmitted. "
                f"Look the tag up in the provider's console, then `qpeft jobs RUN_DIR --resolve {tag} "
                f"[--job-id ID]` and rerun"
            )
        self._record("submitted", job_key, job_id, attempt, circuits, shots, tag)
        return job_id
