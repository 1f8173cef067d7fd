"""A local provider whose jobs outlive the process that submitted them, like a QPU service's.

``LocalProvider(..., spool=DIR)`` submits a job by writing ``DIR/<id>.job.json``; a separate
server process, ``python -m qpeft.jobs.spool DIR [--backend torch] [--delay S]``, runs the
jobs it finds and writes ``DIR/<id>.result.npz`` (atomically) and a line per job to
``DIR/served.jsonl``. A killed training run re-attaches to its jobs by id, as on hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qpeft.jobs.base import BoundCircuit, JobLostError, State, Status
from qpeft.jobs.local import LocalProvider
from qpeft.quantum.circuit import Circuit, Const, Input, Op, Weight

_KINDS = {"c": Const, "i": Input, "w": Weight}


def _encode(circuits: Sequence[BoundCircuit]) -> dict:
    templates: dict[int, int] = {}
    encoded, rows = [], []
    for c in circuits:
        if id(c.circuit) not in templates:
            templates[id(c.circuit)] = len(encoded)
            ops = [
                [
                    op.gate,
                    list(op.wires),
                    [
                        ["c", p.value] if isinstance(p, Const) else ["i" if isinstance(p, Input) else "w", p.index]
                        for p in op.params
                    ],
                ]
                for op in c.circuit.ops
            ]
            encoded.append({"n_qubits": c.circuit.n_qubits, "n_weights": c.circuit.n_weights, "ops": ops})
        rows.append([templates[id(c.circuit)], list(c.weights), list(c.inputs)])
    return {"templates": encoded, "circuits": rows}


def _decode(data: dict) -> list[BoundCircuit]:
    templates = []
    for t in data["templates"]:
        ops = [Op(g, tuple(w), tuple(_KINDS[k](v) for k, v in params)) for g, w, params in t["ops"]]
        templates.append(Circuit(t["n_qubits"], ops, n_weights=t["n_weights"]))
    return [BoundCircuit(templates[i], tuple(w), tuple(x)) for i, w, x in data["circuits"]]


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        write(f)
    os.replace(tmp, path)


class SpoolProvider(LocalProvider):
    """The local provider with its jobs in a spool directory (see module docstring)."""

    durable = True

    def __init__(self, backend: str = "torch", *, spool: str | os.PathLike, **options):
        super().__init__(backend, **options)
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)

    def submit(self, circuits, shots, tag: str) -> str:
        job_id = uuid.uuid4().hex
        body = json.dumps({"tag": tag, "shots": shots, **_encode(circuits)}).encode()
        _write_atomic(self.spool / f"{job_id}.job.json", lambda f: f.write(body))
        return job_id

    def status(self, job_id: str) -> Status:
        if (self.spool / f"{job_id}.result.npz").is_file():
            return Status(State.DONE)
        if (self.spool / f"{job_id}.job.json").is_file():
            return Status(State.QUEUED)
        raise JobLostError(f"spooled job {job_id} is unknown")

    def result(self, job_id: str, circuits, shots) -> list[np.ndarray]:
        with np.load(self.spool / f"{job_id}.result.npz") as data:
            flat, offsets = data["probs"], data["offsets"]
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]

    def cancel(self, job_id: str) -> None:
        (self.spool / f"{job_id}.job.json").unlink(missing_ok=True)

    def wait(self, job_id: str, seconds: float) -> None:
        time.sleep(seconds)

    def find(self, tag: str) -> str | None:
        for path in self.spool.glob("*.job.json"):
            if json.loads(path.read_text())["tag"] == tag:
                return path.name.split(".")[0]
        return None


def serve(spool: Path, backend: str = "torch", delay: float = 0.0, idle_s: float = 0.02) -> None:
    """Run the spooled jobs until ``spool/stop`` exists."""
    runner = LocalProvider(backend)
    while not (spool / "stop").exists():
        pending = sorted(
            (p for p in spool.glob("*.job.json") if not (spool / p.name.replace(".job.json", ".result.npz")).exists()),
            key=lambda p: p.stat().st_mtime,
        )
        if not pending:
            time.sleep(idle_s)
            continue
        path = pending[0]
        job_id = path.name.split(".")[0]
        data = json.loads(path.read_text())
        time.sleep(delay)
        probs = runner._execute(_decode(data), data["shots"])
        arrays = {"probs": np.concatenate(probs), "offsets": np.cumsum([0] + [len(p) for p in probs])}
        _write_atomic(spool / f"{job_id}.result.npz", lambda f, arrays=arrays: np.savez(f, **arrays))
        with open(spool / "served.jsonl", "a") as f:
            f.write(json.dumps({"job_id": job_id, "tag": data["tag"], "circuits": len(data["circuits"])}) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="serve a qpeft local job spool (a stand-in QPU service)")
    parser.add_argument("spool", type=Path)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each job waits first (a slow queue)")
    args = parser.parse_args()
    serve(args.spool, args.backend, args.delay)
