"""Content cache of terminal job results.

Each finished job's results are appended to ``<dir>/results.f64`` (its circuits' offsets, then
their probabilities, float64), and then a line naming the job key, byte offset and length is
appended to ``<dir>/index.jsonl``: an index line exists only for complete data, so a crash
mid-write leaves unused bytes, never a wrong result (a torn last index line is skipped). A
restarted engine that rebuilds the same job finds its results without submitting anything.
Both files stay open (one append per job, no file created per job). A job's key hashes the
provider, backend, options, shots, its circuits' templates and angles (see
:mod:`qpeft.jobs.keys`) and, unless results are reused across steps, the scope of the call
(e.g. the training step).
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from pathlib import Path

import numpy as np


class ResultCache:
    def __init__(self, directory: str | Path | None):
        self.directory = Path(directory) if directory is not None else None  # None: nothing kept
        self._lock = threading.Lock()
        self._where: dict[str, tuple[int, int]] = {}  # job key -> (byte offset, bytes)
        self._index_read = 0  # bytes of the index read so far
        self._data = self._index = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._data_path, self._index_path = self.directory / "results.f64", self.directory / "index.jsonl"
            self._read_index()  # what earlier engines finished

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
        for line in complete.splitlines():
            try:
                record = json.loads(line)
                self._where[record["key"]] = (int(record["offset"]), int(record["bytes"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash, followed by later appends: its data is not used

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
        offset, nbytes = where
        flat = np.fromfile(self._data_path, dtype=np.float64, count=nbytes // 8, offset=offset)
        if flat.nbytes != nbytes:
            raise ValueError(f"{self._data_path} is shorter than its index says; delete {self.directory} to rerun")
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
        with self._lock:
            if self._data is None:
                # raw append handles: each write lands at the end, also with other writers
                self._data = open(self._data_path, "ab", buffering=0)  # noqa: SIM115 (kept open)
                self._index = open(self._index_path, "ab", buffering=0)  # noqa: SIM115 (kept open)
                weakref.finalize(self, self._data.close)
                weakref.finalize(self, self._index.close)
                if self._index.tell() and not self._index_path.read_bytes().endswith(b"\n"):
                    self._index.write(b"\n")  # end a line torn by a crash, so the next one parses
            written = os.writev(self._data.fileno(), parts)  # one append
            if written != nbytes:
                raise OSError(f"short write to {self._data_path} ({written} of {nbytes} bytes); disk full?")
            offset = self._data.tell() - nbytes
            line = json.dumps({"key": job_key, "offset": offset, "bytes": nbytes}) + "\n"
            self._index.write(line.encode())
            self._where[job_key] = (offset, nbytes)
