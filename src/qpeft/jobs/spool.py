"""A local provider whose jobs outlive the process that submitted them, like a QPU service's.

``LocalProvider(..., spool=DIR)`` submits a job by writing ``DIR/<id>.job.json``; a separate
server process, ``python -m qpeft.jobs.spool DIR [--backend torch] [--delay S]``, takes the jobs
in submission order, one at a time: it renames a job to ``<id>.running.json`` (the job is
running), runs it for at least ``--delay`` seconds, writes ``DIR/<id>.result.npz`` (atomically)
and a line per job to ``DIR/served.jsonl`` (the service's bill: every job it ran). A killed
training run re-attaches to its jobs by id, as on hardware.

Like a QPU service, it cancels a queued job (the client renames it to ``<id>.cancelled.json``,
which races safely with the server's rename) but refuses to cancel one that is already running.
``answer_delay`` makes ``submit`` answer that many seconds after the service created the job (a
slow network), so a test can kill a client while its submit call is in flight. Jobs are found by
their tag (:meth:`SpoolProvider.find`). ``account`` names the account a client submits as: as on
a QPU service, a job is visible only to the account that made it (another account's client finds
it nowhere, which a ledger reads as a lost job).
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

from qpeft.jobs.base import BoundCircuit, JobLostError, State, Status, account_digest
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
    remote = True  # a submit may take long to answer (answer_delay): it runs under submit_timeout

    def __init__(
        self,
        backend: str = "torch",
        *,
        spool: str | os.PathLike,
        answer_delay: float = 0.0,
        account: str | None = None,
        **options,
    ):
        super().__init__(backend, **options)
        self.spool = Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.answer_delay = answer_delay
        self._account = account

    def account(self) -> str | None:
        return account_digest(self._account)

    def _visible(self, job_id: str) -> bool:
        """Whether this client's account may see the job (every job, without accounts)."""
        owner = self._path(job_id, "account")
        return self._account is None or not owner.is_file() or owner.read_text() == self._account

    def _path(self, job_id: str, kind: str) -> Path:
        return self.spool / f"{job_id}.{kind}"

    def submit(self, circuits, shots, tag: str) -> str:
        """Write the job to the spool (queued), then answer with its id after ``answer_delay``."""
        job_id = uuid.uuid4().hex
        body = json.dumps({"tag": tag, "shots": shots, **_encode(circuits)}).encode()
        if self._account is not None:
            self._path(job_id, "account").write_text(self._account)
        _write_atomic(self._path(job_id, "job.json"), lambda f: f.write(body))
        time.sleep(self.answer_delay)  # the job exists; its id reaches the caller only now
        return job_id

    def status(self, job_id: str) -> Status:
        """QUEUED, DONE, RUNNING or CANCELLED from the job's files; JobLostError when there are none.

        The queued file is looked at first: the service (another process) may rename it to
        running (or a cancel to cancelled) at any moment, and those files stay, so a job not
        found queued is found under its later name (looked at in the other order, a job taken
        between two looks was found nowhere, and the engine paid for it again)."""
        if not self._visible(job_id):
            raise JobLostError(f"spooled job {job_id} is unknown to this account")
        if self._path(job_id, "job.json").is_file():
            return Status(State.QUEUED)
        for kind, state in (("result.npz", State.DONE), ("running.json", State.RUNNING)):
            if self._path(job_id, kind).is_file():
                return Status(state)
        if self._path(job_id, "cancelled.json").is_file():
            return Status(State.CANCELLED, "cancelled while queued")
        raise JobLostError(f"spooled job {job_id} is unknown")

    def result(self, job_id: str, circuits, shots) -> list[np.ndarray]:
        """The probability vectors the server wrote for the job."""
        with np.load(self._path(job_id, "result.npz")) as data:
            flat, offsets = data["probs"], data["offsets"]
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]

    def cancel(self, job_id: str) -> bool:
        """True: cancelled while queued; False: refused, the job is running or done."""
        try:
            os.rename(self._path(job_id, "job.json"), self._path(job_id, "cancelled.json"))
            return True
        except FileNotFoundError:
            self.status(job_id)  # JobLostError for a job the service does not know
            return False

    def wait(self, job_id: str, seconds: float) -> None:
        time.sleep(seconds)

    def find(self, tag: str) -> str | None:
        """The id of the queued, running, finished or cancelled job submitted with ``tag``."""
        for kind in ("job.json", "running.json", "cancelled.json"):
            for path in self.spool.glob(f"*.{kind}"):
                try:
                    if json.loads(path.read_text())["tag"] == tag and self._visible(path.name.split(".")[0]):
                        return path.name.split(".")[0]
                except FileNotFoundError:  # renamed by the server meanwhile: seen under its new name
                    continue
        return None


def serve(spool: Path, backend: str = "torch", delay: float = 0.0, idle_s: float = 0.02) -> None:
    """Run the spooled jobs, oldest first, until ``spool/stop`` exists."""
    runner = LocalProvider(backend)
    while not (spool / "stop").exists():
        pending = []
        for p in spool.glob("*.job.json"):
            try:
                pending.append((p.stat().st_mtime, p.name, p))
            except FileNotFoundError:  # cancelled meanwhile
                continue
        if not pending:
            time.sleep(idle_s)
            continue
        path = min(pending)[2]
        job_id = path.name.split(".")[0]
        running = spool / f"{job_id}.running.json"
        try:
            os.rename(path, running)  # the job runs now: a cancel can no longer take it
        except FileNotFoundError:  # cancelled just now
            continue
        data = json.loads(running.read_text())
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
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="seconds each job runs at least (jobs run one at a time: the others queue)",
    )
    args = parser.parse_args()
    serve(args.spool, args.backend, args.delay)
