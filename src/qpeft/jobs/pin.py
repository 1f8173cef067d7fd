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
shots would leave them running (and billed) unused and pay for their step again, so it is refused
before it pays for anything unless the engine option ``switch_shots`` is on; an open job its step
did not use (the step's angles or job split differ: a resume from an earlier checkpoint, a changed
``max_circuits``) is named in a warning (:class:`OpenJobs`).

A job is visible only to the account that made it: a rerun as another account (other credentials
in the environment, another saved account) would find the run's open jobs nowhere, take them as
lost and pay for them again while they may still run, billed to the first account. Each
submission records the account's digest (:meth:`~qpeft.jobs.base.Provider.account`), and a rerun
as another account is refused while the run has jobs open unless ``switch_account`` is on
(:func:`check_account`); then the step of such a job asks the provider whether this account sees it
(the same account under other credentials: a rotated key, a token instead of the saved account)
and re-attaches to it if so; if not, the job is left and the step submitted anew (:func:`sees`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from pathlib import Path

from qpeft.jobs.base import Provider
from qpeft.jobs.ledger import ANOTHER_ACCOUNT, Ledger, left_behind, made_by_another, read_ledger, submission
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
    left = [r for r in ledger.open_submissions() if (r.get("provider"), r.get("backend") or "") == recorded]
    ids = [r["job_id"] for r in left if r.get("job_id")]
    tags = [r["tag"] for r in left if not r.get("job_id")]
    fate = (
        f"the {len(ids)} job(s) still open on {was} ({', '.join(ids)}) are not used by the new backend, not "
        f"cancelled (if you do not want them to run and be billed, cancel them with `qpeft jobs RUN_DIR --cancel all "
        f"--quantum-backend {was}` or in the provider's console) and stay open in the ledger"
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


def check_account(ledger: Ledger, provider: Provider, switch: bool) -> str | None:
    """The account ``provider`` submits as (:meth:`~qpeft.jobs.base.Provider.account`; None for
    one that does not know it, or whose jobs end with the process). Refuses (ValueError) another
    account than the one that made the run's open jobs on this backend (their records'
    ``account``), unless ``switch``: then the jobs are named in a warning and a ``left`` record
    each, and their steps ask the provider whether this account sees them (:func:`sees`).
    Records without an account are not checked."""
    mine = provider.account() if provider.durable else None
    if mine is None:
        return None
    switched = left_behind(ledger.records, why=ANOTHER_ACCOUNT)  # (went on without them once: not refused again)
    here = (provider.name, provider.backend or "")
    other = [
        r
        for r in ledger.open_submissions()  # (a key's older open jobs too)
        if (r.get("provider"), r.get("backend") or "") == here
        and made_by_another(r, mine)
        and submission(r) not in switched
    ]
    if not other:
        return mine
    accounts = ", ".join(dict.fromkeys(str(r.get("account")) for r in other))
    words = (
        f"this run's ledger has {len(other)} job(s) open on {here[0]}:{here[1]} that another account made "
        f"(account digest {accounts}: {_named(other)}), and this command submits as account {mine}, which may not "
        "see them: they would be taken as lost and their steps paid for again, while they may still run and be "
        "billed to the other account"
    )
    if not switch:
        raise ValueError(
            f"{words}. Rerun with that account's credentials (the API key or token in the environment, or the SDK's "
            "saved account) to re-attach to them. To go on as this account, set the engine option switch_account "
            "(on the command line: --quantum-options '{\"switch_account\": true}'): each of these jobs is then "
            "re-attached to if this account sees it (the same account under other credentials) and otherwise left "
            "open, not cancelled (if you do not want it billed, cancel it as that account: `qpeft jobs RUN_DIR "
            "--cancel left` with its credentials, or the provider's console), and its step submitted anew"
        )
    logger.warning("%s; going on as account %s (switch_account): the jobs it does not see stay open", words, mine)
    for r in other:
        ledger.append("left", key=r["key"], job_id=r.get("job_id"), tag=r.get("tag"), why=ANOTHER_ACCOUNT)
    return mine


def sees(calls, ledger: Ledger, live: dict, deadline, account: str) -> bool:
    """Whether this engine's account (``account``) sees ``live``, another account's open job
    (``calls``: the engine's :class:`~qpeft.jobs.calls.ProviderCalls`): asked of the provider by the
    job's id (transient errors retried; still failing, they are raised: nothing is paid again). A
    job it sees gets a ``reattached`` record naming this account (a later rerun with these
    credentials is not refused for it). A job it does not see (not found, or access refused), or
    a submission without an id (looking it up by its tag as this account could wrongly settle it as
    never created), gets a ``left`` record (it may still run, billed to the other account) and
    False: its step is submitted anew."""
    job_id, why = live.get("job_id"), "it has no job id to ask for"
    if job_id is not None:
        try:
            calls.retried(lambda: calls.provider.status(job_id), deadline)
            ledger.append("reattached", key=live["key"], job_id=job_id, tag=live.get("tag"), account=account)
            return True
        except Exception as err:  # not found, or access denied: this account cannot read it
            if calls.provider.is_transient(err):  # (still failing after the retries: stop, do not pay again)
                raise calls.clean(err, job_id) from None
            why = calls.provider.describe(err)
    logger.warning(
        "%s, made by another account, is not visible to this one (%s): it stays open (it may still run and be billed "
        "to that account; cancel it as that account, with `qpeft jobs RUN_DIR --cancel left` or in the provider's "
        "console, if you do not want it), and its step is submitted anew",
        f"job {job_id}" if job_id else f"the submission with tag {live.get('tag')}",
        why,
    )
    if not ledger.left_behind(live):
        ledger.append("left", key=live["key"], job_id=job_id, tag=live.get("tag"), why=ANOTHER_ACCOUNT)
    return False


def reattachable(calls, ledger: Ledger, key: str, account: str | None, deadline) -> dict | None:
    """The open submission of job ``key`` a run as ``account`` re-attaches to: the newest of its
    own (or of jobs it turned out to see), else another account's that it sees (asked of the
    provider, :func:`sees`; one it does not see is left). An older job of its own comes before a
    newer one of another account (made by that account's rerun): it may still run, and paying for
    the key again would pay twice. None: the key has no such job."""
    subs = ledger.open_of(key)
    own = [r for r in subs if not made_by_another(r, account)]
    if own:
        return own[0]
    for candidate in subs:  # another account's jobs (switch_account)
        if sees(calls, ledger, candidate, deadline, account):
            return next(r for r in ledger.open_of(key) if submission(r) == submission(candidate))
    return None


def refetch_first(ledger: Ledger, done: dict, live: dict | None, account: str | None, switch: bool) -> bool:
    """Whether the results of ``done``, a key's finished job missing from the result cache, are
    fetched again before ``live`` (:func:`reattachable`) is re-attached to: when there is no open
    job, or only an older one, and ``done`` was this account's. Another account's job is not asked
    for (it would read as gone to this account, and that ``gone`` would make the other account pay
    for it again): with no open job to use, that is refused (ValueError) unless ``switch``
    (``switch_account``: the step is paid for again)."""
    made = ledger.submission_of(done.get("job_id"))
    if not made_by_another(made, account):
        return live is None or (live.get("attempt") or 0) < (done.get("attempt") or 0)
    if live is None and not switch:
        raise ValueError(
            f"the results of job {done.get('job_id')} (key {done.get('key')}), which account {made.get('account')} "
            f"ran, are not in this run's result cache, and this command submits as account {account}, which may not "
            "see that job: asking for it would take it for gone, and its step would be paid for again. Rerun with "
            "that account's credentials to fetch its results again; to pay for the step again as this account, set "
            "the engine option switch_account (--quantum-options '{\"switch_account\": true}')"
        )
    return False


def _shots(shots: int | None) -> str:
    return "exact" if shots is None else f"shots={shots}"


def _named(records: list[dict]) -> str:
    """The jobs of ``records`` by id (by tag where a submission's outcome is unknown)."""
    return ", ".join(r.get("job_id") or f"tag {r.get('tag')}" for r in records)


#: a training run's scopes, one group: its steps (``train-N``, ``/m<i>`` module calls), its periodic
#: and final evaluations, and the step runner's scope before the loop names one
_TRAINING = re.compile(r"(train-\d+|eval-step-\d+|eval|step)")


def scope_group(scope: str) -> str:
    """The calls whose open jobs a call with other shots cannot use: all of a training run's calls
    (``"training"``: a resume from an earlier checkpoint reaches its open jobs only after paying
    for the steps in between), otherwise the call's own scope without its ``/module`` suffix
    (``qpeft eval``'s ``eval-<adapter>``, an API caller's scopes); "" for a call without a scope."""
    base = scope.split("/", 1)[0]
    return "training" if _TRAINING.fullmatch(base) else base


class OpenJobs:
    """The jobs earlier processes left open on this run's backend (inherited by a new engine),
    followed until the step that made each one re-attaches to it.

    :meth:`check` runs before a call pays for anything. An open job of the call's group
    (:func:`scope_group`: all of a training run's steps and evaluations, or the call's own scope)
    made with other shots refuses it (ValueError): a rerun with other shots cannot use the jobs its
    interrupted run left open, which may still run and be billed, and would pay for their steps
    again; checking every call of the group, not only that step's, stops a resume from an earlier
    checkpoint before it pays for the steps in between. With ``switch`` the call goes on. Once the
    run has left a scope (a call of another scope, or :meth:`finish` at a clean close), an open job
    of that scope it did not re-attach to is named in a warning. Either way a ``left`` record in the
    ledger says that the run went on without the job, so later reruns are not refused or warned
    for it again; it stays open in the ledger, and a run that asks for its circuits and shots still
    re-attaches to it. Durable providers only (a local job ends with its process).
    """

    def __init__(self, ledger: Ledger, provider: Provider, switch: bool) -> None:
        mine = (provider.name, provider.backend or "")
        left = left_behind(ledger.records)
        self._ledger, self._switch, self._durable = ledger, switch, provider.durable
        self._open: dict[str, dict] = {}  # key -> its open submission of the highest attempt, not left
        for r in sorted(ledger.open_submissions(), key=lambda r: r.get("attempt") or 0):  # (a key's older ones too)
            if provider.durable and (r.get("provider"), r.get("backend") or "") == mine and submission(r) not in left:
                self._open[r["key"]] = r
        self._seen: set[str] = set()
        self._interrupted: set[str] = set()  # keys of this engine's own interrupted calls
        self._lock = threading.Lock()

    def check(self, scope: str, shots: int | None, keys: Iterable[str], paying: bool) -> None:
        """Before a call of ``scope`` that runs the jobs ``keys`` (all of the call's jobs: re-attached,
        cached or new); ``paying``: whether it submits or re-attaches to any."""
        if not self._durable:
            return
        with self._lock:
            for key in keys:
                self._open.pop(key, None)
            group = scope_group(scope)
            other = [
                r for r in self._open.values() if scope_group(r.get("scope") or "") == group and r.get("shots") != shots
            ]
            if other and paying:
                self._refuse_or_leave(other, shots)
            if scope:
                self._report(self._seen - {scope})
                self._seen.add(scope)

    def _refuse_or_leave(self, other: list[dict], shots: int | None) -> None:
        made = "; ".join(
            f"{_shots(s)}: {_named([r for r in other if r.get('shots') == s])}"
            for s in dict.fromkeys(r.get("shots") for r in other)
        )
        steps = ", ".join(dict.fromkeys(r.get("scope") or "(no scope)" for r in other))
        words = (
            f"this run's ledger has {len(other)} job(s) open that an earlier process made with other shots than "
            f"this call's {_shots(shots)} ({made}; for {steps}): this run cannot use them, they may still run and "
            "be billed, and their steps would be paid for again"
        )
        if not self._switch:
            was = _shots(other[0].get("shots"))
            raise ValueError(
                f"{words}. Run with {was} as the interrupted run did (--shots, or the shots the engine is called "
                f"with) to re-attach to them; to go on with {_shots(shots)} without them (they are not cancelled: "
                "`qpeft jobs RUN_DIR --cancel left` cancels them afterwards if you do not want them billed), set the "
                "engine option "
                "switch_shots (on the command line: --quantum-options '{\"switch_shots\": true}')"
            )
        logger.warning("%s; going on with %s without them (switch_shots): they stay open", words, _shots(shots))
        self._leave(other, "other shots (switch_shots)")

    def _leave(self, records: list[dict], why: str) -> None:
        for r in records:
            self._ledger.append("left", key=r["key"], job_id=r.get("job_id"), tag=r.get("tag"), why=why)
            self._open.pop(r["key"], None)

    def add(self, records: Iterable[dict]) -> None:
        """Jobs this engine's interrupted call leaves open: later calls with other shots are refused
        for them too (never named as unused: their step was interrupted, a rerun re-attaches)."""
        if not self._durable:
            return
        with self._lock:
            for r in records:
                self._open[r["key"]] = r
                self._interrupted.add(r["key"])

    def finish(self) -> None:
        """At a clean close: name the open jobs of every scope this engine ran that it did not use."""
        with self._lock:
            self._report(self._seen)

    def _report(self, scopes: set[str]) -> None:
        unused = [r for k, r in self._open.items() if r.get("scope") in scopes and k not in self._interrupted]
        if not unused:
            return
        logger.warning(
            "%d job(s) left open (by an earlier process, or an interrupted call) were not used by their step "
            "(%s: %s): the step's circuits or their split differ (the angles, e.g. after a resume from an earlier "
            "checkpoint, or max_circuits or a provider option changed). They are not cancelled and may still run and "
            "be billed: cancel them with `qpeft jobs RUN_DIR --cancel left` (or in the provider's console) if you do "
            "not want them",
            len(unused),
            ", ".join(sorted({r["scope"] for r in unused})),
            _named(unused),
        )
        self._leave(unused, "not used by its step")
