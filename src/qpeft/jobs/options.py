"""The job engine's options (``--quantum-options`` reaches every field), its deadlines and its
progress bar."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

from tqdm.auto import tqdm

#: the default overall deadline of one engine (one training or evaluation process): a week
RUN_DEADLINE = 7 * 24 * 3600.0


@dataclass
class EngineOptions:
    """How the engine submits and follows jobs.

    Time in a provider's queue is not run time: ``job_timeout`` counts from the moment a job is
    first seen out of the queue, and a queued job is cancelled only past ``queue_timeout`` (by
    default never: QPU queues can last hours). A job past either limit is cancelled, and
    submitted again only once the provider confirms it cancelled, failed or gone; a job the
    provider does not confirm within ``cancel_wait`` stops the call with its id (it stays open in
    the ledger, a rerun re-attaches to it).
    """

    max_parallel: int = 10  # jobs in flight at once (Braket's default)
    poll_interval: float = 1.0  # first wait between status polls, doubling ...
    max_poll_interval: float = 30.0  # ... up to this
    job_timeout: float = 3 * 3600.0  # run time (out of the queue) after which a job is cancelled
    queue_timeout: float | None = None  # queue time after which a job is cancelled (None: never)
    cancel_wait: float = 120.0  # seconds to wait for a provider to confirm a cancel
    submit_timeout: float = 120.0  # a submit call with no answer by then has an unknown outcome
    deadline: float | None = None  # seconds for one run() call (e.g. a training step); open jobs stay in the ledger
    run_deadline: float | None = RUN_DEADLINE  # seconds for all calls of one engine (one process) together
    max_attempts: int = 4  # submissions per job, all causes together
    # serve identical circuits from earlier calls (e.g. earlier steps): a job whose every circuit ran before
    reuse_results: bool = False
    progress: bool | None = None  # job progress bar (None: only on a terminal)
    max_spend: dict | None = None  # a cap on what the run's ledger may hold: {"jobs", "shots", "amount"}
    switch_backend: bool = False  # allow a backend other than the one the run's ledger records
    switch_shots: bool = False  # allow shots other than those of the jobs a step left open (they stay open)
    switch_account: bool = False  # go on as another account than the one that made the run's open jobs

    def __post_init__(self) -> None:
        for name in ("max_parallel", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        for name in ("poll_interval", "max_poll_interval", "job_timeout", "submit_timeout", "cancel_wait"):
            if not _positive(getattr(self, name)):
                raise ValueError(f"`{name}` must be a positive number of seconds, got {getattr(self, name)!r}")
        for name in ("queue_timeout", "deadline", "run_deadline"):
            value = getattr(self, name)
            if value is not None and not _positive(value):
                raise ValueError(f"`{name}` must be a positive number of seconds or None (no limit), got {value!r}")


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class Deadline:
    """When an engine call must stop waiting (``at``, a ``time.time()``; inf: never) and which
    limit that is (for the message)."""

    at: float = math.inf
    what: str = "no deadline"

    @classmethod
    def earliest(cls, options: EngineOptions, started: float) -> Deadline:
        """The nearer of the call's ``deadline`` (from now) and the engine's ``run_deadline``
        (from ``started``, when the engine was made)."""
        now = time.time()
        candidates = [cls()]
        if options.deadline:
            candidates.append(cls(now + options.deadline, f"the deadline of {options.deadline:g} s"))
        if options.run_deadline:
            candidates.append(cls(started + options.run_deadline, f"the run deadline of {options.run_deadline:g} s"))
        return min(candidates, key=lambda d: d.at)

    def left(self) -> float:
        """Seconds left (never negative)."""
        return max(self.at - time.time(), 0.0)

    def passed(self) -> bool:
        """Whether the deadline has passed."""
        return time.time() >= self.at


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(show: bool | None, total: int, provider: str):
    """tqdm's bar over a call's ``total`` jobs; when it would be hidden (``show`` off, or None and
    stderr not a terminal: tqdm's rule) none is made, which keeps small calls cheap."""
    if show is None:
        show = sys.stderr is not None and sys.stderr.isatty()
    if not show:
        return _NoBar()
    return tqdm(total=total, unit="job", desc=f"{provider} jobs")
