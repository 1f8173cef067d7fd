"""The provider's calls as the job engine makes them: submit (with a timeout when the provider
is remote), poll with exponential backoff until the job ends or passes its queue or run-time
limit, fetch, cancel (and wait for the provider to confirm it), look a job up by its tag; transient
errors retried with backoff (tenacity), everything else raised as :class:`ProviderError` with
secrets removed. What to do with a call's outcome (the ledger, resubmission) is the engine's
business."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
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

from qpeft.jobs.base import BoundCircuit, JobLostError, JobStillRunningError, Provider, State, Status, error_chain
from qpeft.jobs.options import Deadline, EngineOptions
from qpeft.jobs.runlock import pin_run

logger = logging.getLogger("qpeft.jobs.engine")


class ProviderError(RuntimeError):
    """A non-transient provider error, with secrets removed from its message."""


class NoAnswer(Exception):
    """A submit that gave no answer within ``submit_timeout``: its outcome is unknown. ``late``:
    its call, still in flight."""

    def __init__(self, late: Late):
        self.late = late


class Late:
    """A remote submit call of ``tag`` in this process, from its start until a run has its answer
    (:meth:`settle`): its ``future``. While no run waits for it (it gave no answer within
    ``submit_timeout`` and the run gave up, or an interrupt cut the wait short), its answer is
    logged when it comes, with the command that records it; a later run of this process that finds
    the tag unsettled waits for the same call (:func:`late_submit`) instead of looking it up.
    ``scope``: the run directory's :func:`~qpeft.jobs.runlock.run_key` (two run directories may
    share tags), whose lock this process keeps until the call answers (another process could not
    know of a request that has not left this one), or a name for a run without one."""

    def __init__(self, scope: str, tag: str, future: Future):
        self.scope, self.tag, self.future = scope, tag, future
        self._waited_for, self._told = True, False
        self._lock = threading.Lock()
        with _late_lock:
            _late[scope, tag] = self
        unpin = pin_run(scope)
        if unpin is not None:
            future.add_done_callback(lambda _: unpin())
        future.add_done_callback(self._answered)

    def settle(self) -> None:
        """A run has its answer (or found its job): forgotten."""
        with _late_lock:
            if _late.get((self.scope, self.tag)) is self:
                del _late[self.scope, self.tag]

    def wait_again(self) -> None:
        """A run waits for the answer (again) and records it."""
        with self._lock:
            self._waited_for = True

    def give_up(self) -> bool:
        """Stop waiting unless the answer has come: False if it has (read it instead)."""
        with self._lock:
            if self.future.done():
                return False
            self._waited_for = False
            return True

    def abandon(self) -> None:
        """Stop waiting, whatever the answer (an error is on its way): it is logged, now if it has come."""
        with self._lock:
            self._waited_for = False
        if self.future.done():
            self._tell()

    def _answered(self, future: Future) -> None:
        with self._lock:
            if self._waited_for:
                return  # (a run is waiting for it and records it)
        self._tell()

    def _tell(self) -> None:
        with self._lock:
            if self._told:
                return
            self._told = True
        if self.future.exception() is not None:
            logger.warning("the submission of tag %s, which the run gave up on, answered late with an error", self.tag)
            return
        job_id = self.future.result()
        logger.warning(
            "the submission of tag %s, which the run gave up on, answered late: it created job %s. A rerun in this "
            "process re-attaches to it; in another process, first run `qpeft jobs RUN_DIR --resolve %s --job-id %s`",
            self.tag,
            job_id,
            self.tag,
            job_id,
        )


_late_lock = threading.Lock()
_late: dict[tuple[str, str], Late] = {}  # (scope, tag) -> its submit call in this process, until a run has its answer


def late_submit(scope: str, tag: str) -> Late | None:
    """The submit call of ``tag`` in the run directory ``scope`` (see :class:`Late`) in this
    process whose answer no run has yet: a later run waits for it rather than look the job up by
    its tag (the call may not have reached the provider yet, e.g. while it waits for its turn);
    None if none."""
    with _late_lock:
        return _late.get((scope, tag))


def in_background(call: Callable, *args, first: Callable[[Future], None] | None = None) -> Future:
    """``call(*args)`` in a thread of its own, its outcome in the returned future. A daemon thread:
    an SDK call stuck without a read timeout does not keep the process from exiting once the run
    has given up on it (its ``unknown`` record is settled by the next run, as after a crash), nor
    take a pool's worker from the calls after it. ``first(future)`` runs in that thread before the
    call: no KeyboardInterrupt lands outside the main thread, so what it sets up is in place before
    the call is made, however early a Ctrl-C cuts the caller short."""
    future: Future = Future()

    def work():
        if future.set_running_or_notify_cancel():
            try:
                if first is not None:
                    first(future)
                future.set_result(call(*args))
            except BaseException as err:
                future.set_exception(err)

    threading.Thread(target=work, name="qpeft-submit", daemon=True).start()
    return future


class MayHaveCreated(Exception):
    """A submit that failed with a transient error that does not say whether the service created
    the job (a timeout, a dropped connection: :meth:`Provider.created_nothing` is False): its
    outcome is unknown. ``error``: the provider's error, secrets removed."""

    def __init__(self, error: ProviderError):
        super().__init__(str(error))
        self.error = error


