"""``qpeft jobs RUN_DIR``: a QPU run's job ledger on the command line (totals, the bill the
providers reported next to the plan's estimate, settling a submission of unknown outcome by hand,
listing the jobs that may still run, repairing a corrupt ledger, compacting the result cache)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from qpeft.cli.flags import json_object


def cmd_jobs(args) -> int:
    """``qpeft jobs RUN_DIR``: print the totals of the run's job ledger, the plan's estimate for
    its jobs and what the providers reported they used; or, with a flag, repair the ledger,
    settle a submission of unknown outcome (``--resolve``), list the jobs that may still run
    (``--open``) or compact the result cache.

    Args:
        args: the parsed flags of ``qpeft jobs``.

    Returns:
        The exit code: 0 done, 2 when the ledger or cache is in use by a live run (``--resolve``,
        ``--lost``, ``--check``, ``--cancel``, ``--compact-results``).

    Raises:
        FileNotFoundError: the run directory has no ledger.
        ValueError: ``--resolve`` names a tag that is not an unsettled submission, or ``--lost`` an id
            that is neither an open nor a finished job.
    """
    from qpeft.jobs.ledger import read_ledger
    from qpeft.jobs.runlock import RunInUseError
    from qpeft.jobs.settle import record_lost, resolve
    from qpeft.jobs.summary import totals

    path = args.run_dir / "jobs" / "ledger.jsonl"
    if args.repair:
        return repair(args.run_dir, as_json=args.json)
    if args.resolve is not None or args.lost:
        try:
            if args.resolve is not None:
                resolve(args.run_dir, args.resolve, args.job_id)  # (FileNotFoundError when the run has no ledger)
                what = f"re-attaches to job {args.job_id}" if args.job_id else "will be submitted again"
                print(f"{args.resolve}: {what}")
            for report in record_lost(args.run_dir, args.lost) if args.lost else ():
                again = "its key is submitted again" if report["recorded"] == "lost" else "submitted again if needed"
                print(f"{report['job_id']}: recorded {report['recorded']}; the next run pays for it again ({again})")
        except RunInUseError as err:
            print(f"qpeft jobs: error: {err}", file=sys.stderr)
            return 2
    if args.compact_results is not None:
        return compact_results(args.run_dir, read_ledger(path), args.compact_results, as_json=args.json)
    if args.open:
        return list_open(read_ledger(path), as_json=args.json)
    if args.check or args.cancel:
        return check(args, read_ledger(path))
    records = read_ledger(path)
    result = {**totals(records), "estimate": estimate(records)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    reported, reporting, estimates = result.pop("reported"), result.pop("reported_jobs"), result.pop("estimate")
    width = max(len(key) for key in (*result, "estimate", "reported")) + 2
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:,.1f}"
        print(f"{key:{width}s}{', '.join(value) if isinstance(value, list) else value}")
    for provider, e in estimates.items():
        low, high = e["qpu_seconds"]
        parts = [f"{low:,.0f} - {high:,.0f} QPU s"] if high or not e["cost"] else []  # (Braket: priced, no time)
        if e["cost"]:
            parts.append(f"{e['cost'][0]:,.2f} - {e['cost'][1]:,.2f} {e['currency']}")
        what = f"{provider}: {', '.join(parts)} (the plan's rates, for these jobs)"
        print(f"{'estimate':{width}s}{what}")
    if reported:
        figures = ", ".join(f"{name} {value:,.6g}" for name, value in reported.items())
        print(
            f"{'reported':{width}s}{figures} (by {reporting} of the {result['jobs']} jobs submitted, as they ended; "
            "the provider's own figures, names and units)"
        )
    return 0


def list_open(records: list[dict], as_json: bool = False) -> int:
    """``qpeft jobs RUN_DIR --open``: the jobs that may still run and be billed, one a line (id or
    tag, provider:backend, step, shots, circuits, submitted), to cancel in the provider's console
    the ones no run will use (those a run went on without are marked)."""
    from qpeft.jobs.summary import open_jobs

    jobs = open_jobs(records)
    if as_json:
        print(json.dumps(jobs, indent=2))
        return 0
    if not jobs:
        print("no open job: every job the ledger records has ended")
        return 0
    for job in jobs:
        what = job["job_id"] or f"tag {job['tag']} (outcome unknown: `--resolve {job['tag']}` settles it)"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(job["time"])) if job["time"] else "?"
        shots = "exact" if job["shots"] is None else f"{job['shots']} shots"
        note = "; a run went on without it (cancel it if no run will use it)" if job["left"] else ""
        print(f"{what}  {job['provider']}  {job['scope'] or '-'}  {job['circuits']} circuits, {shots}  {when}{note}")
    print(
        f"{len(jobs)} open job(s): a rerun of the run re-attaches to each one its steps ask for; a job may still "
        "run and be billed until it ends (`--check` asks the provider which ended; `--cancel left` cancels those a "
        "run went on without)"
    )
    return 0


def check(args, records: list[dict]) -> int:
    """``qpeft jobs RUN_DIR --check`` / ``--cancel ID|left|all ...``: ask the provider about the
    run's open jobs (cancelling the named ones first) and record those that ended
    (:func:`qpeft.jobs.settle.check_open`); one line per open job. The provider is the open jobs'
    (or ``--quantum-backend``), with the run's ``quantum_options`` under ``--quantum-options``.

    Returns:
        The exit code: 0 every open job with an id ended (recorded) or is known to be queued or
        running; 1 one was not asked about (another backend or account), its state could not be
        read, or its cancel was not confirmed; 2 refused, nothing asked (an id that is not open, a
        provider that keeps no jobs, a run that has the run directory open).
    """
    from qpeft.jobs.runlock import RunInUseError
    from qpeft.jobs.settle import check_open
    from qpeft.jobs.step import connect_provider, split_options
    from qpeft.jobs.summary import open_submissions

    open_now = open_submissions(records)
    subs = [r for r in open_now if r.get("job_id")]
    spec = args.quantum_backend or (f"{subs[-1]['provider']}:{subs[-1].get('backend') or ''}" if subs else None)
    named = [c for c in args.cancel or () if c not in ("all", "left")]
    if spec is None:
        if named:
            raise ValueError(f"--cancel {' '.join(named)}: this run's ledger has no open job with an id")
        tags = [r["tag"] for r in open_now if not r.get("job_id")]
        unsettled = f"; {len(tags)} submission(s) of unknown outcome: `--resolve TAG` settles them" if tags else ""
        print("no open job with an id: nothing to ask the provider about" + unsettled)
        return 0
    config = args.run_dir / "train_config.json"
    saved = json.loads(config.read_text()).get("quantum_options") or {} if config.is_file() else {}
    for limit in ("deadline", "run_deadline"):  # (the run's time limits per step: not this command's)
        saved.pop(limit, None)
    options = {**saved, **(args.quantum_options or {})}
    _, engine_options, _ = split_options(options)
    # (shots: checked only for a QPU; run_dir: a spec without a backend takes the one the ledger records)
    provider = connect_provider(spec.rstrip(":"), shots=1, options=options, run_dir=args.run_dir)
    try:
        reports = check_open(provider, args.run_dir, args.cancel or (), **engine_options)
    except RunInUseError as err:
        print(f"qpeft jobs: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        for job in reports:
            what = job["job_id"] or f"tag {job['tag']}"
            state = job["state"] or "not asked"
            done = f"{state}, recorded" if job["recorded"] else state + (", still open" if job["state"] else "")
            words = f" ({job['words']})" if job["words"] else ""
            note = "; a run went on without it" if job["left"] else ""
            print(f"{what}  {job['provider']}  {job['scope'] or '-'}: {done}{words}{note}")
        ended = sum(1 for job in reports if job["recorded"])
        print(
            f"{len(reports)} open job(s): {ended} ended and recorded (a run that needs a finished job's results "
            "fetches them by its id; one that needs a cancelled, failed or lost job's step submits it anew), "
            f"{len(reports) - ended} still open"
        )
    unsettled = [
        job for job in reports if job["job_id"] and not job["recorded"] and job["state"] not in ("queued", "running")
    ]
    return 1 if unsettled else 0


def estimate(records: list[dict]) -> dict:
    """Per provider of the ledger's jobs: QPU seconds and cost (low, high) from the plan's rates."""
    from qpeft.jobs.budget import priced

    return priced(records)


def repair(run_dir: Path, as_json: bool = False) -> int:
    """``qpeft jobs RUN_DIR --repair``: rewrite a ledger with unreadable lines, keeping every
    readable record (the original is kept beside it), and print which job each dropped line may
    have been and what the next run will do about it.

    Args:
        run_dir: the run directory.
        as_json: print the summary of :func:`qpeft.jobs.repair.repair_ledger` as JSON.

    Returns:
        The exit code: 0 done (also when nothing needed repair), 2 when a live run has the run
        directory open (nothing is changed).
    """
    from qpeft.jobs.cache import CacheInUse
    from qpeft.jobs.repair import repair_ledger

    try:
        summary = repair_ledger(run_dir)
    except CacheInUse as err:
        print(f"qpeft jobs: error: {err}; repair the ledger after that process ends", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(summary, indent=2))
        return 0
    if not summary["bad_lines"]:
        print(f"{run_dir}/jobs/ledger.jsonl: every line is readable; nothing to repair")
        return 0
    for bad in summary["bad_lines"]:
        seen = ", ".join(f"{k} {v}" for k, v in bad["legible"].items()) or "nothing legible"
        print(
            f"line {bad['line']} ({bad['bytes']} bytes) was unreadable and is dropped; it shows: {seen}; "
            f"the record before it: {bad['before']}, after it: {bad['after']}"
        )
    print(f"kept every readable record; the original is {summary['backup']}.")
    print(
        f"The next run re-attaches to the {len(summary['open'])} open job(s) by id"
        + (
            f" and looks up the {len(summary['unsettled'])} submission(s) without an id by their tag "
            f"({', '.join(summary['unsettled'])}); where the provider cannot look jobs up, it says so and "
            "`qpeft jobs RUN_DIR --resolve TAG --job-id ID` settles them"
            if summary["unsettled"]
            else ""
        )
        + ": nothing is paid twice."
    )
    return 0


def _unfinished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` has not finished: a rerun replays its training steps from
    the cache (the same command continues from the newest checkpoint, or from step 0 if there is none)."""
    results = run_dir / "results.json"
    return not (results.is_file() and json.loads(results.read_text()).get("finished"))


