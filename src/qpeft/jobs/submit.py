"""Submissions that never pay twice.

For a provider whose jobs outlive the process (``Provider.durable``), every submit call is
preceded by an ``intent`` record (fsynced: key, tag, provider, backend), so whatever happens to
the call, the ledger knows a job may exist:

* the call answers with an id: ``submitted`` (fsynced), then the job is followed;
* it answers with an error: the provider created nothing (``rejected``); a transient error
  that does not say so (a timeout, a dropped connection: :meth:`Provider.created_nothing`)
  is ``unknown``, settled by the tag as after a crash (below), never retried blindly;
* it gives no answer within ``submit_timeout``: ``unknown``; the engine waits for the late
  answer or looks the job up by its tag, and never submits it again blindly;
* the process dies while the call is in flight: the next run finds the ``intent`` (or
  ``unknown``) without a job id and, before it submits anything, looks the job up by its tag
  where the provider can (spool, IBM's job tags): found, it re-attaches; not found, the
  submission created nothing and the job is submitted. Where the provider cannot look jobs up
  by tag (Origin QCloud: its SDK lists no jobs by tag or batch id) the submission is reported
  unresolved (:class:`SubmissionUnknownError`) and settled by hand with
  ``qpeft jobs RUN_DIR --resolve TAG [--job-id ID]``.

Each submission first reserves its spend under the run's cap (:mod:`qpeft.jobs.budget`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from qpeft.jobs.base import BoundCircuit, Provider, SubmissionUnknownError
from qpeft.jobs.budget import Budget, Spend, job_spend
from qpeft.jobs.calls import Late, MayHaveCreated, NoAnswer, ProviderCalls, ProviderError, late_submit
from qpeft.jobs.ledger import Ledger
from qpeft.jobs.options import Deadline, EngineOptions

logger = logging.getLogger("qpeft.jobs.engine")


class Submitter:
    """Submits a job key's attempts and settles submissions of unknown outcome (see module
    docstring). ``record(event, key, job_id, attempt, circuits, shots, tag, **extra)`` writes a
    ledger record of the engine's current call."""

    def __init__(
        self,
        provider: Provider,
        calls: ProviderCalls,
        ledger: Ledger,
        options: EngineOptions,
        budget: Budget,
        record: Callable[..., dict],
    ):
        self.provider, self.calls, self.ledger = provider, calls, ledger
        self.options, self.budget, self.record = options, budget, record

    def submit(
        self, key: str, circuits: list[BoundCircuit], shots: int | None, attempt: int, deadline: Deadline
    ) -> str | None:
        """Submit attempt ``attempt`` of job key ``key``: the new job's id, or None when the
        provider confirmed that nothing was created (then the caller submits the next attempt)."""
        tag = f"{key}.{attempt}"
        reserved = self.budget.reserve(key, len(circuits), shots)
        durable = self.provider.durable
        if durable:
            self.record("intent", key, None, attempt, circuits, shots, tag)
        try:
            job_id = self.calls.submit(circuits, shots, tag, deadline)
        except NoAnswer as no_answer:
            return self._await(no_answer.late, key, tag, attempt, circuits, shots, deadline, reserved)
        except MayHaveCreated as unsure:  # the job may exist: settled by its tag, never submitted again blindly
            unknown = self.record("unknown", key, None, attempt, circuits, shots, tag, message=str(unsure.error))
            return self.recover(unknown, circuits, shots, deadline)
        except Exception as err:  # the provider answered with an error: it created nothing
            self.budget.release(reserved)
            if durable:
                self.record("rejected", key, None, attempt, circuits, shots, tag, message=str(err))
            if isinstance(err, ProviderError):
                raise ProviderError(
                    f"job key {key} (tag {tag}) was not submitted, nothing was created: {err}"
                ) from None
            raise
        self._submitted(key, job_id, attempt, circuits, shots, tag)
        return job_id

    def _submitted(self, key: str, job_id: str, attempt: int, circuits, shots, tag: str) -> None:
        """Record the new job; if the record cannot be written (a full disk), the error and the
        log name the job id the provider answered, so that it is not lost."""
        try:
            self.record("submitted", key, job_id, attempt, circuits, shots, tag)
        except Exception as err:
            message = (
                f"job key {key} (tag {tag}) was created at the provider as job {job_id}, but its ledger record "
                f"could not be written ({err}); fix that, then run `qpeft jobs RUN_DIR --resolve {tag} --job-id "
                f"{job_id}` so that a rerun re-attaches to it instead of paying for it again"
            )
            logger.error(message)
            err.add_note(message)
            raise

    def _await(self, late: Late, key, tag, attempt, circuits, shots, deadline: Deadline, reserved: Spend, unknown=None):
        """A submit call of this process that gave no answer in time (``late``): wait for its late
        answer or find the job by its tag; never submit it again blindly. None: the late answer was
        a rejection. ``unknown``: its ledger record, if an earlier run of this process wrote it."""
        late.wait_again()
        future, opts = late.future, self.options
        give_up = min(time.time() + opts.job_timeout, deadline.at)
        wait_s = opts.poll_interval
        try:
            if unknown is None:
                unknown = self.record("unknown", key, None, attempt, circuits, shots, tag)
            while True:
                if future.done():
                    late.settle()
                    err = future.exception()
                    if err is None:
                        job_id = future.result()
                        break
                    if self.provider.is_transient(err) and not self.provider.created_nothing(err):
                        return self.recover(unknown, circuits, shots, deadline)  # (the late answer does not say either)
                    message = self.provider.redact(str(err))
                    self.budget.release(reserved)
                    self.record("rejected", key, None, attempt, circuits, shots, tag, message=message)
                    if self.provider.is_transient(err):
                        return None
                    raise self.calls.clean(err)
                if time.time() >= give_up:
                    if late.give_up():
                        raise SubmissionUnknownError(self._unresolved(key, tag, "gave no answer", in_flight=True))
                    continue  # (it answered just now)
                job_id = self.calls.find(tag, deadline) if self.provider.can_find else None
                if job_id is not None:
                    late.settle()
                    break
                time.sleep(min(wait_s, max(give_up - time.time(), 0.0)))
                wait_s = min(2 * wait_s, opts.max_poll_interval)
        except BaseException:
            if late_submit(self.calls.scope, tag) is late:  # (not settled)
                late.abandon()  # (its answer is logged; a later run of this process waits for it)
            raise
        self._submitted(key, job_id, attempt, circuits, shots, tag)
        return job_id

    def recover(self, live: dict, circuits: list[BoundCircuit], shots, deadline: Deadline) -> str | None:
        """A submission an earlier process left without a job id (an ``intent`` a crash cut off,
        or an ``unknown``: no answer, or an error that does not say whether it created the job):
        the job's id if the provider has a job with its tag (recorded as
        ``submitted``: the caller re-attaches), None if it has none (``rejected``: the caller
        submits the next attempt). Raises :class:`SubmissionUnknownError` where the provider
        cannot look jobs up by tag."""
        key, tag, attempt = live["key"], live["tag"], live["attempt"]
        late = late_submit(self.calls.scope, tag)
        if late is not None:  # its call is still in flight in this process (or has answered): not looked up
            logger.info(
                "job key %s: the submission of tag %s was made by this process; waiting for its answer", key, tag
            )
            spend = job_spend(self.provider.name, len(circuits), shots, self.provider.backend)
            return self._await(late, key, tag, attempt, circuits, shots, deadline, spend, unknown=live)
        if not self.provider.can_find:
            why = "was cut off by a crash" if live["event"] == "intent" else "gave no answer"
            if live.get("message"):
                why = f"failed with an error that does not say whether it created the job ({live['message']})"
            raise SubmissionUnknownError(self._unresolved(key, tag, why))
        job_id = self.calls.find(tag, deadline)
        settled_at = live["time"] + self.options.submit_timeout  # a call still in flight could create it until then
        if job_id is None and time.time() < settled_at:
            time.sleep(min(settled_at - time.time(), deadline.left()))
            job_id = self.calls.find(tag, deadline)
        if job_id is None and time.time() < settled_at:  # the deadline cut the wait short: not settled
            raise TimeoutError(
                f"{deadline.what} reached before the submission of job key {key} (tag {tag}) was settled: a job "
                "it created may still appear at the provider; it stays open in the ledger: rerun to look it up again"
            )
        if job_id is None:
            message = f"the provider has no job with tag {tag}: the submission created nothing"
            self.record("rejected", key, None, attempt, circuits, shots, tag, message=message)
            # (counted as maybe spent)
            self.budget.release(job_spend(self.provider.name, len(circuits), shots, self.provider.backend))
            logger.info("job key %s: %s; submitting it", key, message)
            return None
        self._submitted(key, job_id, attempt, circuits, shots, tag)
        logger.info("job key %s: found job %s by its tag %s; re-attaching", key, job_id, tag)
        return job_id

    def _unresolved(self, key: str, tag: str, why: str, in_flight: bool = False) -> str:
        finding = (
            "it could not find the job by its tag either"
            if self.provider.can_find
            else f"the {self.provider.name} provider cannot look jobs up by tag"
        )
        if in_flight:  # (its request may not have left: no console shows it yet, so no one can settle it by hand)
            return (
                f"the submission of job key {key} (tag {tag}) {why}, and {finding}; its call is still in flight in "
                "this process and may not have reached the provider yet, so whether it creates a job is unknown. It "
                "was not submitted again (that could pay for it twice). Rerun in this process (a notebook, a script "
                "that catches this error): the rerun waits for the call's answer (logged when it comes). Until the "
                "call answers or this process ends, no other process can open the run directory; once this process "
                "has ended, the next run settles the submission as after a crash"
            )
        return (
            f"the submission of job key {key} (tag {tag}) {why}, and {finding}, so whether it created a job is "
            "unknown; it was not submitted again (that could pay for it twice). Look for the job in the provider's "
            f"console (submitted at the time of that ledger record), then run `qpeft jobs RUN_DIR --resolve {tag} "
            f"--job-id ID` if it exists, or `qpeft jobs RUN_DIR --resolve {tag}` if it does not, and rerun"
        )
