"""``qpeft jobs RUN_DIR --check`` and ``--cancel``: the jobs a run's ledger has open, asked about
by id and settled without a rerun; and what a user settles by hand, ``--resolve`` (a submission of
unknown outcome) and ``--lost`` (a job the provider's console no longer lists, where its answers
cannot say so: :func:`record_lost`).

A job stays open in the ledger until a run's engine sees it end. One the run went on without
(other shots, another account, a step it did not use) is re-attached to only by a run that asks for
its circuits again, so it stays listed by ``--open`` after it ended or was cancelled in the
provider's console; and a user who abandons a run has no other way to stop its jobs than the
console. :func:`check_open` asks the provider for each open job's state (transient errors retried
with backoff) and records the ones that ended, as the engine would have (``done``, ``failed``,
``cancelled``, with what the provider reports they used, or ``lost`` where the provider no longer
knows the job); with ``cancel`` it first cancels the named jobs and waits for the provider to
confirm (``cancel_wait``). Nothing is submitted. A ``done`` job's results are not fetched: a run
that needs them fetches them by the job's id, as after ``--compact-results``.

Left alone, and said so: a job of another provider or backend than the one asked (check it with
that backend), a job another account made (its credentials see it), and a submission of unknown
outcome (no id: a rerun looks it up by its tag, or ``--resolve`` settles it). Each holds the run
directory like an engine: refused while a run has it open (that run would not see the records).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from qpeft.jobs.base import JobLostError, Provider, State
from qpeft.jobs.calls import ProviderCalls, late_submit
from qpeft.jobs.ledger import (
    ANOTHER_ACCOUNT,
    BY_HAND,
    FIELDS,
    HAND_WORDS,
    Ledger,
    accounts,
    left_behind,
    made_by_another,
    submission,
)
from qpeft.jobs.options import Deadline, EngineOptions
from qpeft.jobs.runlock import hold_run

logger = logging.getLogger("qpeft.jobs.engine")

#: ``cancel`` words that name a set of jobs rather than one id
CANCEL_ALL, CANCEL_LEFT = "all", "left"
_EVENT = {State.DONE: "done", State.FAILED: "failed", State.CANCELLED: "cancelled", "lost": "lost"}


class _Holder:
    """The run directory's holder while the jobs are checked (an engine's place in :mod:`runlock`)."""

    _running = 0


def check_open(provider: Provider, run_dir: str | Path, cancel: str | Iterable[str] = (), **options) -> list[dict]:
    """Ask ``provider`` about every job the ledger of ``run_dir`` has open on its backend, cancel
    those ``cancel`` names, and record the ones that ended (see module docstring).

    Args:
        provider: the provider (and backend) the jobs ran on, as this account.
        run_dir: the run directory (its ``jobs/ledger.jsonl``).
        cancel: a job id or a list of them to cancel; ``"left"`` names every job a run went on
            without, ``"all"`` every open job (a rerun then pays for the steps of the ones it needs
            again).
        **options: :class:`~qpeft.jobs.options.EngineOptions` fields (``cancel_wait``,
            ``max_attempts``, ``poll_interval``, ...).

    Returns:
        One dict per open submission of the ledger, oldest first: ``job_id``, ``tag``,
        ``provider`` (``name:backend``), ``scope``, ``left`` (a run went on without it),
        ``state`` (what the provider says: ``queued``, ``running``, ``done``, ``failed``,
        ``cancelled``, ``lost``; None where it was not asked or could not answer),
        ``recorded`` (the event written to the ledger, or None: still open), ``usage`` and
        ``words`` (why, or the provider's message).

    Raises:
        FileNotFoundError: the run directory has no ledger.
        ValueError: ``cancel`` names a job that is not open on this provider's backend, or the
            provider keeps no jobs across processes (a simulator: it would take every job for lost).
        RunInUseError: a run has the run directory open.
    """
    if not provider.durable:
        raise ValueError(
            f"{provider.name}:{provider.backend or ''} keeps no jobs across processes (a simulator's jobs end with the "
            "process that ran them), so it cannot say what became of a run's open jobs; check them with the provider "
            "that ran them (for a spool service, its 'spool' in --quantum-options)"
        )
    engine_options = EngineOptions(**options)
    cancel = [cancel] if isinstance(cancel, str) else list(cancel)
    with _held(run_dir) as ledger:
        here = f"{provider.name}:{provider.backend or ''}"
        subs = ledger.open_submissions()
        chosen = _chosen(subs, cancel, here, ledger)
        mine = provider.account()
        calls = ProviderCalls(provider, engine_options)
        deadline = Deadline.earliest(engine_options, time.time())
        return [_settle(calls, ledger, r, here, mine, submission(r) in chosen, deadline) for r in subs]


@contextlib.contextmanager
def _held(run_dir: str | Path):
    """The run directory's ledger, held as a run holds the directory (RunInUseError while one does)."""
    jobs_dir = Path(run_dir) / "jobs"
    path = jobs_dir / "ledger.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no job ledger at {path}; pass a run directory trained with --quantum-backend")
    hold = hold_run(jobs_dir, _Holder())
    ledger = None
    try:
        ledger = Ledger(path)
        yield ledger
    finally:
        if ledger is not None:
            ledger.close()
        hold.release()


