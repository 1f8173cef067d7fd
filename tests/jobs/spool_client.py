"""A client process of the spool service (run by tests through spoolservice.run_client): runs
``N`` one-qubit circuits RY(theta_i) through the job engine in jobs of ``MAX`` circuits, writes
the results to RUN_DIR/out.npy and exits 0; a job error exits 3 with its message on stderr.

``--die-at POINT`` kills this process with SIGKILL (as kill -9 would) the first time the engine
reaches POINT, one of CRASH_POINTS: before the intent record, inside the submit call before or
after the service created the job, right after the ``submitted`` record, inside a status poll,
after the job finished but before its results reach the cache, and after the cache write but
before the ``done`` record."""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

from qpeft.jobs import BoundCircuit, JobEngine
from qpeft.jobs.providers import get_provider
from qpeft.quantum.circuit import Circuit, Weight

CRASH_POINTS = (
    "before-intent",
    "in-submit-before-created",
    "in-submit-after-created",
    "after-submitted",
    "in-poll",
    "done-before-cache",
    "cache-before-done",
)
ENGINE = {
    "poll_interval",
    "max_poll_interval",
    "job_timeout",
    "queue_timeout",
    "cancel_wait",
    "submit_timeout",
    "deadline",
    "max_attempts",
    "max_parallel",
    "max_spend",
    "switch_backend",
    "switch_shots",
}


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def arm(engine, point: str) -> None:
    """Make the engine kill this process when it first reaches ``point``."""
    provider, ledger, cache = engine.provider, engine.ledger, engine.cache
    append, submit, status, put = ledger.append, provider.submit, provider.status, cache.put_job

    def append_hook(event, **fields):
        if (point, event) in (("before-intent", "intent"), ("cache-before-done", "done")):
            die()
        record = append(event, **fields)
        if (point, event) == ("after-submitted", "submitted"):
            die()
        return record

    def submit_hook(circuits, shots, tag):
        if point == "in-submit-before-created":
            die()
        job_id = submit(circuits, shots, tag)
        if point == "in-submit-after-created":
            die()  # the service created the job; its id never reached the engine
        return job_id

    def status_hook(job_id):
        if point == "in-poll":
            die()
        return status(job_id)

    def put_hook(key, probs):
        if point == "done-before-cache":
            die()
        return put(key, probs)

    ledger.append, provider.submit, provider.status, cache.put_job = append_hook, submit_hook, status_hook, put_hook


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("spool")
    parser.add_argument("n", type=int)
    parser.add_argument("max_circuits", type=int)
    parser.add_argument("--options", default="{}")
    parser.add_argument("--die-at", choices=CRASH_POINTS)
    args = parser.parse_args()
    options = {"poll_interval": 0.01, "max_poll_interval": 0.05, "max_parallel": 1, **json.loads(args.options)}
    engine_options = {k: v for k, v in options.items() if k in ENGINE}
    provider_options = {k: v for k, v in options.items() if k not in ENGINE}
    provider = get_provider("local:torch", spool=args.spool, max_circuits=args.max_circuits, **provider_options)
    engine = JobEngine(provider, args.run_dir, progress=False, **engine_options)
    if args.die_at:
        arm(engine, args.die_at)
    circuit = Circuit(1).add("RY", [0], Weight(0))
    thetas = np.linspace(0.1, 3.0, args.n)
    try:
        out = engine.run([BoundCircuit(circuit, (float(t),)) for t in thetas], None, scope="s")
    except Exception as err:  # a job error: its message for the test
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 3
    np.save(args.run_dir / "out.npy", np.stack(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
