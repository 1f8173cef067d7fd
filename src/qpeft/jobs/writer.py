"""The engine's writer: one thread that writes finished jobs, in order, while the next job runs.

A finished job's results go to the result cache first, then its ``done`` record to the ledger
(never the other way round: a ``done`` job is looked up in the cache first). Every write ends
before the engine call that made it returns (:meth:`JobWriter.drain`), and one an interrupted
call left behind lands before the next call looks anything up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from qpeft.jobs.cache import ResultCache

logger = logging.getLogger(__name__)


class JobWriter:
    """Writes finished jobs to ``cache``, and their records through the ``record`` each write is
    given (the engine's ledger writer: ``record(event, job_key, job_id, attempt, circuits, shots,
    tag, **extra)``; a queued write holds it, and so keeps its engine alive until it is written)."""

    def __init__(self, cache: ResultCache) -> None:
        self.cache = cache
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qpeft-persist")
        self._writes: list[Future] = []

    def write(self, record: Callable, job_key: str, probs, common: tuple, timing: dict, event: str = "done") -> None:
        """Write one finished job now, in the calling thread: its results, then its record."""
        self.cache.put_job(job_key, probs)
        record(event, *common, **timing)

    def submit(self, record: Callable, job_key: str, probs, common: tuple, timing: dict) -> None:
        """Write one finished job on the writer thread (in the calling thread once the interpreter
        is shutting down and starts no threads)."""
        try:
            self._writes.append(self._pool.submit(self.write, record, job_key, probs, common, timing))
        except RuntimeError:
            self.write(record, job_key, probs, common, timing)

    def drain(self, raise_errors: bool = True) -> None:
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

    def shutdown(self) -> None:
        """Stop the writer thread (after :meth:`drain`)."""
        self._pool.shutdown(wait=True)