def compact_results(run_dir: Path, records: list[dict], last: int, as_json: bool = False) -> int:
    """``qpeft jobs RUN_DIR --compact-results N``: drop the cached results of every job outside
    the run's last ``last`` steps (and, while the run is unfinished, outside its training steps,
    which a rerun replays), then print what was kept and removed. The ledger is unchanged.

    Args:
        run_dir: the run directory.
        records: its ledger's records.
        last: how many of the newest steps to keep.
        as_json: print the summary as JSON.

    Returns:
        The exit code: 0 done, 2 when a live run has the cache open (nothing is changed).
    """
    from qpeft.jobs.cache import CacheInUse, compact
    from qpeft.jobs.summary import recent_steps

    training = re.compile(r"train-\d+").fullmatch if _unfinished(run_dir) else None
    kept_steps, keep = recent_steps(records, last, also=training)
    steps, extra = kept_steps[:last], kept_steps[last:]  # the last N steps come first
    try:
        summary = compact(run_dir / "jobs" / "results", keep)
    except CacheInUse as err:
        print(f"qpeft jobs: error: {err}; compact the results after that process ends", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps({"last_steps": steps, "older_steps_kept": extra, **summary}, indent=2))
        return 0

    def show(names):
        return ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"

    also = (
        f" and {len(extra)} older step(s) [{show(extra)}] of the unfinished run (a rerun replays them from its newest "
        "checkpoint, or from step 0 if there is none; compact after the run finishes)"
        if extra
        else ""
    )
    print(
        f"kept the results of {summary['jobs_kept']} jobs ({summary['bytes_kept'] / 1e6:,.1f} MB) from the last "
        f"{len(steps)} step(s) [{show(steps)}]{also}; removed {summary['jobs_dropped']} "
        f"({summary['bytes_dropped'] / 1e6:,.1f} MB). The ledger is unchanged."
    )
    if summary["jobs_damaged"]:
        print(
            f"{summary['jobs_damaged']} of the jobs to keep had damaged results (cut short by a power loss, or "
            "failing their checksum) and were dropped too; a run that needs them fetches them from the provider again"
        )
    return 0