def resolve(run_dir: str | Path, tag: str, job_id: str | None) -> dict:
    """``qpeft jobs RUN_DIR --resolve TAG [--job-id ID]``: :meth:`Ledger.resolve`, held as a run
    holds the run directory (a live run would not see the record).

    Raises:
        FileNotFoundError: the run directory has no ledger.
        ValueError: ``tag`` is not an unsettled submission, or this process made it and its call
            is still in flight or answered with another job id (a rerun here uses its answer).
        RunInUseError: a run has the run directory open.
    """
    late = late_submit(tag)
    if late is not None and not late.future.done():
        raise ValueError(
            f"--resolve {tag}: this process made that submission and its call is still in flight (it may yet create "
            "the job); rerun in this process, which waits for the call's answer, instead of resolving it by hand"
        )
    if late is not None and late.future.exception() is None and late.future.result() != job_id:
        created = late.future.result()
        raise ValueError(
            f"--resolve {tag}: this process made that submission and its call answered that it created job {created}; "
            f"rerun (it re-attaches to the job), or use --job-id {created}"
        )
    with _held(run_dir) as ledger:
        resolved = ledger.resolve(tag, job_id)
    if late is not None:
        late.settle()
    return resolved


def record_lost(run_dir: str | Path, job_ids: Iterable[str]) -> list[dict]:
    """Record jobs that the provider's console shows are gone (``qpeft jobs RUN_DIR --lost ID``):
    for a provider whose answers cannot say that a job is gone (Origin's HTTP 404), the user
    decides. An open job gets a ``lost`` record (the next run submits its key again, and pays for
    it again); a finished job a ``gone`` record (a run that lacks its results submits it again
    instead of asking the provider for them). Held as a run holds the run directory.

    Returns:
        One dict per id: ``job_id`` and ``recorded`` (``lost`` or ``gone``).

    Raises:
        FileNotFoundError: the run directory has no ledger.
        ValueError: an id is neither an open nor a finished job of the ledger.
        RunInUseError: a run has the run directory open.
    """
    with _held(run_dir) as ledger:
        open_now = {r["job_id"]: r for r in ledger.open_submissions() if r.get("job_id")}
        finished = {r["job_id"]: r for r in ledger.records if r.get("event") == "done" and r.get("job_id")}
        ids = list(dict.fromkeys(job_ids))
        unknown = [i for i in ids if i not in open_now and i not in finished]
        if unknown:
            raise ValueError(
                f"--lost {' '.join(unknown)}: not an open or finished job of this run's ledger (open: "
                f"{', '.join(open_now) or 'none'}); `qpeft jobs RUN_DIR --open` lists the open ones"
            )
        theirs = left_behind(ledger.records, ANOTHER_ACCOUNT)
        foreign = [i for i in ids if i in open_now and submission(open_now[i]) in theirs]
        if foreign:
            raise ValueError(
                f"--lost {' '.join(foreign)}: made by another account, which a run went on without; it may still run "
                "and be billed to that account, which alone can see it: check or cancel it with that account's "
                "credentials or console (`qpeft jobs RUN_DIR --check` / `--cancel ID` with them); not recorded"
            )
        reports = []
        for job_id in ids:
            r = open_now.get(job_id) or finished[job_id]
            event = "lost" if job_id in open_now else "gone"
            fields = _fields(r)
            message = f"{HAND_WORDS}: the provider's console no longer lists it"
            ledger.append(event, job_id=job_id, message=message, by=BY_HAND, **fields)
            reports.append({"job_id": job_id, "recorded": event})
        return reports


