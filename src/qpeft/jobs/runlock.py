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
  current one, and its hold (and the file lock) passes to the new one. An older engine with a
  run or a job thread still going is not taken over: the new one stops. An engine that fails to
  start gives the run directory back to the engine that had it.

A submit call still in flight when its engine lets go (the run gave up waiting for its answer, or
a Ctrl-C cut the wait short) keeps the file lock until it answers (:func:`pin_run`): until then the
call may yet create a job, which neither another process's lookup by tag nor its ``qpeft jobs
--resolve`` could know of (the request may not have left this process), so another process's
engine or ``--resolve`` on that run directory stops with :class:`RunInUseError`; a new engine of
this process takes it over as above and waits for the call.

Where the file system has no advisory locks engines run without the lock, with a warning.
(:func:`open_locked` takes the result cache's lock too.)
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

logger = logging.getLogger("qpeft.jobs.engine")


class RunInUseError(RuntimeError):
    """Another job engine has this run directory open."""


class _Lock:
    """This process's lock on one run directory: the locked file (None without advisory locks)
    and the hold of the engine that owns the run directory now (at most one engine of the
    process holds it: a takeover releases the older engine's hold)."""

    def __init__(self, key: str, file):
        self.key, self.file, self.hold = key, file, None
        self.pins = 0  # submit calls in flight that keep the file locked after the hold lets go (pin_run)


_locks: dict[str, _Lock] = {}
_guard = threading.Lock()
_freed: list[RunHold] = []  # holds of engines freed while _guard was taken (released by its next holder)
_locked_files: weakref.WeakSet = weakref.WeakSet()  # every file open_locked holds locked in this process


def _after_fork_in_child() -> None:
    """A forked child (a data loader's worker, a ``multiprocessing`` fork) holds none of its
    parent's run directories or caches. A flock belongs to the open file, which the child shares:
    were the child to keep its copy, the lock would outlive the parent, and a rerun after the
    parent ended would be refused while the child lived. So the child closes its copies (which
    leaves the parent's lock in place: only ``LOCK_UN`` or the last copy's close releases it). The
    module's guard is made anew: a thread of the parent may have held it at the fork, and that
    thread does not exist in the child."""
    global _guard
    _guard = threading.Lock()
    _freed.clear()
    _locks.clear()
    for f in list(_locked_files):
        try:
            f.close()
        except OSError:
            pass
    _locked_files.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RunHold:
    """An engine's hold on its run directory (see module docstring): :meth:`enter` /
    :meth:`leave` bracket the engine's work (a newer engine cannot take over meanwhile);
    :meth:`release` (at close, or when the engine is freed) lets go and unlocks the file."""

    def __init__(self, lock: _Lock, engine, previous: RunHold | None):
        self._lock, self._engine, self._released = lock, weakref.ref(engine), False
        self._previous = previous  # (given back if the engine fails to start)
        weakref.finalize(engine, _freed_engine, self)  # (an engine dropped without close() lets go too)

    @property
    def current(self) -> bool:
        """Whether the engine still owns the run directory (no newer engine took it over)."""
        return self._lock.hold is self and not self._released

    def enter(self, engine) -> None:
        """Count one more piece of ``engine``'s work (a run, a job thread), or raise
        RuntimeError when a newer engine took the run directory over. Atomic with takeovers."""
        with _guard:
            if not self.current:
                raise RuntimeError(
                    "a newer JobEngine on this run directory took it over, so this one's ledger is no longer the "
                    "current one; run the circuits through the newer engine"
                )
            engine._running += 1

    def release(self) -> None:
        """Let go (idempotent)."""
        with _guard:
            self._let_go()
            _release_freed()

    def abandon(self) -> None:
        """The engine failed to start: let go, and give the run directory back to the engine
        that owned it before (if it is still there)."""
        with _guard:
            previous = self._previous
            if self._lock.hold is self and previous is not None and previous._engine() is not None:
                self._released, previous._released = True, False
                self._lock.hold = previous  # (the file stays locked: it is the previous engine's again)
            else:
                self._let_go()
            _release_freed()

    def _let_go(self) -> None:  # (under _guard)
        if self._released:
            return
        self._released = True
        lock = self._lock
        if lock.hold is self:
            lock.hold = None
            if not lock.pins:
                _unlock(lock)


def _unlock(lock: _Lock) -> None:  # (under _guard)
    if lock.file is not None:
        lock.file.close()
    if _locks.get(lock.key) is lock:
        del _locks[lock.key]


def _freed_engine(hold: RunHold) -> None:
    """An engine was freed without close(). The collector may run this inside hold_run, on the
    thread that holds _guard: never wait for it there; the holder releases it on its way out."""
    if _guard.acquire(blocking=False):
        try:
            hold._let_go()
            _release_freed()
        finally:
            _guard.release()
    else:
        _freed.append(hold)


def _release_freed() -> None:  # (under _guard)
    while _freed:
        _freed.pop()._let_go()


def run_key(jobs_dir: Path) -> str:
    """The name of ``jobs_dir`` in this module (and in :func:`qpeft.jobs.calls.late_submit`)."""
    return str(Path(jobs_dir).resolve())


def pin_run(key: str) -> Callable[[], None] | None:
    """Keep this process's lock on the run directory ``key`` (:func:`run_key`) after its engine
    lets go, until the returned function is called (idempotent): a submit call in flight (see
    module docstring). None if this process does not hold the run directory."""
    with _guard:
        _release_freed()
        lock = _locks.get(key)
        if lock is None:
            return None
        lock.pins += 1
    unpinned = []

    def unpin() -> None:
        with _guard:
            if unpinned:
                return
            unpinned.append(True)
            lock.pins -= 1
            if not lock.pins and lock.hold is None:
                _unlock(lock)
            _release_freed()

    return unpin


def hold_run(jobs_dir: Path, engine) -> RunHold:
    """Hold ``jobs_dir`` for ``engine`` (see module docstring).

    Raises:
        RunInUseError: an engine of another process holds the run directory, or one of this
            process is at work on it (a run, or a job thread still going).
    """
    jobs_dir.mkdir(parents=True, exist_ok=True)
    key = run_key(jobs_dir)
    with _guard:
        _release_freed()
        lock = _locks.get(key)
        previous = lock.hold if lock is not None else None
        owner = previous._engine() if previous is not None else None
        if owner is not None and getattr(owner, "_running", 0):
            raise RunInUseError(
                f"{jobs_dir.parent} is in use by another job engine of this process, in the middle of a run: two "
                "engines on one run directory would each pay for jobs the other submits. Let its run end, then "
                "make the new engine (or keep using that one)"
            )
        if lock is None:
            lock = _locks[key] = _Lock(key, _lock_file(jobs_dir))
        hold = RunHold(lock, engine, previous)
        if previous is not None:  # retired: its engine's run() refuses from now on
            previous._released = True
            logger.info("%s: a new job engine takes the run directory over; the older one is retired", jobs_dir.parent)
        lock.hold = hold
    return hold


def open_locked(path: Path, exclusive: bool):
    """``(file, None)``: ``path`` opened and flock-ed, shared (waiting for an exclusive holder) or
    exclusive (failing at once); ``(None, why)`` where the platform or file system has no
    advisory locks. Raises BlockingIOError when an exclusive lock is held elsewhere."""
    if fcntl is None:
        return None, "this platform has no advisory file locks (fcntl)"
    f = open(path, "a")  # noqa: SIM115 (held while locked)
    _locked_files.add(f)  # (before the lock is taken: a fork from another thread meanwhile closes it in the child)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        return f, None
    except OSError as err:
        _locked_files.discard(f)
        f.close()
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return None, f"its file system does not support file locks ({err.strerror})"


def _lock_file(jobs_dir: Path):
    """``jobs_dir/engine.lock``, open and locked exclusively; None without advisory locks."""
    try:
        f, why = open_locked(jobs_dir / "engine.lock", exclusive=True)
    except BlockingIOError:
        raise RunInUseError(
            f"{jobs_dir.parent} is in use by another job engine (a training or evaluation still running in "
            "another process, or a process whose submit call to the provider is still in flight after its run gave "
            "up on it: it may yet create a job): two engines on one run directory would each pay for jobs the "
            "other submits. Let that run end (or stop it; a process whose submit call is stuck holds the directory "
            "until it ends), then rerun"
        ) from None
    if f is None:
        logger.warning("%s: %s; nothing stops a second engine", jobs_dir, why)
    return f
