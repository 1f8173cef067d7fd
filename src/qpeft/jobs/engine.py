"""The job engine: bound circuits in, results in input order out, whatever the provider does.

``JobEngine(provider, run_dir).run(circuits, shots)`` de-duplicates the circuits, splits
them into jobs within the provider's limits, serves jobs already finished from the cache,
re-attaches to jobs the ledger shows as still open (after a crash or restart), submits the
rest with at most ``max_parallel`` jobs in flight, polls with exponential backoff, and
retries only what the provider classifies as transient.

Money first: a job is submitted again only when the provider has confirmed that no earlier job
of it can still run (it failed, was cancelled, or the provider no longer knows it). A submission
whose outcome is unknown is settled by the job's tag, never by submitting again
(:mod:`qpeft.jobs.submit`); a job past its run-time limit (``job_timeout``, counted from the
moment it leaves the queue; time in the queue is limited only by ``queue_timeout``, off by
default) is cancelled, and if the provider does not confirm the cancel the call stops with the
job's id (:class:`JobStillRunningError`), open in the ledger for a rerun to re-attach to. A
job that keeps failing raises :class:`JobFailedError` with its id, the provider's message and
its attempts; the results of the jobs that did finish stay in the cache. A job the ledger has as
finished whose results the cache no longer has (its step compacted away, or data a power loss
damaged) is fetched again from the provider by its id; only where the provider no longer has it
is it submitted again. Each submission is counted against the run's spending cap
(``max_spend``), and the run stays on the backend its ledger records and on the shots of its open
jobs (:mod:`qpeft.jobs.pin`).

An engine holds its run directory (:mod:`qpeft.jobs.runlock`: no second process's engine meanwhile),
its result cache's lock and a writer thread until :meth:`JobEngine.close`, the end of a
``with JobEngine(...)`` block, or, failing both, until it is garbage (nothing in it refers back to
it, so dropping the last reference is enough).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from qpeft.jobs.base import BoundCircuit, JobFailedError, Provider, State, split
from qpeft.jobs.budget import Budget, SpendCap
from qpeft.jobs.cache import ResultCache
from qpeft.jobs.calls import ProviderCalls, ProviderError, forget_hidden  # noqa: F401 (ProviderError: public here too)
from qpeft.jobs.keys import Keyed, Templates, key_circuits, pick
from qpeft.jobs.keys import job_key as job_key_of
from qpeft.jobs.ledger import DURABLE, Ledger
from qpeft.jobs.options import Deadline, EngineOptions, progress_bar
from qpeft.jobs.pin import OpenJobs, check_account, check_backend, reattachable, refetch_first
from qpeft.jobs.runlock import hold_run, run_key
from qpeft.jobs.submit import Submitter
from qpeft.jobs.writer import JobWriter

__all__ = ["EngineOptions", "JobEngine", "ProviderError"]

logger = logging.getLogger(__name__)


class JobEngine:
    """Runs bound circuits through a provider (see module docstring).

    run_dir: the ledger goes to ``run_dir/jobs/ledger.jsonl`` and finished results to
    ``run_dir/jobs/results/``; None keeps both in memory (no crash recovery).
    options: :class:`EngineOptions` fields (timeouts, deadlines, attempts, ``max_spend``,
    ``switch_backend``, ...). Raises ValueError for a bad option, a cap the provider cannot price,
    a backend other than the one the run's ledger records (without ``switch_backend``), or an
    account other than the one that made its open jobs (without ``switch_account``); a call raises
    it for shots other than those of its step's open jobs (without ``switch_shots``).
    """

    def __init__(self, provider: Provider, run_dir: str | Path | None = None, **options):
        self.provider = provider
        self.options = EngineOptions(**options)
        jobs_dir = Path(run_dir) / "jobs" if run_dir is not None else None
        self._running = 0  # run() calls and job threads going (close() refuses, no newer engine takes over)
        self._hold = hold_run(jobs_dir, self) if jobs_dir is not None else None  # one engine per run directory
        try:
            self.ledger = Ledger(jobs_dir / "ledger.jsonl" if jobs_dir else None, fsync=provider.durable)
            check_backend(self.ledger, provider, self.options.switch_backend)
            self._account = check_account(self.ledger, provider, self.options.switch_account)
            self._inherited = OpenJobs(self.ledger, provider, self.options.switch_shots)  # earlier processes' open jobs
            self.budget = Budget(
                SpendCap.parse(self.options.max_spend), provider.name, self.ledger.records, provider.backend
            )
            self.cache = ResultCache(jobs_dir / "results" if jobs_dir else None)
        except BaseException:  # (the traceback keeps this half-made engine alive: let the run go now)
            if self._hold is not None:
                self._hold.abandon()
            raise
        self._started = time.time()  # the run deadline counts from here
        self._scope = ""
        self._templates = Templates(provider.two_qubit_gates)
        self._memory: dict[tuple, np.ndarray] = {}  # (shots, template key, angles) -> result, with reuse_results
        scope = run_key(jobs_dir) if jobs_dir else f"memory:{id(self)}"  # (a rerun waits for its calls: Late)
        self.calls = ProviderCalls(provider, self.options, scope)
        record = weakref.WeakMethod(self._record)  # (no engine <-> submitter cycle: a dropped engine is freed at once)
        self.submitter = Submitter(
            provider, self.calls, self.ledger, self.options, self.budget, lambda *a, **kw: record()(*a, **kw)
        )
        self._writer = JobWriter(self.cache)  # finished jobs written while the next one runs
        self._closed = False
        self._state = threading.Lock()

    def close(self, raise_errors: bool = True) -> None:
        """Let the run's files go: wait for the finished jobs' writes (the first failed one is
        raised, or logged with ``raise_errors=False``, e.g. while another error is on its way),
        stop the writer thread and release the result cache's lock (so that ``qpeft jobs RUN
        --compact-results`` can run). Idempotent; :meth:`run` refuses afterwards. Open jobs stay
        in the ledger for a later engine to re-attach to.

        Raises:
            RuntimeError: a :meth:`run` is in progress (in another thread, or this call comes from
                a provider's or the writer's code inside it): its jobs would still write to the
                files a closed engine lets go of. Close the engine once the run has returned. (With
                ``raise_errors=False`` it is logged and the engine stays open.)
        """
        with self._state:
            if self._closed:
                return
            if self._running:
                why = (
                    "JobEngine.close() was called while run() or its jobs are in progress; close the engine after "
                    "the run returns and its jobs have ended (their results are still being written)"
                )
                if raise_errors:
                    raise RuntimeError(why)
                logger.error("%s; the engine stays open", why)  # (another error is on its way: not masked)
                return
            self._closed = True
        try:
            if raise_errors:  # (not on an error's way: a rerun may still re-attach to its step's jobs)
                self._inherited.finish()
            self._writer.drain(raise_errors)
        finally:
            self._writer.shutdown()
            self.cache.close()
            self.ledger.close()
            if self._hold is not None:
                self._hold.release()  # (last: another engine may start once this one has let go)

    def __enter__(self) -> JobEngine:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(raise_errors=kind is None)

    # ---- run ------------------------------------------------------------------------------

    def run(self, circuits: Sequence[BoundCircuit], shots: int | None, scope: str = "") -> list[np.ndarray]:
        """Results (probability vectors) of ``circuits``, in input order.

        scope: names the call (e.g. ``"step-12"``); results are reused only within a scope
        unless ``reuse_results`` is on. A rerun of the same scope after a crash finds its jobs.
        Circuit templates are keyed once per object: do not change a circuit after running it.
        """
        if shots is not None and (not isinstance(shots, int) or shots < 1):
            raise ValueError(f"`shots` must be a positive integer or None (exact), got {shots!r}")
        with self._state:
            if self._closed:
                raise RuntimeError("this JobEngine was closed; make a new one on the same run_dir to run more circuits")
            self._enter()
        try:
            return self._run(circuits, shots, scope)
        except BaseException as err:
            try:
                forget_hidden(err)  # (the SDK errors a redacted error replaced)
            except Exception:  # never instead of the error itself
                logger.debug("could not drop the hidden context of %r", err, exc_info=True)
            raise
        finally:
            with self._state:
                self._running -= 1

    def _enter(self) -> None:
        """Count one more piece of work (a run() call, a job thread); a newer engine cannot take
        the run directory over, nor close() let it go, until it ends. RuntimeError when a newer
        engine took this one's run directory over."""
        if self._hold is not None:
            self._hold.enter(self)
        else:
            self._running += 1

    def _job_thread(self, *args) -> list[np.ndarray]:
        """``_run_job`` on a pool thread, counted as work: after a second Ctrl-C leaves run()
        while jobs still run, the engine stays busy (no takeover, no close) until they end."""
        with self._state:
            self._running += 1
        try:
            return self._run_job(*args)
        finally:
            with self._state:
                self._running -= 1

    def _run(self, circuits: Sequence[BoundCircuit], shots: int | None, scope: str) -> list[np.ndarray]:
        deadline = Deadline.earliest(self.options, self._started)
        fingerprint = self.provider.fingerprint()
        self._templates.reset(fingerprint)
        keyed = key_circuits(circuits, self._templates)
        results: list[np.ndarray | None] = [None] * len(keyed.circuits)
        reuse = self.options.reuse_results
        # the job size fits the largest template of the call (what `qpeft plan` counts with)
        two_qubit = max((t.two_qubit for t in keyed.templates), default=0)
        header = f"{fingerprint}|{shots}|{'' if reuse else scope}"
        self._writer.drain(raise_errors=False)  # writes left by an interrupted call land first
        self.cache.refresh()
        pending, keys = [], []
        # The jobs are split over all of the call's circuits, never over what this process happens
        # to remember: a job's key must not depend on the process, or a rerun after a crash would
        # not find the job the crashed process left open (and would pay for its circuits again).
        for members in split(len(results), self.provider.limits.chunk_size(shots, two_qubit)):
            if reuse:  # a job whose every circuit ran before (earlier calls of this engine) is not needed
                remembered = [self._memory.get((shots, *keyed.content(i))) for i in members]
                if all(r is not None for r in remembered):
                    self._store(results, keyed, members, remembered, shots)
                    continue
            job_key = job_key_of(header, keyed, members)
            keys.append(job_key)
            done = self.cache.get_job(job_key, len(members))
            if done is None:
                pending.append((job_key, members, pick(keyed.circuits, members), pick(keyed.widths, members)))
            else:
                self._store(results, keyed, members, done, shots)
        self._inherited.check(scope, shots, keys, paying=bool(pending))  # before anything is paid
        if pending:
            try:
                self._run_jobs(pending, shots, deadline, scope, results, keyed)
            except BaseException:
                self._writer.drain(raise_errors=False)  # the finished jobs are kept; the job's error is raised
                self._inherited.add(filter(None, map(self.ledger.get_live, (k for k, *_ in pending))))
                raise
            self._writer.drain()
        return results if isinstance(keyed.index, range) else [results[i] for i in keyed.index]

    def _store(self, results: list, keyed: Keyed, members: Sequence[int], probs: list[np.ndarray], shots) -> None:
        if isinstance(members, range):
            results[members.start : members.stop] = probs
        else:
            for i, p in zip(members, probs):
                results[i] = p
        if self.options.reuse_results:
            self._memory.update(((shots, *keyed.content(i)), p) for i, p in zip(members, probs))

    def _run_jobs(self, pending, shots, deadline: Deadline, scope, results: list, keyed: Keyed) -> None:
        self._scope = scope  # recorded with every ledger event of this call
        bar = progress_bar(self.options.progress, len(pending), self.provider.name)
        if self.options.max_parallel == 1 or len(pending) == 1:  # one job at a time: no thread handoff
            try:
                for job_key, members, circuits, widths in pending:
                    probs = self._run_job(job_key, circuits, widths, shots, deadline)
                    self._store(results, keyed, members, probs, shots)
                    bar.update(1)
            finally:
                bar.close()
            return
        errors: list[BaseException] = []
        with ThreadPoolExecutor(self.options.max_parallel, thread_name_prefix="qpeft-job") as pool:
            futures = {
                pool.submit(self._job_thread, job_key, circuits, widths, shots, deadline): members
                for job_key, members, circuits, widths in pending
            }
            remaining = set(futures)
            try:
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
            except BaseException:  # Ctrl-C / SIGTERM: the same, before the pool's exit waits for every job
                for f in futures:
                    f.cancel()
                raise
        bar.close()
        if errors:
            raise errors[0]

    def _record(self, event: str, job_key: str, job_id: str | None, attempt: int, circuits, shots, tag, **extra):
        p = self.provider
        if self._account is not None and event in DURABLE:  # (a job is visible to its account only: pin.check_account)
            extra["account"] = self._account
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

    def _run_job(self, job_key: str, circuits: list[BoundCircuit], widths: list[int], shots, deadline) -> list:
        done = self.ledger.done(job_key)
        base = self.ledger.renewed(job_key)  # (a new budget after lost results, or a job recorded lost by hand)
        job_id, attempt, submitted_at = None, 0, time.time()
        # an open job of the key this run can use (asked again whenever the one in hand ended without results)
        find_open = functools.partial(reattachable, self.calls, self.ledger, job_key, self._account, deadline)
        live = find_open()
        # finished before, but its results are not in the cache
        if done is not None and refetch_first(self.ledger, done, live, self._account, self.options.switch_account):
            probs = self._refetch(job_key, done, circuits, widths, shots, deadline)
            if probs is not None:
                return probs
        while True:
            if job_id is None and live is not None:  # an open job of the key this run can use
                job_id, attempt, submitted_at = self._attach(live, circuits, shots, deadline)
                live = None if job_id is not None else find_open()  # (none: it created nothing)
                continue
            if job_id is None:
                # the attempts other accounts made do not use up this account's
                limit = self.options.max_attempts + base + self.ledger.foreign_attempts(job_key, self._account, base)
                attempt = self.ledger.attempts(job_key)  # (above every earlier submission's)
                if attempt >= limit:
                    raise self._used_up(job_key, attempt)
                if deadline.passed():
                    raise TimeoutError(f"{deadline.what} reached before job key {job_key} was submitted; rerun")
                attempt += 1
                job_id = self.submitter.submit(job_key, circuits, shots, attempt, deadline)
                submitted_at = time.time()
                if job_id is None:  # the provider confirmed that nothing was created: next attempt
                    continue
            state, message, queue_s = self.calls.poll(job_id, submitted_at, deadline)
            if state == "timeout":
                state, message = self.calls.stop(job_key, job_id, message, deadline)
            timing = {"wall_s": time.time() - submitted_at, "queue_s": queue_s}
            common = (job_key, job_id, attempt, circuits, shots, None)
            probs = self.calls.fetch(job_id, circuits, widths, shots) if state is State.DONE else None
            usage = self.calls.usage(job_id) if state != "lost" else None  # (billed also when it failed, was cancelled)
            if usage:
                timing["usage"] = usage
                self.budget.finished(len(circuits), shots, usage)
            if state is State.DONE:
                self._writer.submit(self._record, job_key, probs, common, timing)
                return probs
            if state in ("lost", "timeout"):  # the provider confirmed the job will not run on
                self._record(state, *common, message=message, **timing)
            elif state is State.FAILED and self.provider.is_transient_failure(message):
                self._record("failed", *common, message=message, **timing)
            else:
                event = "failed" if state is State.FAILED else "cancelled"
                self._record(event, *common, message=message, **timing)
                raise JobFailedError(job_key, job_id, message, attempt)
            logger.warning("job %s (key %s): %s (%s); submitting it again", job_id, job_key, state, message)
            job_id = None  # (another open job of the key this run can use comes first: it may still run)
            live = find_open()

    def _attach(self, live: dict, circuits, shots, deadline: Deadline) -> tuple[str | None, int, float]:
        """Re-attach to ``live``, an open submission of the key (:func:`~qpeft.jobs.pin.reattachable`):
        (its job id, None where a submission without one turned out to have created nothing; its
        attempt; when it was submitted)."""
        if self.ledger.left_behind(live):  # a run went on without it; it is this run's again
            self.ledger.append("reattached", key=live["key"], job_id=live.get("job_id"), tag=live.get("tag"))
        if live["event"] == "submitted":
            logger.info("re-attaching to job %s (key %s) from the ledger", live["job_id"], live["key"])
            job_id = live["job_id"]
        else:  # a submission an earlier process left without an id: looked up by its tag
            job_id = self.submitter.recover(live, circuits, shots, deadline)
        return job_id, live.get("attempt") or 0, live.get("time") or time.time()

    def _used_up(self, job_key: str, attempt: int) -> JobFailedError:
        """The error of a key whose attempts are used up: names its last job and the provider's words."""
        last = self.ledger.last(job_key) or {}
        words = last.get("message") or f"its last job ended {last.get('event', 'without a record')}"
        hint = f"max_attempts is {self.options.max_attempts} (raise it to try the job again: that pays for it again)"
        return JobFailedError(job_key, last.get("job_id"), words, attempt, hint)

    def _refetch(self, job_key: str, done: dict, circuits, widths, shots, deadline: Deadline) -> list | None:
        """The results of a job the ledger has as ``done`` that the cache does not have (its step
        compacted away, data damaged by a power loss; an engine without a run directory keeps no
        cache), fetched again by the job's id: it was paid for once. The provider is asked as a
        poll asks (transient errors retried with backoff, anything else raised); None only when
        it answers that the job or its results are gone (local jobs end with their process;
        clouds keep results for a while): then a ``gone`` record, and the job is submitted again."""
        job_id, started = done.get("job_id"), time.time()
        if job_id is None or self.ledger.gone(job_id):  # (asked already, by an earlier run)
            return None
        common = (job_key, job_id, done.get("attempt") or 0, circuits, shots, None)
        state, message, _ = self.calls.poll(job_id, started, deadline)
        if state is State.DONE:
            probs = self.calls.fetch(job_id, circuits, widths, shots)
            timing = {"wall_s": time.time() - started, "queue_s": 0.0}
            self._writer.write(self._record, job_key, probs, common, timing, "refetched")
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
