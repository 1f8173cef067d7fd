"""Content cache of terminal job results.

Each finished job's results are appended to ``<dir>/results.f64`` (its circuits' offsets, then
their probabilities, float64), and then a line naming the job key, byte offset and length is
appended to ``<dir>/index.jsonl``, with the data's CRC-32. A process crash mid-write leaves
unused bytes, never a wrong result (an index line is written after its data; a torn last index
line is skipped). A power loss can persist an index line without all of its data (nothing is
fsynced per job): an entry whose data is short or fails its checksum is a miss (logged), and
the engine fetches that job's results again from the provider (see
:meth:`qpeft.jobs.JobEngine.run`). A restarted engine that rebuilds the same job finds its
results without submitting anything.
Both files stay open (one append per job, no file created per job). A job's key hashes the
provider, backend, options, shots, its circuits' templates and angles (see
:mod:`qpeft.jobs.keys`) and, unless results are reused across steps, the scope of the call
(e.g. the training step).

The cache grows with every step (about 1 MB per parameter-shift step on SmolLM2-135M), and a
finished run needs none of its earlier steps: :func:`compact` (``qpeft jobs RUN_DIR
--compact-results N``) rewrites it with the jobs of the last steps only (an unfinished run's
rerun replays its steps from the cache from its newest checkpoint, or from step 0 if it has none: the command
line keeps every training step of an unfinished run). It writes a new copy
and swaps it in, so a crash at any point leaves either the old or the new cache, and it refuses
to run while an engine has the cache open (every cache holds a shared lock on
``<dir>.lock`` for its lifetime; compaction needs it exclusively). Where there are no advisory
locks (Windows, a file system without ``flock``) caches open without one and compaction is
refused, as it cannot tell whether a run is live.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import threading
import weakref
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from qpeft.jobs.runlock import open_locked

logger = logging.getLogger(__name__)


class CacheInUse(RuntimeError):
    """The cache is open in a running engine (a training run or evaluation), or there is no way
    to tell (no advisory locks)."""


class ResultCache:
    """The on-disk content cache of finished jobs' results (the module docstring gives the files
    and the crash rules).

    Opening it takes a shared lock on ``<directory>.lock`` for the cache's lifetime (so that
    ``qpeft jobs --compact-results`` refuses while it is open), finishes a compaction a crash
    interrupted, and reads the index. :meth:`get_job` returns a job's results by its key (None
    for a miss or damaged data), :meth:`put_job` appends them, :meth:`refresh` reads what other
    engines added. Thread-safe.

    Args:
        directory: the cache directory (``RUN_DIR/jobs/results``), created if missing; None keeps
            nothing (every lookup misses).
    """

    def __init__(self, directory: str | Path | None):
        self.directory = Path(directory) if directory is not None else None  # None: nothing kept
        self._lock = threading.Lock()
        self._data = self._index = None
        self._release = None  # closes the lock file and the append handles (at close(), or as garbage)
        if self.directory is not None:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            self._data_path, self._index_path = self.directory / "results.f64", self.directory / "index.jsonl"
            self._open()

    def _open(self) -> None:
        """Take the shared lock (held until close()), finish an interrupted compaction and read
        the index from its start (a compaction between a close() and a reopen moved every entry)."""
        lock_file = _lock(self.directory, exclusive=False)
        files = [lock_file] if lock_file is not None else []  # what close() closes
        try:
            _recover(self.directory)
            self.directory.mkdir(exist_ok=True)
            self._forget()
            self._read_index()  # what earlier engines finished
        except BaseException:
            _close_all(files)  # (not opened: a later put_job tries again)
            raise
        self._files = files
        self._release = weakref.finalize(self, _close_all, files)

    def _forget(self) -> None:
        self._where: dict[str, Entry] = {}  # job key -> where its results are
        self._index_read = 0  # bytes of the index read so far

    def _read_index(self) -> None:
        """Index lines appended since the last read (by this or another engine); a torn last
        line is left for later."""
        try:
            if os.stat(self._index_path).st_size == self._index_read:
                return  # nothing new
        except FileNotFoundError:
            return
        with open(self._index_path, "rb") as f:
            f.seek(self._index_read)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._index_read += len(complete)
        self._where.update(_parse_index(complete))

    def close(self) -> None:
        """Close the data and index files and release the lock (idempotent). The index is
        forgotten too (a compaction may move every entry once the lock is gone): later lookups
        miss until :meth:`refresh` reads it again from its start, and a later :meth:`put_job`
        takes the lock again and re-reads it."""
        with self._lock:
            self._data = self._index = None
            if self._release is not None:
                self._release()
            if self.directory is not None:
                self._forget()

    def refresh(self) -> None:
        """Learn the jobs other engines (e.g. an earlier process) finished since the last look;
        called once per engine call, so each lookup is a dict lookup."""
        if self.directory is not None:
            with self._lock:
                self._read_index()

    def get_job(self, job_key: str, count: int) -> list[np.ndarray] | None:
        """The results of a finished job of ``count`` circuits (in job order), or None; the
        index is as of the last :meth:`refresh` (and this cache's own writes)."""
        if self.directory is None:
            return None
        with self._lock:
            where = self._where.get(job_key)
        if where is None:
            return None
        try:
            flat = np.fromfile(self._data_path, dtype=np.float64, count=where.bytes // 8, offset=where.offset)
        except FileNotFoundError:
            flat = np.empty(0)
        damage = where.damage(flat)
        if damage:
            logger.warning("%s: the cached results of job %s %s; fetching them again", self.directory, job_key, damage)
            return None
        # (offsets, probabilities): the first count + 1 entries are the offsets
        offsets = (flat[: count + 1].astype(np.int64) + count + 1).tolist()
        return [flat[offsets[i] : offsets[i + 1]] for i in range(count)]

    def put_job(self, job_key: str, probs: list[np.ndarray] | np.ndarray) -> None:
        """Keep a finished job's results (float64 vectors, or a 2-D array of one row each)."""
        if self.directory is None:
            return
        if isinstance(probs, np.ndarray) and probs.ndim == 2:  # written as it is, no copy
            parts = [np.arange(len(probs) + 1, dtype=np.float64) * probs.shape[1]]
            parts.append(np.ascontiguousarray(probs, dtype=np.float64))
        else:
            offsets = np.zeros(len(probs) + 1)
            np.cumsum(np.fromiter(map(len, probs), dtype=np.float64, count=len(probs)), out=offsets[1:])
            parts = [np.concatenate([offsets, *probs], dtype=np.float64)]
        nbytes = sum(part.nbytes for part in parts)
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        with self._lock:
            if self._data is None:
                if not self._release.alive:  # closed: lock again before writing
                    self._open()
                # raw append handles: each write lands at the end, also with other writers
                self._data = open(self._data_path, "ab", buffering=0)  # noqa: SIM115 (kept open)
                self._index = open(self._index_path, "ab", buffering=0)  # noqa: SIM115 (kept open)
                self._files += [self._data, self._index]
                if self._index.tell() and not self._index_path.read_bytes().endswith(b"\n"):
                    self._index.write(b"\n")  # end a line torn by a crash, so the next one parses
            written = os.writev(self._data.fileno(), parts)  # one append
            if written != nbytes:
                raise OSError(f"short write to {self._data_path} ({written} of {nbytes} bytes); disk full?")
            offset = self._data.tell() - nbytes
            entry = Entry(offset, nbytes, crc)
            self._index.write(entry.line(job_key))
            self._where[job_key] = entry


class Entry(NamedTuple):
    """Where a job's results lie in ``results.f64``; ``crc`` is None in lines written before
    checksums were kept."""

    offset: int
    bytes: int
    crc: int | None = None

    def line(self, key: str) -> bytes:
        """The index line of this entry for job ``key``: JSON of key, offset, byte count and CRC,
        newline-terminated, as bytes (what ``index.jsonl`` holds)."""
        return (json.dumps({"key": key, "offset": self.offset, "bytes": self.bytes, "crc": self.crc}) + "\n").encode()

    def damage(self, data) -> str:
        """What is wrong with the data read for this entry ('' when nothing is)."""
        got = memoryview(data).nbytes  # (bytes read from the file, or the array np.fromfile made)
        if got != self.bytes:
            return f"are cut short ({got} of {self.bytes} bytes; a crash before they reached the disk)"
        if self.crc is not None and zlib.crc32(data) != self.crc:
            return "fail their checksum (damaged on disk)"
        return ""


def _parse_index(data: bytes) -> dict[str, Entry]:
    """job key -> :class:`Entry` of index lines (a later line for a key wins: the job's results
    written again); a line torn by a crash (followed by later appends, or the last one) is
    skipped: its data is not used."""
    where = {}
    for line in data.split(b"\n"):
        try:
            record = json.loads(line)
            crc = record.get("crc")
            entry = Entry(int(record["offset"]), int(record["bytes"]), None if crc is None else int(crc))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):  # (AttributeError: JSON no object)
            continue
        if entry.offset >= 0 and entry.bytes >= 0 and isinstance(record.get("key"), str):
            where[record["key"]] = entry
    return where


def _swap_paths(directory: Path) -> tuple[Path, Path]:
    """``<dir>.new`` (a compacted copy being written) and ``<dir>.old`` (the copy swapped out)."""
    return directory.with_name(directory.name + ".new"), directory.with_name(directory.name + ".old")


def _close_all(files: list) -> None:
    """Close ``files`` (append handles first, the lock file last) and forget them."""
    for f in reversed(files):
        f.close()
    files.clear()


def _lock(directory: Path, exclusive: bool):
    """An open lock file holding a shared (blocking) or exclusive (failing at once) lock; None
    (shared only) where the platform or file system has no advisory locks: an exclusive lock
    then raises :class:`CacheInUse`, as nothing tells whether a run has the cache open."""
    try:
        f, why = open_locked(directory.with_name(directory.name + ".lock"), exclusive)
    except BlockingIOError:
        raise CacheInUse(f"{directory} is open in a running training or evaluation (its lock is held)") from None
    if f is not None:
        return f
    if exclusive:
        raise CacheInUse(f"{directory}: {why}, so compaction cannot tell whether a run has it open; not compacted")
    logger.warning("%s: %s; `qpeft jobs --compact-results` will refuse to compact it", directory, why)
    return None


def exclusive_lock(directory: str | Path):
    """The cache's lock at ``directory``, held exclusively (close the returned file to let go):
    no run has the cache (nor its run directory's ledger) open meanwhile. Raises
    :class:`CacheInUse` while one has, or where there are no file locks."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    return _lock(directory, exclusive=True)


def _recover(directory: Path) -> None:
    """Finish or undo a compaction a crash interrupted (see :func:`compact` for the order).

    Another process opening the cache may be doing the same at the same time (both hold the
    shared lock): a rename that fails because the other one already put a copy in place, or a
    path the other one already removed, is done; any other error is raised, with both copies
    left as they are."""
    new, old = _swap_paths(directory)
    if not directory.exists():
        try:
            if (new / "complete").exists():
                new.rename(directory)  # the crash came between the two renames
            elif old.exists():
                old.rename(directory)  # (a copy never marked complete is never swapped in)
        except OSError:
            if not directory.exists():
                raise
    try:
        (directory / "complete").unlink()  # (a crash after the second rename leaves it)
    except FileNotFoundError:
        pass
    for leftover in (new, old):  # a copy never swapped in; one swapped out and not yet removed
        try:
            shutil.rmtree(leftover)
        except FileNotFoundError:
            pass


def _fsync_dir(path: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def compact(directory: str | Path, keep: Callable[[str], bool]) -> dict:
    """Rewrite the cache at ``directory`` with only the jobs whose key ``keep`` accepts.

    The kept jobs are copied to ``<dir>.new`` (fsynced, then marked complete), ``<dir>`` is
    renamed to ``<dir>.old``, ``<dir>.new`` to ``<dir>``, and ``<dir>.old`` removed; any cache
    opened later finishes or undoes a compaction that a crash interrupted. Raises
    :class:`CacheInUse` while an engine has the cache open. Returns the jobs and bytes kept and
    dropped, and the kept jobs whose data was damaged (cut short by a power loss, or failing its
    checksum): they are dropped too, and logged; the ledger still has them as done, so a run
    that needs them fetches them again from the provider."""
    directory = Path(directory)
    new, old = _swap_paths(directory)
    if not any(path.exists() for path in (directory / "index.jsonl", new / "complete", old)):
        raise FileNotFoundError(f"no result cache at {directory}")
    lock = _lock(directory, exclusive=True)
    try:
        _recover(directory)  # (before looking for the index: a crash between the renames leaves none)
        if not (directory / "index.jsonl").exists():
            raise FileNotFoundError(f"no result cache at {directory}")
        index = _parse_index((directory / "index.jsonl").read_bytes())
        kept = {key: where for key, where in index.items() if keep(key)}
        summary = {
            "jobs_kept": len(kept),
            "bytes_kept": sum(e.bytes for e in kept.values()),
            "jobs_dropped": len(index) - len(kept),
            "bytes_dropped": sum(e.bytes for key, e in index.items() if key not in kept),
        }
        damaged = _damaged(directory, kept)
        summary["jobs_damaged"] = len(damaged)
        if not damaged and len(kept) == len(index):
            return summary
        for key in damaged:
            summary["jobs_kept"] -= 1
            summary["bytes_kept"] -= kept.pop(key).bytes
        new.mkdir()
        try:
            _copy(directory, new, kept)
        except Exception:
            shutil.rmtree(new, ignore_errors=True)  # (the cache itself is untouched)
            raise
        directory.rename(old)
        new.rename(directory)
        (directory / "complete").unlink()
        _fsync_dir(directory.parent)
        shutil.rmtree(old)
        return summary
    finally:
        if lock is not None:
            lock.close()


def _damaged(directory: Path, entries: dict[str, Entry]) -> list[str]:
    """The keys of ``entries`` whose data is cut short or fails its checksum (each logged)."""
    damaged = []
    with _open_data(directory) as src:
        for key, entry in entries.items():
            src.seek(entry.offset)
            damage = entry.damage(src.read(entry.bytes))
            if damage:
                logger.warning("%s: dropping the cached results of job %s: they %s", directory, key, damage)
                damaged.append(key)
    return damaged


def _open_data(directory: Path):
    """``results.f64`` for reading; an empty one where it is missing (every entry then reads short)."""
    path = directory / "results.f64"
    return open(path, "rb") if path.exists() else io.BytesIO()  # noqa: SIM115 (the callers close it)


def _copy(directory: Path, new: Path, kept: dict[str, Entry]) -> None:
    """The kept jobs' results and index into ``new``, fsynced, then marked complete."""
    lines, offset = [], 0
    with _open_data(directory) as src, open(new / "results.f64", "wb") as dst:
        for key, entry in sorted(kept.items(), key=lambda item: item[1].offset):
            src.seek(entry.offset)
            data = src.read(entry.bytes)
            if entry.damage(data):  # (checked under the same exclusive lock: cannot happen)
                raise ValueError(f"{directory / 'results.f64'}: the results of job {key} changed during compaction")
            dst.write(data)
            lines.append(Entry(offset, entry.bytes, zlib.crc32(data)).line(key))
            offset += entry.bytes
        dst.flush()
        os.fsync(dst.fileno())
    with open(new / "index.jsonl", "wb") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    (new / "complete").touch()
    _fsync_dir(new)