def forget_hidden(err: BaseException) -> None:
    """Drop the errors that ``raise ... from None`` hid from ``err``'s chain: a traceback does not
    print a suppressed ``__context__``, but anything that walks the chain (an error reporter, a
    debugger, ``logging`` of the context) still finds it, and the SDK's original error there may
    echo a credential or a signed URL that :meth:`ProviderCalls.clean` redacted."""
    for each in error_chain(err):
        if each.__suppress_context__:
            each.__context__ = None


class ProviderCalls:
    """One provider's calls, with the engine's options (timeouts, backoff, attempts)."""

    def __init__(self, provider: Provider, options: EngineOptions, scope: str = "-"):
        self.provider = provider
        self.options = options
        self.scope = scope  # (the run's, for :class:`Late`)

    def submit(self, circuits: list[BoundCircuit], shots, tag: str, deadline: Deadline) -> str:
        """The new job's id; transient rejections that certainly created nothing retried with
        backoff; raises :class:`NoAnswer` when a remote submit does not answer, and
        :class:`MayHaveCreated` for a transient error after which the job may exist."""
        opts = self.options

        def call():
            if not self.provider.remote:  # in-process: nothing to time out
                return self.provider.submit(circuits, shots, tag)
            ready, made = threading.Event(), []

            def register(future: Future) -> None:  # (registered and pinned before its request can leave)
                try:
                    made.append(Late(self.scope, tag, future))
                finally:
                    ready.set()

            future = in_background(self.provider.submit, circuits, shots, tag, first=register)
            try:  # (not cut short by the deadline: a call abandoned in flight leaves a job of unknown fate)
                job_id = future.result(timeout=opts.submit_timeout)
            except FutureTimeout:
                ready.wait()
                if not made:  # its registration failed, so the call was not made: raises why
                    future.result()
                raise NoAnswer(made[0]) from None
            except BaseException as err:
                ready.wait()
                if made and future.done() and future.exception() is err:  # it answered with an error
                    made[0].settle()
                elif made:  # the wait was interrupted (Ctrl-C): the call goes on
                    made[0].abandon()
                raise
            made[0].settle()
            return job_id

        provider = self.provider
        try:
            return self.retried(
                call, deadline, lambda err: provider.is_transient(err) and provider.created_nothing(err)
            )
        except NoAnswer:
            raise
        except Exception as err:
            if provider.is_transient(err) and not provider.created_nothing(err):
                raise MayHaveCreated(self.clean(err)) from None
            raise self.clean(err) from None

    def clean(self, err: BaseException, job_id: str | None = None) -> ProviderError:
        """The :class:`ProviderError` the engine raises for ``err``: the provider's name, the job's id
        (if given), the error's type and its message with every secret redacted."""
        about = f" job {job_id}" if job_id else ""
        return ProviderError(f"{self.provider.name}{about}: {self.provider.describe(err)}")

    def poll(self, job_id: str, submitted_at: float, deadline: Deadline) -> tuple[State | str, str, float]:
        """(the job's terminal state, 'lost' (the provider does not know it), or 'timeout' (past
        its queue or run-time limit), the provider's words, seconds it waited in the queue).
        Raises TimeoutError at the deadline (the job stays open in the ledger, a rerun
        re-attaches)."""
        opts = self.options
        started: list[float] = []  # when the job was first seen out of the queue

        def check() -> Status:
            status = self.provider.status(job_id)
            if status.state is not State.QUEUED and not started:
                started.append(time.time())
            return status

        def limit_at() -> float:  # run time counts from leaving the queue; queue time only if capped
            if started:
                return started[0] + opts.job_timeout
            return submitted_at + opts.queue_timeout if opts.queue_timeout else float("inf")

        try:
            try:  # one look first: a job that has already ended (an in-process one) needs no retry loop
                status = check()
            except Exception as err:
                if not self.provider.is_transient(err):
                    raise
                status = None
            if status is None or not status.state.terminal:
                self.provider.wait(job_id, min(opts.poll_interval, max(min(limit_at(), deadline.at) - time.time(), 0)))
                status = self._watch(job_id, check, lambda: min(limit_at(), deadline.at))
        except RetryError:
            if deadline.passed():
                raise TimeoutError(
                    f"{deadline.what} reached; job {job_id} is still open in the ledger: rerun to re-attach to it"
                ) from None
            now = time.time()
            if started:
                why = f"has run {now - started[0]:.0f} s out of the queue, past job_timeout={opts.job_timeout:g} s"
            else:
                why = f"has waited {now - submitted_at:.0f} s in the queue, past queue_timeout={opts.queue_timeout:g} s"
            return "timeout", why, self._queued(started, submitted_at)
        except JobLostError as err:
            return "lost", self.provider.redact(str(err)), 0.0
        except Exception as err:
            raise self.clean(err, job_id) from None
        return status.state, self.provider.redact(status.message), self._queued(started, submitted_at)

    def _watch(self, job_id: str, check: Callable[[], Status], stop_at: Callable[[], float]) -> Status:
        """``check()`` until it gives a terminal status, with exponential backoff between looks
        (transient errors retried), never sleeping past ``stop_at()``; RetryError once it passes."""
        opts = self.options
        backoff = wait_exponential(multiplier=opts.poll_interval, max=opts.max_poll_interval)
        return Retrying(
            retry=retry_if_exception(self.provider.is_transient) | retry_if_result(lambda s: not s.state.terminal),
            wait=lambda state: min(backoff(state), max(stop_at() - time.time(), 0.0)),
            stop=lambda state: time.time() >= stop_at(),
            sleep=lambda seconds: self.provider.wait(job_id, seconds),
            reraise=True,
        )(check)

    @staticmethod
    def _queued(started: list[float], submitted_at: float) -> float:
        return max(0.0, (started[0] if started else time.time()) - submitted_at)

    def retried(self, call, deadline: Deadline | None = None, transient: Callable[[BaseException], bool] | None = None):
        """``call()``, its transient errors (``transient``, by default the provider's
        :meth:`~Provider.is_transient`) retried with exponential backoff, ``max_attempts`` calls
        at most (and none past the deadline). The first call runs without tenacity (most
        succeed; a retry loop costs more than an in-process job's bookkeeping); the loop then
        waits as tenacity's would have from the first call: poll_interval * 2**(n-1) after call n."""
        opts = self.options
        deadline = deadline or Deadline()
        transient = transient or self.provider.is_transient
        try:
            return call()
        except Exception as err:
            if not transient(err) or opts.max_attempts == 1 or deadline.passed():
                raise
        time.sleep(min(opts.poll_interval, opts.max_poll_interval))
        return Retrying(
            retry=retry_if_exception(transient),
            wait=wait_exponential(multiplier=2 * opts.poll_interval, max=opts.max_poll_interval),
            stop=stop_after_attempt(opts.max_attempts - 1) | stop_after_delay(deadline.left()),
            reraise=True,
        )(call)

    def fetch(self, job_id: str, circuits: list[BoundCircuit], widths: list[int], shots) -> list | np.ndarray:
        """The job's results: a list of float64 vectors, or a 2-D float64 array (one row each)."""
        try:
            probs = self.retried(lambda: self.provider.result(job_id, circuits, shots))
        except Exception as err:
            raise self.clean(err, job_id) from None
        if isinstance(probs, np.ndarray) and probs.ndim == 2:  # one row per circuit, all of one width
            fits = probs.shape == (len(widths), widths[0]) and widths.count(widths[0]) == len(widths)
            probs = probs.astype(np.float64, copy=False) if fits else None
        else:
            fits = list(map(len, probs)) == widths
        if not fits:  # one result of 2**n_qubits per circuit
            raise ProviderError(f"{self.provider.name}: job {job_id} returned results that do not fit its circuits")
        return probs if isinstance(probs, np.ndarray) else [np.asarray(p, dtype=np.float64) for p in probs]

    def cancel(self, job_id: str, deadline: Deadline) -> tuple[State | str | None, str]:
        """Ask the provider to cancel a job past its limit, then watch it for up to
        ``cancel_wait`` seconds. Returns (DONE: it finished meanwhile and its results count;
        CANCELLED or FAILED: the provider confirms it ended; 'lost': the provider no longer knows
        it; None: not confirmed, it may still run) and the provider's words."""
        words = []
        try:
            if self.retried(lambda: self.provider.cancel(job_id), deadline) is False:
                words.append("the provider refused to cancel it")
        except JobLostError as err:
            return "lost", self.provider.redact(str(err))
        except Exception as err:
            words.append(f"the cancel request failed ({self.provider.describe(err)})")
        give_up = min(time.time() + self.options.cancel_wait, deadline.at)
        seen: list[Status] = []

        def check() -> Status:
            seen.append(self.provider.status(job_id))
            return seen[-1]

        try:
            status = self._watch(job_id, check, lambda: give_up)
        except JobLostError as err:
            return "lost", "; ".join([*words, self.provider.redact(str(err))])
        except Exception as err:  # still running (RetryError), or the status call failed: not confirmed
            last = seen[-1] if seen else None
            if isinstance(err, RetryError) and last is not None:
                words.append(f"{self.options.cancel_wait:g} s later it still reads {last.state.name}")
            else:
                words.append(f"its status could not be read ({self.provider.describe(err)})")
            if last is not None and last.message:
                words.append(self.provider.redact(last.message))
            return None, "; ".join(words)
        words.append(f"it reads {status.state.name}" + (f": {status.message}" if status.message else ""))
        return status.state, self.provider.redact("; ".join(words))

    def stop(self, job_key: str, job_id: str, why: str, deadline: Deadline) -> tuple[State | str, str]:
        """A job past its queue or run-time limit (``why``): cancelled; ("timeout", words) once the
        provider confirms that it ended (then it is submitted again), (DONE, "") if it finished
        meanwhile. Raises :class:`JobStillRunningError` when the provider does not confirm (it may
        still run and be billed: it is not submitted again, and stays open in the ledger)."""
        outcome, words = self.cancel(job_id, deadline)
        if outcome is State.DONE:
            return State.DONE, ""
        if outcome is None:
            raise JobStillRunningError(job_key, job_id, f"{why}; a cancel was requested, but {words}")
        return "timeout", f"{why}; cancelled ({words})"

    def find(self, tag: str, deadline: Deadline) -> str | None:
        """The id of the job submitted with ``tag`` (None: the provider has none), transient
        errors retried."""
        try:
            return self.retried(lambda: self.provider.find(tag), deadline)
        except Exception as err:
            raise self.clean(err) from None

    def usage(self, job_id: str) -> dict | None:
        """What the provider reports the finished job used (None if it reports nothing or the
        call fails: the bill is information, never a reason to fail a run)."""
        try:
            return self.provider.usage(job_id)
        except Exception as err:
            logger.info("job %s: the provider's usage report failed: %s", job_id, self.provider.redact(str(err)))
            return None
