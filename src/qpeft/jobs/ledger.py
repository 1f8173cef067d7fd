"""The job ledger: append-only JSON lines in the run directory, one per event.

``intent`` is written (and fsynced) before a submit call to a provider whose jobs outlive the
process, so a crash while the call is in flight leaves a record of it; ``submitted`` right after
a submit returns (before any polling), ``unknown`` when a submit gave no answer, and one
terminal event per job (``done``, ``failed``, ``lost``, ``timeout`` (cancelled past its time
limit, the provider confirmed), ``cancelled``, or ``rejected`` for a submission that created
nothing: the provider answered with an error, or a submission left open by a crash was not found
by its tag). A ``done`` record may carry ``usage``: what the provider reported the job used.
``refetched`` says a ``done`` job's results, missing from the result cache (compacted away, or
damaged by a power loss), were fetched from the provider again; ``gone`` that the provider no
longer had them either (the job is then submitted again). ``left`` says a run went on without an
open job (other shots with ``switch_shots``, or its step did not use it); the job stays open,
and a run that asks for its circuits and shots still re-attaches to it, which a ``reattached``
record says (from then on the job is the run's again, left open or not; one with ``account`` says
that another account than the one that made the job sees it: the job counts as that account's
too from then on, its ``seen_by``). A key's submissions come at rising attempts; an older one
that is still open (another account's, which a run went on without) stays open beside the newer
one, and a run that cannot use the newer re-attaches to it. A terminal record with
``by`` was written by ``qpeft jobs RUN_DIR --check`` / ``--cancel`` (:mod:`qpeft.jobs.settle`),
which asks the provider about open jobs outside a run; its ``done`` carries no results. A restarted engine reads
it to re-attach to jobs that were submitted but never reached a terminal event, and to settle
submissions left without a job id. Submission records carry ``account``, a digest naming the account that made the job
(:meth:`~qpeft.jobs.base.Provider.account`). It holds no secret.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from pathlib import Path

logger = logging.getLogger(__name__)
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # made once (json.dumps with options makes one per call)

#: records fsynced to disk: the ones that prevent a resubmission after a crash
DURABLE = ("intent", "submitted", "unknown")
#: records of a submission whose job may exist but whose id is not known
UNSETTLED = ("intent", "unknown")
TERMINAL = ("done", "failed", "lost", "timeout", "cancelled", "rejected")
#: the ``by`` and the first words of a ``lost`` record the user made (``qpeft jobs --lost``; the
#: first release wrote only the words): its key gets a new budget of attempts, as after a finished
#: job whose results are gone (the user chose to pay for it again)
BY_HAND, HAND_WORDS = "qpeft jobs --lost", "recorded by hand (qpeft jobs --lost)"
#: the ``why`` of a ``left`` record for a job another account made (:mod:`qpeft.jobs.pin`)
ANOTHER_ACCOUNT = "another account"
FIELDS = ("key", "provider", "backend", "job_id", "circuits", "shots", "attempt", "tag")


class Ledger:
    """Append-only JSONL file; thread-safe; each line goes to the OS in one write (to the one
    unbuffered handle the ledger keeps open), and fsynced when it records a submission and
    ``fsync`` is on (jobs that outlive the process). A last line torn by a crash mid-write (never
    readable, skipped by :func:`read_ledger`) is cut off when the ledger is opened (a whole record
    without its newline gets one), so new records never join it."""

    def __init__(self, path: str | Path | None, fsync: bool = True):
        self.path = Path(path) if path is not None else None  # None: kept in memory only
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = None  # opened on the first append, kept open (closed when the ledger is collected)
        self.fsync = fsync
        self.records: list[dict] = []
        self._open: dict[str, dict] = {}  # key -> its live submission (see live())
        # key -> its open submissions: (key, tag) -> newest intent / submitted / unknown record (with ``seen_by``)
        self._subs: dict[str, dict[tuple, dict]] = {}
        self._made: dict[str, dict[tuple, tuple]] = {}  # key -> every submission: (key, tag) -> (attempt, accounts)
        self._by_id: dict[str, dict] = {}  # job id -> its newest submission record
        self._last: dict[str, dict] = {}  # key -> newest terminal record
        self._attempts: dict[str, int] = {}
        self._done: dict[str, dict] = {}  # key -> newest done record
        self._renewed: dict[str, int] = {}  # key -> highest attempt of its done or hand-recorded lost jobs
        self._gone: set[str] = set()  # ids of done jobs whose results the provider no longer had
        self._left: set[tuple] = set()  # submissions a run went on without (left_behind)
        for record in read_ledger(self.path) if self.path is not None and self.path.exists() else []:
            self._index(record)
        if self.path is not None and self.path.exists():
            _cut_torn_line(self.path)

    @classmethod
    def replay(cls, records: list[dict]) -> Ledger:
        """An in-memory ledger indexing ``records`` (one place decides what is open, left, done)."""
        ledger = cls(None)
        for r in records:
            ledger._index(r)
        return ledger

    def _index(self, r: dict) -> None:
        self.records.append(r)
        _went_on_without(self._left, r)
        key, event = r.get("key"), r.get("event")
        if key is None:
            return
        self._attempts[key] = max(self._attempts.get(key, 0), _attempt(r))
        subs, sub = self._subs.setdefault(key, {}), submission(r)
        # A key's submissions come at rising attempts. An older one still open (another account's,
        # which a run went on without; one settled by hand after the key was submitted anew) stays
        # among the key's open submissions; an older one settled later (by hand, by `qpeft jobs
        # --check`) replaces neither the key's finished job nor its last (a refetch would ask for
        # the other account's job).
        if event in DURABLE:
            seen_by = subs[sub].get("seen_by") if sub in subs else None
            subs[sub] = {**r, "seen_by": seen_by} if seen_by else r
            attempt, known = self._made.setdefault(key, {}).get(sub, (0, frozenset()))
            self._made[key][sub] = (max(attempt, _attempt(r)), known | accounts(r))
            if r.get("job_id"):
                self._by_id[r["job_id"]] = subs[sub]
        elif event == "reattached" and r.get("account") and sub in subs:  # (this account sees it: its job too)
            subs[sub] = {**subs[sub], "seen_by": [*subs[sub].get("seen_by", ()), r["account"]]}
            if r.get("job_id"):
                self._by_id[r["job_id"]] = subs[sub]
            attempt, known = self._made[key][sub]
            self._made[key][sub] = (attempt, known | {r["account"]})
        elif event in TERMINAL:
            _keep_newest(self._last, key, r)
            if event == "done":
                _keep_newest(self._done, key, r)
            if event == "done" or (event == "lost" and (r.get("by") == BY_HAND or _words(r).startswith(HAND_WORDS))):
                self._renewed[key] = max(self._renewed.get(key, 0), _attempt(r))
            for ended in [s for s, o in subs.items() if _ends(r, o)]:
                del subs[ended]
        else:
            if event == "gone":
                self._gone.add(r.get("job_id"))
            return  # (the key's open submissions did not change)
        # the live submission: the open one of the highest attempt (the newest of equals)
        live = max(reversed(subs.values()), key=_attempt, default=None)
        if live is None:
            self._open.pop(key, None)
        else:
            self._open[key] = live

    def append(self, event: str, **fields) -> dict:
        """Append one record to the ledger and index it.

        The line is written with one unbuffered write; ``intent``, ``submitted`` and ``unknown``
        records are fsynced before this returns (when the ledger was made with ``fsync``), so a job
        that may exist is never forgotten by a crash.

        Args:
            event: the record's event (``intent``, ``submitted``, ``done``, ...; the module docstring).
            **fields: the record's other fields (key, job id, tag, attempt, ...); no secret.

        Returns:
            The record written (with ``event`` and ``time``).

        Raises:
            OSError: a short write (a full disk).
        """
        record = {"event": event, "time": time.time(), **fields}
        line = (_ENCODE(record) + "\n").encode()
        with self._lock:
            if self.path is not None:
                if self._file is None:
                    # unbuffered: each line is one write to the OS (no flush needed), at the end
                    self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (kept open: one open per ledger)
                    weakref.finalize(self, self._file.close)
                if self._file.write(line) != len(line):
                    raise OSError(f"short write to {self.path}; disk full?")
                # a lost terminal record only costs a re-attach; a lost `reattached` would bring back a `left`
                if self.fsync and (event in DURABLE or event == "reattached"):
                    os.fsync(self._file.fileno())
            self._index(record)
        return record

    def close(self) -> None:
        """Close the ledger file (idempotent; a later :meth:`append` opens it again)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def live(self) -> dict[str, dict]:
        """key -> its live submission: of the key's submissions with no terminal event, the newest
        ``submitted`` (or unsettled ``intent`` / ``unknown``) record of the highest attempt. Another
        account's job has ``seen_by``: the accounts that turned out to see it (:func:`accounts`)."""
        with self._lock:
            return dict(self._open)

    def get_live(self, key: str) -> dict | None:
        """:meth:`live` of one key."""
        with self._lock:
            return self._open.get(key)

    def open_of(self, key: str) -> list[dict]:
        """Every open submission of ``key``, the live one first, then the older ones (highest
        attempt first)."""
        with self._lock:
            return sorted(reversed(self._subs.get(key, {}).values()), key=_attempt, reverse=True)

    def open_submissions(self) -> list[dict]:
        """Every open submission (a key's older ones too), oldest first."""
        with self._lock:
            subs = [r for each in self._subs.values() for r in each.values()]
        return sorted(subs, key=lambda r: r.get("time") or 0.0)

    def submission_of(self, job_id: str | None) -> dict:
        """The newest submission record of job ``job_id`` (with ``seen_by``; {} if none)."""
        with self._lock:
            return self._by_id.get(job_id, {}) if job_id else {}

    def foreign_attempts(self, key: str, account: str | None, after: int = 0) -> int:
        """How many of ``key``'s submissions after attempt ``after`` other accounts made (ones
        ``account`` turned out to see count as its own; none where ``account`` is None or a
        submission names no account): attempts that do not use up ``account``'s."""
        if account is None:
            return 0
        with self._lock:
            made = list(self._made.get(key, {}).values())
        return sum(1 for attempt, known in made if attempt > after and known and account not in known)

    def left_behind(self, r: dict) -> bool:
        """Whether a run went on without the submission of record ``r`` (:func:`left_behind`)."""
        with self._lock:
            return submission(r) in self._left

    def unsettled(self) -> list[dict]:
        """The submissions whose job may exist but whose id is unknown (``intent`` / ``unknown``),
        a key's older ones included (another account's, which a run went on without)."""
        return [r for r in self.open_submissions() if r.get("event") in UNSETTLED]

    def resolve(self, tag: str, job_id: str | None) -> dict:
        """Settle a submission left unsettled (an ``intent`` a crash cut off, or an ``unknown``
        submit; its tag looked up in the provider's console): ``job_id`` if the job exists (the
        next run re-attaches to it), None if nothing was created (the next run submits it)."""
        unsettled = self.unsettled()
        record = next((r for r in unsettled if r["tag"] == tag), None)
        if record is None:
            tags = [r["tag"] for r in unsettled]
            raise ValueError(f"no unresolved submission with tag {tag!r} in {self.path}; unresolved: {tags}")
        fields = {k: record[k] for k in FIELDS if k != "job_id"}
        for name in ("scope", "account"):  # (the record stays in its step, see recent_steps, and its account)
            if name in record:
                fields[name] = record[name]
        if job_id is None:
            return self.append("rejected", job_id=None, message="resolved by hand: not created", **fields)
        return self.append("submitted", job_id=job_id, **fields)

    def done(self, key: str) -> dict | None:
        """The newest ``done`` record of a job key (None if it never finished)."""
        with self._lock:
            return self._done.get(key)

    def renewed(self, key: str) -> int:
        """The attempt after which ``key``'s submissions count toward ``max_attempts`` (0: all of
        them): the highest of its finished jobs (their results were lost since) and of the jobs the
        user recorded lost by hand (``qpeft jobs --lost``: the user chose to pay for them again)."""
        with self._lock:
            return self._renewed.get(key, 0)

    def last(self, key: str) -> dict | None:
        """The newest terminal record of a job key (None if none)."""
        with self._lock:
            return self._last.get(key)

    def gone(self, job_id: str) -> bool:
        """Whether the provider was found to no longer have a done job's results."""
        with self._lock:
            return job_id in self._gone

    def attempts(self, key: str) -> int:
        """Submissions made so far for a job key (including unanswered ones)."""
        with self._lock:
            return self._attempts.get(key, 0)


