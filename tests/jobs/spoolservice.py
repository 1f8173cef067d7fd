"""A job service in its own process for tests: ``python -m qpeft.jobs.spool DIR`` (see
qpeft.jobs.spool), and a client process (spool_client.py) that runs circuits through the job
engine against it and can be killed at a chosen point. The service's ``served.jsonl`` is the
bill: every job it ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import qpeft

SRC = str(Path(qpeft.__file__).resolve().parents[1])  # the processes run the code this test imports
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CLIENT = str(Path(__file__).with_name("spool_client.py"))


class SpoolService:
    """The service process serving ``spool``; ``delay``: seconds each job runs (one at a time)."""

    def __init__(self, spool: Path, delay: float = 0.0, start: bool = True):
        self.spool, self.delay = Path(spool), delay
        self.spool.mkdir(parents=True, exist_ok=True)
        self.process = None
        if start:
            self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "qpeft.jobs.spool", str(self.spool), "--delay", str(self.delay)]
        self.process = subprocess.Popen(cmd, env=ENV)

    def served(self) -> list[dict]:
        path = self.spool / "served.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def drain(self, timeout: float = 120.0) -> list[dict]:
        """The bill once every job the service holds (queued or running) has run."""
        deadline = time.monotonic() + timeout
        while list(self.spool.glob("*.job.json")) or self._running():
            assert time.monotonic() < deadline, "the service did not finish its jobs"
            time.sleep(0.05)
        return self.served()

    def _running(self) -> bool:
        """Whether a job runs: taken, and its result or its line in the bill not written yet (the
        service writes the result, then the bill's line)."""
        running = list(self.spool.glob("*.running.json"))
        billed = {s["job_id"] for s in self.served()} if running else set()
        return any(p.name.split(".")[0] not in billed for p in running)

    def stop(self) -> None:
        if self.process is not None:
            (self.spool / "stop").touch()
            self.process.wait(timeout=60)
            (self.spool / "stop").unlink()
            self.process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _client_cmd(run_dir, spool, n, max_circuits, die_at, options) -> list[str]:
    cmd = [sys.executable, CLIENT, str(run_dir), str(spool), str(n), str(max_circuits)]
    return cmd + ["--options", json.dumps(options or {})] + (["--die-at", die_at] if die_at else [])


def run_client(
    run_dir: Path,
    spool: Path,
    n: int = 6,
    max_circuits: int = 2,
    die_at: str | None = None,
    options: dict | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """spool_client.py in its own process, to its end: ``n`` one-qubit circuits in jobs of
    ``max_circuits``; ``die_at`` a crash point; ``options`` provider and engine options."""
    cmd = _client_cmd(run_dir, spool, n, max_circuits, die_at, options)
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def start_client(run_dir: Path, spool: Path, n: int = 6, max_circuits: int = 2, options: dict | None = None):
    """spool_client.py started in its own process (a Popen), e.g. to kill it from outside."""
    return subprocess.Popen(_client_cmd(run_dir, spool, n, max_circuits, None, options), env=ENV)
