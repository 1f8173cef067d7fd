"""Content cache of terminal job results.

Each finished job's results are written atomically to ``<dir>/<job key>.npy`` (offsets, then
the probabilities of its circuits in job order), so a restarted engine that rebuilds the same job finds its
results without submitting anything. A circuit's key hashes the provider, backend, options,
circuit text, angles and shots (and, unless results are reused across steps, the scope of
the call, e.g. the training step). With ``reuse=True`` results are also kept in memory and
served to any later call that asks for the same circuit.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


class ResultCache:
    def __init__(self, directory: str | Path | None, reuse: bool = False):
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.reuse = reuse
        self.memory: dict[str, np.ndarray] = {}

    def get_job(self, job_key: str, keys: list[str]) -> dict[str, np.ndarray] | None:
        """The results of a finished job (its circuits' ``keys``, in job order), or None."""
        if self.directory is None:
            return None
        path = self.directory / f"{job_key}.npy"
        if not path.is_file():
            return None
        flat = np.load(path)
        # (offsets, probabilities): the first len(keys) + 1 entries are the offsets
        offsets = flat[: len(keys) + 1].astype(np.int64) + len(keys) + 1
        found = {k: flat[offsets[i] : offsets[i + 1]] for i, k in enumerate(keys)}
        if self.reuse:
            self.memory.update(found)
        return found

    def put_job(self, job_key: str, keys: list[str], probs: list[np.ndarray]) -> None:
        if self.reuse:
            self.memory.update(zip(keys, probs))
        if self.directory is None:
            return
        offsets = np.cumsum([0] + [len(p) for p in probs], dtype=np.float64)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.concatenate([offsets, *probs]))
        os.replace(tmp, self.directory / f"{job_key}.npy")