def accounts(r: dict) -> set[str]:
    """The accounts a submission record is known to be visible to: the one that made it
    (``account``) and those that turned out to see it (``seen_by``)."""
    return {a for a in (r.get("account"), *(r.get("seen_by") or ())) if a}


def made_by_another(r: dict, account: str | None) -> bool:
    """Whether submission record ``r`` is a job of another account than ``account``, which may
    not see it (False where either account is unknown: nothing can be told)."""
    known = accounts(r)
    return account is not None and bool(known) and account not in known


def _keep_newest(index: dict[str, dict], key: str, r: dict) -> None:
    """``index[key] = r`` unless it holds a record of a higher attempt (an older submission
    settled later replaces neither a key's finished job nor its last)."""
    if key not in index or _attempt(r) >= _attempt(index[key]):
        index[key] = r


def _words(r: dict) -> str:
    return r.get("message") if isinstance(r.get("message"), str) else ""


def _attempt(r: dict) -> int:
    """A record's attempt (0 where it has none: a record written by hand)."""
    return r.get("attempt") or 0


def _cut_torn_line(path: Path) -> None:
    """End an unterminated last line: kept (a newline added) when it is a whole record, cut off
    when it is torn (unreadable, as :func:`read_ledger` already treats it)."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    if parse_record(data[start:]) is None:
        logger.warning(
            "%s: cutting off a last line torn by a crash (%d bytes, never readable)", path, len(data) - start
        )
        with open(path, "rb+") as f:
            f.truncate(start)
        return
    with open(path, "ab") as f:
        f.write(b"\n")


def parse_record(line: bytes) -> dict | None:
    """The ledger record of one line (a JSON object; one without an ``event``, a note written by
    hand, is read and changes nothing), or None where the line is not one (torn, damaged on disk,
    or JSON that is no object): the one rule :func:`read_ledger` and ``qpeft jobs --repair`` read
    lines by."""
    try:
        record = json.loads(line)
    except ValueError:  # (UnicodeDecodeError included: a byte damaged on disk)
        return None
    return record if isinstance(record, dict) else None


def existing(path: str | Path) -> Path:
    """``path`` if a ledger is there; a FileNotFoundError that says what to pass if not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no job ledger at {path}; pass a run directory trained with --quantum-backend")
    return path


