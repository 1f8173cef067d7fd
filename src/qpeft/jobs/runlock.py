"""One job engine per run directory.

A :class:`~qpeft.jobs.engine.JobEngine` reads the run's ledger once, when it is made, and trusts
it from then on: a second engine on the same run directory at the same time (a rerun started
while the first process still runs, a scheduler that requeues a job that is alive) would not
see the first one's submissions and would pay for the same jobs again. So:

* across processes, an engine holds an exclusive advisory lock on ``run_dir/jobs/engine.lock``
  from its start until :meth:`~qpeft.jobs.engine.JobEngine.close` (or until its process ends:
  the system releases the lock of a process that dies); another process's engine on that run
  directory stops at once with :class:`RunInUseError`;
* within a process, a new engine on the run directory takes it over from an older one that is
  not running (a notebook that makes a new engine after an error, say): the older one is retired
  and its :meth:`~qpeft.jobs.engine.JobEngine.run` refuses, since its ledger no longer is the
  current one. An older engine in the middle of a run is not taken over: the new one stops.

Where the file system has no advisory locks engines run without the lock, with a warning.
"""

from __future__ import annotations

import errno
import logging
import threading
import weakref
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

logger = logging.getLogger("qpeft.jobs.engine")


class RunInUseError(RuntimeError):
    """Another job engine has this run directory open."""


class _Lock:
    """This process's lock on one run directory: the locked file (None without advisory locks),
    the engine that owns the run directory now, and how many engines still hold the lock."""

    def __init__(self, key: str, file):
        self.key, self.file, self.owner, self.holders = key, file, None, 0


_locks: dict[str, _Lock] = {}
_guard = threading.Lock()


class RunHold:
    """An engine's hold on its run directory (see module docstring): :attr:`current` tells
    whether the engine still owns it; :meth:`release` (at close, or when the engine is freed)
    lets go, the last holder of the process unlocking the file."""

    def __init__(self, lock: _Lock, engine):
        self._lock, self._engine, self._released = lock, weakref.ref(engine), False
        weakref.finalize(engine, self.release)  # (an engine dropped without close() lets go too)

    @property
    def current(self) -> bool:
        """Whether the engine still owns the run directory (no newer engine took it over)."""
        return self._lock.owner is not None and self._lock.owner() is self._engine()

    def release(self) -> None:
        """Let go (idempotent)."""
        if not self._released:
            self._released = True
            _release(self._lock)


def _release(lock: _Lock) -> None:
    with _guard:
        lock.holders -= 1
        if lock.holders == 0:
            if lock.file is not None:
                lock.file.close()
            _locks.pop(lock.key, None)


def hold_run(jobs_dir: Path, engine) -> RunHold:
    """Hold ``jobs_dir`` for ``engine`` (see module docstring).

    Raises:
        RunInUseError: an engine of another process holds the run directory, or one of this
            process is running on it.
    """
    jobs_dir.mkdir(parents=True, exist_ok=True)
    key = str(jobs_dir.resolve())
    with _guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = _Lock(key, _lock_file(jobs_dir))
        previous = lock.owner() if lock.owner is not None else None
        if previous is not None and getattr(previous, "_running", 0):
            raise RunInUseError(
                f"{jobs_dir.parent} is in use by another job engine of this process, in the middle of a run: two "
                "engines on one run directory would each pay for jobs the other submits. Let its run end, then "
                "make the new engine (or keep using that one)"
            )
        lock.owner, lock.holders = weakref.ref(engine), lock.holders + 1
        if previous is not None:
            logger.info("%s: a new job engine takes the run directory over; the older one is retired", jobs_dir.parent)
    return RunHold(lock, engine)


def _lock_file(jobs_dir: Path):
    """``jobs_dir/engine.lock``, open and locked exclusively; None without advisory locks."""
    if fcntl is None:
        logger.warning("%s: this platform has no advisory file locks; nothing stops a second engine", jobs_dir)
        return None
    f = open(jobs_dir / "engine.lock", "a")  # noqa: SIM115 (held while an engine of this process holds the run)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return f
    except OSError as err:
        f.close()
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise RunInUseError(
                f"{jobs_dir.parent} is in use by another job engine (a training or evaluation still running in "
                "another process): two engines on one run directory would each pay for jobs the other submits. "
                "Let that run end (or stop it), then rerun"
            ) from None
        logger.warning("%s: its file system has no advisory locks (%s); nothing stops a second engine", jobs_dir, err)
        return None
