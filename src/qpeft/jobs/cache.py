"""Content cache of terminal job results.

Each finished job's results are written atomically to ``<dir>/<job key>.npz`` (the circuit
keys and their probabilities), so a restarted engine that rebuilds the same job finds its
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

    def get_job(self, job_key: str) -> dict[str, np.ndarray] | None:
        """The results of a finished job, by circuit key, or None."""
        if self.directory is None:
            return None
        path = self.directory / f"{job_key}.npz"
        if not path.is_file():
            return None
        with np.load(path) as data:
            keys, flat, offsets = data["keys"], data["probs"], data["offsets"]
        found = {str(k): flat[offsets[i] : offsets[i + 1]] for i, k in enumerate(keys)}
        if self.reuse:
            self.memory.update(found)
        return found

    def put_job(self, job_key: str, keys: list[str], probs: list[np.ndarray]) -> None:
        if self.reuse:
            self.memory.update(zip(keys, probs))
        if self.directory is None:
            return
        offsets = np.cumsum([0] + [len(p) for p in probs])
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, keys=np.array(keys), probs=np.concatenate(probs), offsets=offsets)
        os.replace(tmp, self.directory / f"{job_key}.npz")