def read_ledger(path: str | Path) -> list[dict]:
    """All records; a torn last line (a crash mid-write: no newline after it) is skipped, any
    other line that is not a record is an error (a damaged line that did end with its newline too:
    it was whole once, and may have been a job). Lines end at a newline byte only (a record's
    strings may hold other line separators)."""
    path = existing(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines[-1] == b"":  # (each record is written with its newline in one write)
        lines.pop()
    torn = not data.endswith(b"\n")
    records = []
    for n, line in enumerate(lines, 1):
        record = parse_record(line)
        if record is None:
            if n == len(lines) and torn:
                break
            raise ValueError(
                f"{path}:{n} is not a JSON ledger record (a JSON object; the line starts {line[:40]!r}); "
                "the ledger is corrupt. `qpeft jobs RUN_DIR --repair` keeps every readable record, says which job the "
                "bad line may have been, and lets the next run re-attach to its jobs by asking the provider"
            )
        records.append(record)
    return records


def submission(r: dict) -> tuple:
    """The submission a record is about: its key and tag (the tag stays when a recovery or
    ``--resolve`` finds the job's id)."""
    return r.get("key"), r.get("tag")


def left_behind(records: list[dict], why: str | None = None) -> set[tuple]:
    """The submissions (:func:`submission`) a run went on without: those with a ``left`` record
    (whose ``why`` is ``why``, when given) and no ``reattached`` record after it."""
    left: set[tuple] = set()
    for r in records:
        _went_on_without(left, r, why)
    return left


def _went_on_without(left: set[tuple], r: dict, why: str | None = None) -> None:
    if r.get("event") == "left" and why in (None, r.get("why")):
        left.add(submission(r))
    elif r.get("event") == "reattached":
        left.discard(submission(r))


def _ends(terminal: dict, submitted: dict) -> bool:
    """Whether ``terminal`` (a terminal record) ends the submission of record ``submitted``: the
    same job id; for a submission without one (``rejected``: nothing was created), the same tag."""
    if submitted.get("job_id") != terminal.get("job_id"):
        return False
    return terminal.get("job_id") is not None or terminal.get("tag") in (None, submitted.get("tag"))