def _fields(r: dict) -> dict:
    """The fields of submission record ``r`` a record of its end repeats (its job id is passed apart)."""
    return {k: r[k] for k in FIELDS if k in r and k != "job_id"}


def _where(r: dict) -> str:
    return f"{r.get('provider')}:{r.get('backend') or ''}"


def _chosen(subs: list[dict], cancel: list[str], here: str, ledger: Ledger) -> set[tuple]:
    """The submissions ``cancel`` names (ValueError for an id that is not open here)."""
    ours = [r for r in subs if _where(r) == here and r.get("job_id")]
    ids = {r["job_id"] for r in ours}
    unknown = [c for c in cancel if c not in (CANCEL_ALL, CANCEL_LEFT) and c not in ids]
    if unknown:
        listed = ", ".join(sorted(ids)) or "none"
        raise ValueError(
            f"--cancel {' '.join(unknown)}: not a job this run's ledger has open on {here} (open there: {listed}); "
            f"`qpeft jobs RUN_DIR --open` lists them; '{CANCEL_LEFT}' names the jobs a run went on without, "
            f"'{CANCEL_ALL}' every open job"
        )
    return {
        submission(r)
        for r in ours
        if CANCEL_ALL in cancel or r["job_id"] in cancel or (CANCEL_LEFT in cancel and ledger.left_behind(r))
    }


def _settle(calls: ProviderCalls, ledger: Ledger, r: dict, here: str, mine, cancel: bool, deadline) -> dict:
    left = ledger.left_behind(r)
    report = {
        "job_id": r.get("job_id"),
        "tag": r.get("tag"),
        "provider": _where(r),
        "scope": r.get("scope", ""),
        "left": left,
        "state": None,
        "recorded": None,
        "usage": None,
        "words": "",
    }
    if _where(r) != here:
        report["words"] = f"on {_where(r)}, not {here}: check it with --quantum-backend {_where(r)}"
        return report
    if not r.get("job_id"):
        report["words"] = (
            f"outcome unknown (no job id): a rerun looks it up by its tag, or `qpeft jobs RUN_DIR --resolve "
            f"{r.get('tag')}` settles it"
        )
        return report
    if made_by_another(r, mine):
        report["words"] = (
            f"made by another account (digest {r['account']}; this one is {mine}), which alone may see it: check "
            "it with that account's credentials"
        )
        return report
    job_id, provider = r["job_id"], calls.provider
    if cancel:
        state, words = calls.cancel(job_id, deadline)
        if state is None:
            report["words"] = f"cancel requested, not confirmed: {words}; it may still run and be billed"
            return report
    else:
        try:
            status = calls.retried(lambda: provider.status(job_id), deadline)
            state, words = status.state, provider.redact(status.message or "")
        except JobLostError as err:
            state, words = "lost", provider.redact(str(err))
        except Exception as err:  # (transient errors still failing after the retries, or any other)
            report["words"] = f"its state could not be read ({provider.describe(err)})"
            return report
    report["state"] = getattr(state, "value", state)
    report["words"] = words
    event = _EVENT.get(state)
    if event is None:  # queued or running: open still
        return report
    if event == "lost" and mine is None and accounts(r):
        report["words"] = (
            f"{words}; but this provider does not know its account, and the job was made by account {r['account']}, "
            "which alone may see it: not recorded (check it with that account's credentials)"
        )
        return report
    usage = calls.usage(job_id) if event != "lost" else None  # (billed also when it failed, was cancelled)
    # (no scope: the record is no step's event, and must not make an old step the newest for --compact-results)
    fields = _fields(r)
    extra = {"usage": usage} if usage else {}
    ledger.append(event, job_id=job_id, message=words, by="qpeft jobs", **fields, **extra)
    report["recorded"], report["usage"] = event, usage
    logger.info("job %s: %s (%s), recorded in the ledger", job_id, event, words or "no message")
    return report
