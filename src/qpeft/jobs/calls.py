"""The provider's calls as the job engine makes them: submit (with a timeout when the provider
is remote), poll with exponential backoff, fetch and cancel; transient errors retried with
backoff (tenacity), everything else raised as :class:`ProviderError` with secrets removed.
What to do with a call's outcome (the ledger, resubmission) is the engine's business."""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from qpeft.jobs.base import BoundCircuit, JobLostError, Provider, State

logger = logging.getLogger("qpeft.jobs.engine")


class ProviderError(RuntimeError):
    """A non-transient provider error, with secrets removed from its message."""


class NoAnswer(Exception):
    """A submit that gave no answer within ``submit_timeout``: its outcome is unknown."""

    def __init__(self, future: Future):
        self.future = future


class ProviderCalls:
    def __init__(self, provider: Provider, options):
        self.provider = provider
        self.options = options  # the engine's EngineOptions
        self._pool = ThreadPoolExecutor(max_workers=2 * options.max_parallel, thread_name_prefix="qpeft-sdk")

    def submit(self, circuits: list[BoundCircuit], shots, tag: str, deadline_at: float) -> str:
        """The new job's id; transient rejections retried with backoff (the provider guarantees
        they created nothing); raises :class:`NoAnswer` when a remote submit does not answer."""
        opts = self.options

        def call():
            if not self.provider.remote:  # in-process: nothing to time out
                return self.provider.submit(circuits, shots, tag)
            future = self._pool.submit(self.provider.submit, circuits, shots, tag)
            try:
                return future.result(timeout=min(opts.submit_timeout, max(deadline_at - time.time(), 0.0)))
            except FutureTimeout:
                raise NoAnswer(future) from None

        try:
            return self.retried(call, deadline_at)
        except NoAnswer:
            raise
        except Exception as err:
            raise self.clean(err) from None

    def clean(self, err: BaseException) -> ProviderError:
        return ProviderError(f"{self.provider.name}: {type(err).__name__}: {self.provider.redact(str(err))}")

    def poll(self, job_id: str, submitted_at: float, deadline_at: float):
        """(state or 'lost' / 'timeout', message, queue seconds); raises TimeoutError at the
        deadline (the job stays open in the ledger, a rerun re-attaches)."""
        opts = self.options
        started: list[float] = []

        def check():
            status = self.provider.status(job_id)
            if status.state is not State.QUEUED and not started:
                started.append(time.time())
            return status

        def loop():
            budget = min(submitted_at + opts.job_timeout, deadline_at) - time.time()
            return Retrying(
                retry=retry_if_exception(self.provider.is_transient) | retry_if_result(lambda s: not s.state.terminal),
                wait=wait_exponential(multiplier=opts.poll_interval, max=opts.max_poll_interval),
                stop=stop_after_delay(max(budget, 0.0)),
                sleep=lambda seconds: self.provider.wait(job_id, seconds),
                reraise=True,
            )(check)

        try:
            try:  # one look first: a job that has already ended (an in-process one) needs no retry loop
                status = check()
            except Exception as err:
                if not self.provider.is_transient(err):
                    raise
                status = None
            if status is None or not status.state.terminal:
                left = min(submitted_at + opts.job_timeout, deadline_at) - time.time()
                self.provider.wait(job_id, min(opts.poll_interval, max(left, 0.0)))
                status = loop()
        except RetryError:
            if time.time() >= deadline_at:
                raise TimeoutError(
                    f"deadline of {opts.deadline} s reached; job {job_id} is still open in the ledger: "
                    f"rerun to re-attach to it"
                ) from None
            return "timeout", f"not finished {opts.job_timeout} s after submission", self._queued(started, submitted_at)
        except JobLostError as err:
            return "lost", self.provider.redact(str(err)), 0.0
        except Exception as err:
            raise self.clean(err) from None
        return status.state, self.provider.redact(status.message), self._queued(started, submitted_at)

    @staticmethod
    def _queued(started: list[float], submitted_at: float) -> float:
        return max(0.0, (started[0] if started else time.time()) - submitted_at)

    def retried(self, call, deadline_at: float = math.inf):
        """``call()``, its transient errors retried with exponential backoff, ``max_attempts``
        calls at most (and none past the deadline). The first call runs without tenacity (most
        succeed; a retry loop costs more than an in-process job's bookkeeping); the loop then
        waits as tenacity's would have from the first call: poll_interval * 2**(n-1) after call n."""
        opts = self.options
        try:
            return call()
        except Exception as err:
            if not self.provider.is_transient(err) or opts.max_attempts == 1 or time.time() >= deadline_at:
                raise
        time.sleep(min(opts.poll_interval, opts.max_poll_interval))
        return Retrying(
            retry=retry_if_exception(self.provider.is_transient),
            wait=wait_exponential(multiplier=2 * opts.poll_interval, max=opts.max_poll_interval),
            stop=stop_after_attempt(opts.max_attempts - 1) | stop_after_delay(max(deadline_at - time.time(), 0.0)),
            reraise=True,
        )(call)

    def fetch(self, job_id: str, circuits: list[BoundCircuit], widths: list[int], shots) -> list | np.ndarray:
        """The job's results: a list of float64 vectors, or a 2-D float64 array (one row each)."""
        try:
            probs = self.retried(lambda: self.provider.result(job_id, circuits, shots))
        except Exception as err:
            raise self.clean(err) from None
        if isinstance(probs, np.ndarray) and probs.ndim == 2:  # one row per circuit, all of one width
            fits = probs.shape == (len(widths), widths[0]) and widths.count(widths[0]) == len(widths)
            probs = probs.astype(np.float64, copy=False) if fits else None
        else:
            fits = list(map(len, probs)) == widths
        if not fits:  # one result of 2**n_qubits per circuit
            raise ProviderError(f"{self.provider.name}: job {job_id} returned results that do not fit its circuits")
        return probs if isinstance(probs, np.ndarray) else [np.asarray(p, dtype=np.float64) for p in probs]

    def cancel(self, job_id: str) -> State | None:
        """Cancel a job past its timeout; DONE if it finished meanwhile (its results count)."""
        try:
            self.provider.cancel(job_id)
            return State.DONE if self.provider.status(job_id).state is State.DONE else None
        except Exception as err:  # the job is abandoned either way; its outcome is logged
            logger.warning("cancelling job %s failed: %s", job_id, self.provider.redact(str(err)))
            return None