def add_parsers(sub) -> None:
    """Register ``qpeft jobs RUN_DIR`` on ``sub`` (the subparsers of
    :func:`qpeft.cli.build_parser`), with ``--json``, ``--resolve`` / ``--job-id``,
    ``--repair`` and ``--compact-results``."""
    p = sub.add_parser("jobs", help="totals of a run's job ledger", description="Totals of RUN_DIR/jobs/ledger.jsonl.")
    p.add_argument("run_dir", type=Path, help="a run directory trained with --quantum-backend")
    p.add_argument("--json", action="store_true", help="print the totals (with --compact-results: its summary) as JSON")
    p.add_argument(
        "--resolve",
        metavar="TAG",
        help="settle a submission whose outcome is unknown (it gave no answer, or a crash cut it off, on a "
        "provider that cannot look jobs up by tag): with --job-id the job exists (re-attach), without it nothing "
        "was created (submit again)",
    )
    p.add_argument("--job-id", default=None, help="with --resolve: the provider's id of the job with that tag")
    p.add_argument(
        "--lost",
        nargs="+",
        metavar="ID",
        help="record jobs the provider's console no longer lists, where its answers cannot say so (Origin's "
        "HTTP 404, or IBM's 'not found' for an account without one named instance, stops a run with the job's id): "
        "an open job is recorded lost, a finished one gone; the next run pays for them again",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="rewrite a ledger that has an unreadable line (refused by every run) with every readable record kept; "
        "says which job the bad line may have been; the next run re-attaches to its jobs by asking the provider",
    )
    p.add_argument(
        "--compact-results",
        metavar="N",
        type=int,
        help="delete the cached results of every job outside the run's last N steps, newest first (a "
        "`qpeft eval` of the run counts as a step; every training step is kept too while the run is "
        "unfinished: a rerun replays them from the cache); a job needed again is fetched from the "
        "provider again, or submitted again where the provider no longer has it; refused while the run is live",
    )
    p.add_argument(
        "--open",
        action="store_true",
        help="list the jobs that may still run and be billed (submitted with no end recorded, or of unknown "
        "outcome), with id, backend, step, shots and time; those a run went on without are marked",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="ask the provider about every open job (by id; nothing is submitted) and record those that ended "
        "(done, failed, cancelled in the console, or no longer known), so they leave --open",
    )
    p.add_argument(
        "--cancel",
        nargs="+",
        metavar="ID",
        help="cancel these open jobs, wait for the provider to confirm, and record them (implies --check); "
        "'left' names every job a run went on without, 'all' every open job (a rerun pays again for the steps "
        "of the ones it needs)",
    )
    p.add_argument(
        "--quantum-backend",
        default=None,
        help="with --check / --cancel: the PROVIDER:BACKEND to ask (default: that of the newest open job)",
    )
    p.add_argument(
        "--quantum-options",
        type=json_object,
        default=None,
        help="with --check / --cancel: provider and engine options (default: the run's own quantum_options)",
    )
    p.set_defaults(func=cmd_jobs)
