"""What a job ledger says, read from its records (:func:`qpeft.jobs.ledger.read_ledger`): its
totals (jobs, circuits, shots, retries, what the providers reported), the jobs that may still run,
and its newest steps; for ``qpeft jobs`` and the trackers. What is open and what a run went on
without is decided by :class:`~qpeft.jobs.ledger.Ledger`'s index, replayed over the records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from qpeft.jobs.ledger import TERMINAL, UNSETTLED, Ledger


def totals(records: list[dict]) -> dict:
    """Jobs, circuits, shots, wall and queue seconds, retries and failures of a ledger, the
    submissions still unresolved, and what the providers reported the jobs that ended used
    (``reported``: each figure summed over the ``reported_jobs`` jobs that gave it; a failed or
    cancelled job is billed too)."""
    submitted = [r for r in records if r.get("event") == "submitted"]
    done = [r for r in records if r.get("event") == "done"]
    ledger = Ledger.replay(records)
    live = ledger.open_submissions()
    reported: dict[str, float] = {}
    reporting = 0
    for r in records:
        if r.get("event") in TERMINAL and r.get("usage"):
            reporting += 1
            for name, value in r["usage"].items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    reported[name] = reported.get(name, 0) + value
    return {
        "jobs": len(submitted),
        "jobs_done": len(done),
        "circuits": sum(r["circuits"] for r in submitted),
        "shots": sum(r["circuits"] * (r["shots"] or 0) for r in submitted),
        "wall_seconds": sum(r.get("wall_s", 0.0) for r in records if r.get("event") in TERMINAL),
        "queue_seconds": sum(r.get("queue_s", 0.0) for r in records if r.get("event") in TERMINAL),
        # jobs created again for a job key after an earlier job of it failed, was lost or timed
        # out; a submit the provider rejected created nothing and is no retry
        "retries": _retries(records),
        "failures": sum(r.get("event") in ("failed", "lost", "timeout") for r in records),
        "unknown_submissions": sum(r.get("event") == "unknown" for r in records),
        # open jobs a run went on without (other shots, or not used by their step): they may still run and be billed
        "left_open": sum(ledger.left_behind(r) for r in live),
        # submissions that may have created a job whose id is not known: `qpeft jobs RUN --resolve TAG`
        "unresolved": sorted(r["tag"] for r in live if r.get("event") in UNSETTLED),
        # finished jobs whose results the cache had lost, fetched from the provider again (not paid again)
        "refetched": sum(r.get("event") == "refetched" for r in records),
        # finished jobs whose results were gone from the cache and the provider: submitted again
        "resubmitted_after_loss": sum(r.get("event") == "gone" for r in records),
        "providers": sorted({f"{r['provider']}:{r['backend']}" for r in submitted}),
        "reported": reported,
        "reported_jobs": reporting,
    }


def open_jobs(records: list[dict]) -> list[dict]:
    """The jobs of a ledger that may still run (and be billed): submitted with no end recorded, or
    submitted with an unknown outcome (``job_id`` None: settle it by its tag). Each with its
    provider and backend, id or tag, scope, shots, circuits, when it was submitted (``time``, a
    Unix time) and whether a run went on without it (``left``), oldest first."""
    ledger = Ledger.replay(records)
    return [
        {
            "job_id": r.get("job_id"),
            "tag": r.get("tag"),
            "provider": f"{r.get('provider')}:{r.get('backend') or ''}",
            "scope": r.get("scope", ""),
            "shots": r.get("shots"),
            "circuits": r.get("circuits"),
            "time": r.get("time"),
            "left": ledger.left_behind(r),
        }
        for r in ledger.open_submissions()
    ]


def open_submissions(records: list[dict]) -> list[dict]:
    """The newest ``intent`` / ``submitted`` / ``unknown`` record of each open submission (the
    jobs :func:`open_jobs` lists), oldest first."""
    return Ledger.replay(records).open_submissions()


def _retries(records: list[dict]) -> int:
    """Submissions that follow a failed, lost or timed-out job of the same key."""
    failed, retries = set(), 0
    for r in records:
        if r.get("event") in ("failed", "lost", "timeout"):
            failed.add(r.get("key"))
        elif r.get("event") == "submitted":
            retries += r.get("key") in failed
            failed.discard(r.get("key"))
    return retries


def recent_steps(
    records: list[dict], last: int, also: Callable[[str], bool] | None = None
) -> tuple[list[str], Callable[[str], bool]]:
    """The ``last`` steps of a ledger (a step is a scope without its ``/module`` suffix, e.g.
    ``train-12``; ordered by their newest record), then the older steps ``also`` accepts, and a
    predicate that accepts the job keys submitted in them, and every key the ledger does not
    know (kept to be safe). Records without a scope (written by hand, e.g. by ``--resolve``
    before it kept the scope) belong to no step: they neither move a step nor drop a key."""
    if not isinstance(last, int) or isinstance(last, bool) or last < 0:
        raise ValueError(f"the number of steps to keep must be a whole number >= 0, got {last!r}")
    newest: dict[str, int] = {}
    step_of: dict[str, set[str]] = defaultdict(set)
    for n, r in enumerate(records):
        if r.get("key") is not None and "scope" in r and r.get("event") not in ("left", "reattached"):
            step = (r["scope"] or "").split("/", 1)[0]
            newest[step] = n
            step_of[r["key"]].add(step)
    order = sorted(newest, key=newest.get)
    steps = order[max(len(order) - last, 0) :] if last else []
    steps += [step for step in order if also is not None and step not in steps and also(step)]
    keep = set(steps)
    return steps, lambda key: key not in step_of or bool(step_of[key] & keep)
