"""The job engine's and the providers' errors: what a provider raises (:class:`TransientError`,
:class:`JobLostError`), what the engine raises when a job cannot be finished without risking a
second payment (:class:`JobFailedError`, :class:`JobStillRunningError`,
:class:`SubmissionUnknownError`), and :func:`error_chain`, which walks an error's causes.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator

_GROUPS = getattr(builtins, "BaseExceptionGroup", ())  # (Python 3.11+: a traceback prints each error a group holds)


def error_chain(err: BaseException) -> Iterator[BaseException]:
    """``err``, then every error it chains to (``__cause__``, ``__context__``) or groups, each once.
    An error's links are read after the caller has handled it, so a caller that drops a link
    (sets ``__context__`` to None) is not led down it."""
    seen, todo = set(), [err]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        todo += [err.__cause__, err.__context__, *(err.exceptions if isinstance(err, _GROUPS) else ())]


class TransientError(RuntimeError):
    """A provider error that is safe to retry: the provider guarantees nothing was changed
    (status / result) or created (submit; unless :meth:`~qpeft.jobs.base.Provider.created_nothing` says it may
    have been)."""


class JobLostError(RuntimeError):
    """The provider does not know this job id (any more): it will never finish."""


class JobFailedError(RuntimeError):
    """A job failed for good (or kept failing); carries its id, the provider's message and the
    attempts made (``hint``: what to do about it). ``job_id`` is None only when no job of the key
    was ever created."""

    def __init__(self, key: str, job_id: str | None, message: str, attempts: int, hint: str = ""):
        self.key, self.job_id, self.message, self.attempts, self.hint = key, job_id, message, attempts, hint
        words = message or "(the provider gave no message)"
        what = f"job {job_id} (key {key})" if job_id else f"job key {key} (no job was created)"
        super().__init__(f"{what} failed after {attempts} attempt(s): {words}" + (f"; {hint}" if hint else ""))

    def __reduce__(self):  # (sent between processes under torch.distributed)
        return type(self), (self.key, self.job_id, self.message, self.attempts, self.hint)


class JobStillRunningError(TimeoutError):
    """A job past its time limit that the provider did not confirm cancelled: it may still run,
    and be billed, so it was not submitted again. It stays open in the ledger; a rerun
    re-attaches to it and uses its results when they land."""

    def __init__(self, key: str, job_id: str, message: str):
        self.key, self.job_id, self.message = key, job_id, message
        super().__init__(
            f"job {job_id} (key {key}) {message}. It was not submitted again (it may still run and be billed); it "
            "stays open in the run's ledger: rerun the same command to re-attach to it and use its results when "
            "they land, or cancel it first (`qpeft jobs RUN_DIR --cancel ID`, or the provider's console)"
        )

    def __reduce__(self):
        return type(self), (self.key, self.job_id, self.message)


class SubmissionUnknownError(TimeoutError):
    """A submit call gave no answer (or a crash cut it off) and the provider cannot say whether it
    created the job; the engine does not resubmit it (that could run it twice)."""
