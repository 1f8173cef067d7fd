"""A run stays on the backend it started on.

``origin`` without a chip takes the first available one and ``ibm`` without a backend the least
busy; after a restart that choice could differ, and since the backend is part of every job key,
the open jobs of the first choice would be orphaned and their steps paid for again. So the
backend of a run's first submission, which its ledger records (every ``intent`` / ``submitted``
record names provider and backend), is the run's backend: a spec without a backend reuses it
(:func:`pinned_spec`); a provider or backend other than the recorded one is refused unless the
engine option ``switch_backend`` is on, and switching says what happens to the jobs left open on
the old one (:func:`check_backend`). Simulators are not pinned (they cost nothing and hold no jobs
across processes).
"""

from __future__ import annotations

import logging
from pathlib import Path

from qpeft.jobs.base import Provider
from qpeft.jobs.ledger import Ledger, read_ledger
from qpeft.jobs.providers import parse_spec

logger = logging.getLogger(__name__)


def recorded_backend(records: list[dict]) -> tuple[str, str] | None:
    """(provider, backend) of the newest submission of a non-local provider in ``records``."""
    for r in reversed(records):
        if r["event"] in ("intent", "submitted", "unknown") and r.get("provider") not in (None, "local"):
            return r["provider"], r.get("backend") or ""
    return None


def _records(run_dir) -> list[dict]:
    path = Path(run_dir) / "jobs" / "ledger.jsonl" if run_dir is not None else None
    return read_ledger(path) if path is not None and path.is_file() else []


def pinned_spec(spec: str, run_dir) -> tuple[str, bool]:
    """(``spec`` with the run's recorded backend filled in when it names none and the run
    recorded one for the same provider, whether it was filled in)."""
    name, backend = parse_spec(spec)
    recorded = recorded_backend(_records(run_dir)) if name != "local" and backend is None else None
    if recorded is None or recorded[0] != name or not recorded[1]:
        return spec, False
    logger.info("%s: reusing the backend %s the run's ledger records", spec, recorded[1])
    return f"{name}:{recorded[1]}", True


def check_backend(ledger: Ledger, provider: Provider, switch: bool) -> None:
    """Refuse a provider / backend other than the one the run's ledger records (ValueError),
    unless ``switch``; a switch is logged with the jobs it leaves open. Simulators (the local
    provider, IBM's local testing mode: jobs that end with the process) are never refused."""
    if provider.name == "local" or not provider.durable:
        return
    recorded = recorded_backend(ledger.records)
    if recorded is None or recorded == (provider.name, provider.backend):
        return
    was = f"{recorded[0]}:{recorded[1]}"
    now = f"{provider.name}:{provider.backend}"
    left = [r for r in ledger.live().values() if (r.get("provider"), r.get("backend") or "") == recorded]
    ids = [r["job_id"] for r in left if r.get("job_id")]
    tags = [r["tag"] for r in left if not r.get("job_id")]
    fate = (
        f"the {len(ids)} job(s) still open on {was} ({', '.join(ids)}) are not used by the new backend, not "
        "cancelled (cancel them in the provider's console if you do not want them to run and be billed) and stay "
        "open in the ledger"
        if ids
        else f"no job is open on {was}"
    )
    if tags:
        fate += f"; {len(tags)} submission(s) of unknown outcome on {was} stay unresolved ({', '.join(tags)})"
    if not switch:
        raise ValueError(
            f"this run's jobs ran on {was} (recorded in its ledger), but this command asks for {now}. Ask for "
            f"{recorded[0]} or {was} to go on where the run stopped; to move the run to {now}, add "
            f"'\"switch_backend\": true' to --quantum-options: {fate}"
        )
    logger.warning("switching the run from %s to %s: %s", was, now, fate)
