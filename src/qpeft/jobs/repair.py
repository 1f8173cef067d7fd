"""``qpeft jobs RUN_DIR --repair``: a ledger with an unreadable line in its middle (a disk
error, an edit by hand) is refused by every run; repair keeps every readable record, byte for
byte, and says which job the bad line may have been.

Nothing is guessed into the ledger: a bad line was one record, and what it recorded is found
again by the next run, which asks the provider. If it was a job's ``submitted`` record, the job's
``intent`` (written before every submission to a durable provider) is now open, and the run
looks the job up by its tag (or, where the provider cannot, reports it for
``qpeft jobs RUN_DIR --resolve TAG --job-id ID``; the bad line may show the id); if it was a
terminal record, the job is open again and the run re-attaches to it by its id (a finished job
is served from the cache, or its results fetched again: never paid again). The original file is
kept next to the ledger (``ledger.jsonl.corrupt-<time>``), and a ``repaired`` record says what
was dropped. Refused while a run has the run directory open.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from qpeft.jobs.cache import exclusive_lock
from qpeft.jobs.ledger import UNSETTLED, Ledger, existing, parse_record

_FIELD = re.compile(rb'"(event|key|job_id|tag|scope)"\s*:\s*"([^"]{0,200})"')


def repair_ledger(run_dir: str | Path) -> dict:
    """Rewrite ``run_dir/jobs/ledger.jsonl`` without its unreadable lines (see module docstring).
    Returns the bad lines (number, size, the fields still legible in them, the records around
    them), the jobs the repaired ledger leaves open (re-attached by id on the next run) or
    unsettled (looked up by tag), and where the original was kept; ``bad_lines`` is empty when
    the ledger was sound (then nothing is written)."""
    jobs_dir = Path(run_dir) / "jobs"
    path = existing(jobs_dir / "ledger.jsonl")
    lock = exclusive_lock(jobs_dir / "results")  # (refused while a run has the directory open)
    try:
        return _repair(path)
    finally:
        lock.close()


def _repair(path: Path) -> dict:
    lines = path.read_bytes().split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    kept, bad, records = [], [], []
    for n, line in enumerate(lines, 1):
        record = parse_record(line)
        if record is None:
            bad.append((n, line))
        else:
            kept.append(line)
            records.append((n, record))
    if not bad:
        return {"bad_lines": [], "open": [], "unsettled": [], "backup": None}
    live = Ledger.replay([r for _, r in records]).open_submissions()
    summary = {
        "bad_lines": [_describe(n, line, records) for n, line in bad],
        "open": sorted(r["job_id"] for r in live if r.get("event") == "submitted"),
        "unsettled": sorted(r["tag"] for r in live if r.get("event") in UNSETTLED),
    }
    backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copy2(path, backup)
    note = {"event": "repaired", "time": time.time(), "dropped_lines": [n for n, _ in bad], "backup": backup.name}
    body = b"".join(line + b"\n" for line in kept) + (json.dumps(note) + "\n").encode()
    tmp = path.with_name(path.name + ".repairing")
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {**summary, "backup": str(backup)}


def _describe(n: int, line: bytes, records: list[tuple[int, dict]]) -> dict:
    """What a bad line may have been: the fields still legible in it, and the records around it."""
    legible = {m.group(1).decode(): m.group(2).decode("utf-8", "replace") for m in _FIELD.finditer(line)}
    before = next((r for m, r in reversed(records) if m < n), None)
    after = next((r for m, r in records if m > n), None)

    def brief(r):
        return None if r is None else {k: r.get(k) for k in ("event", "key", "job_id", "tag") if r.get(k) is not None}

    return {"line": n, "bytes": len(line), "legible": legible, "before": brief(before), "after": brief(after)}
