"""A run stays on the backend it started on, and on the shots of the jobs it left open.

``origin`` without a chip takes the first available one and ``ibm`` without a backend the least
busy; after a restart that choice could differ, and since the backend is part of every job key,
the open jobs of the first choice would be orphaned and their steps paid for again. So the
backend of a run's first submission, which its ledger records (every ``intent`` / ``submitted``
record names provider and backend), is the run's backend: a spec without a backend reuses it
(:func:`pinned_spec`); a provider or backend other than the recorded one is refused unless the
engine option ``switch_backend`` is on, and switching says what happens to the jobs left open on
the old one (:func:`check_backend`). Simulators are not pinned (they cost nothing and hold no jobs
across processes).

The jobs an earlier process left open are re-attached to by the step (the call's scope) that made
them, and only when the step asks for the same circuits with the same settings. A rerun with other
shots would leave them running (and billed) unused and pay for the step again, so it is refused
unless the engine option ``switch_shots`` is on; an open job its step did not use (the step's
angles or job split differ: a resume from an earlier checkpoint, a changed ``max_circuits``) is
named in a warning (:class:`OpenJobs`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
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


def _shots(shots: int | None) -> str:
    return "exact" if shots is None else f"shots={shots}"


def _named(records: list[dict]) -> str:
    """The jobs of ``records`` by id (by tag where a submission's outcome is unknown)."""
    return ", ".join(r.get("job_id") or f"tag {r.get('tag')}" for r in records)


class OpenJobs:
    """The jobs earlier processes left open on this run's backend (inherited by a new engine),
    followed until the step that made each one re-attaches to it.

    :meth:`check` runs before a call submits anything: an open job of the call's scope made with
    other shots is refused (ValueError, unless ``switch`` is on: then a warning), since the call
    cannot use it and would pay for its circuits again; once the run has left a scope (a call of
    another scope, or :meth:`finish` at close), an open job of that scope it never re-attached to
    is named in a warning: it may still run and be billed. Durable providers only (a local job
    ends with its process).
    """

    def __init__(self, ledger: Ledger, provider: Provider, switch: bool) -> None:
        mine = (provider.name, provider.backend or "")
        self._open = {
            key: r
            for key, r in ledger.live().items()
            if provider.durable and r.get("scope") and (r.get("provider"), r.get("backend") or "") == mine
        }
        self._switch = switch
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def check(self, scope: str, shots: int | None, keys: Iterable[str]) -> None:
        """Before a call of ``scope`` runs the jobs ``keys`` (those it re-attaches to among them)."""
        if not self._open or not scope:
            return
        with self._lock:
            for key in keys:
                self._open.pop(key, None)
            other = [r for r in self._open.values() if r["scope"] == scope and r.get("shots") != shots]
            if other:
                was = _shots(other[0].get("shots"))
                words = (
                    f"this run's ledger has {len(other)} job(s) open for {scope} made with {was} ({_named(other)}), "
                    f"but the step now runs with {_shots(shots)}: it cannot use them, they may still run and be "
                    "billed, and the step would be paid for again"
                )
                if not self._switch:
                    raise ValueError(
                        f"{words}. Run with {was} (--shots) to re-attach to them; to go on with {_shots(shots)} and "
                        "leave them (not cancelled: cancel them in the provider's console if you do not want them "
                        "billed), add '\"switch_shots\": true' to --quantum-options"
                    )
                logger.warning("%s; going on with %s (switch_shots), the jobs are left open", words, _shots(shots))
                for r in other:
                    self._open.pop(r["key"], None)
            self._report(self._seen - {scope})
            self._seen.add(scope)

    def finish(self) -> None:
        """At close: name the open jobs of every scope this engine ran that it did not use."""
        with self._lock:
            self._report(self._seen)

    def _report(self, scopes: set[str]) -> None:
        unused = [r for r in self._open.values() if r["scope"] in scopes]
        if not unused:
            return
        for r in unused:
            self._open.pop(r["key"], None)
        logger.warning(
            "%d job(s) an earlier process left open were not used by their step (%s: %s): the step's circuits or "
            "their split differ (the angles, e.g. after a resume from an earlier checkpoint, or max_circuits or a "
            "provider option changed). They are not cancelled and may still run and be billed: cancel them in the "
            "provider's console if you do not want them",
            len(unused),
            ", ".join(sorted({r["scope"] for r in unused})),
            _named(unused),
        )
