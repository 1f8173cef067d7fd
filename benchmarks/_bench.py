"""What the benchmark scripts share: the machine's load (refused or marked), the ``meta`` record
of a run (command line, machine, versions, load before and after), one way of timing code
(:func:`measure`), and the results tail (``<name>.json`` and ``<name>.md`` in the out folder).

Load: every result records the 1-minute load average at the start and at the end of the run on
this many cores. A run that would start with the load above the core count stops with a message
(its timings would measure the other jobs as much as the code) unless it is given
``--allow-load``; a run whose load was above the core count at either end is marked ``loaded``,
and :func:`load_note` says so in its Markdown.

Timing: :func:`measure` times a set of contenders interleaved in rounds (every round runs each
of them), after warm-up runs, with glibc's heap pinned (:func:`steady_allocator`): left alone,
glibc returns freed memory at the top of the heap to the system and the next run faults it in
again (20-30 thousand page faults per forward + backward of an 8-qubit batch of 4096 on this
machine), so a run's time depended on what ran before it in the process. Page faults per run are
recorded next to the times.

The scripts run as ``python benchmarks/X.py`` (this folder is then first on ``sys.path``) and
put the folder on ``sys.path`` themselves for ``runpy`` and ``importlib``. Only the standard
library is imported at module level: ``overhead.py`` re-runs itself as a child on another
source tree (``--baseline-src``, via ``PYTHONPATH``), which may predate ``qpeft.sysinfo``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


def command(script: str, argv: list[str] | None) -> str:
    """The command line as recorded: ``python benchmarks/<script> <args>``."""
    return f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


# ---- load ----------------------------------------------------------------------------------


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def add_load_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--allow-load`` to a script's parser."""
    parser.add_argument(
        "--allow-load",
        action="store_true",
        help="run even when the load average is above the core count (the results are then marked 'loaded')",
    )


def load_start(allow: bool) -> tuple[float, float, float]:
    """The load average now. Raises SystemExit (with the reason and the way out) when its 1-minute
    value is above the core count, unless ``allow``."""
    load = os.getloadavg()
    if load[0] > cores() and not allow:
        raise SystemExit(
            f"load average {load[0]:.1f} is above the {cores()} cores of this machine: the timings would measure "
            "the other jobs as much as this code. Rerun in a quiet moment, or pass --allow-load to record a run "
            "marked as loaded."
        )
    return load


def run_meta(
    script: str,
    argv: list[str] | None,
    device: str | None = None,
    *,
    threads: bool = True,
    ram: bool = False,
    loadavg_start: tuple[float, float, float] | None = None,
    finished: bool = False,
) -> dict:
    """A run's ``meta``, keys in this order: command, cpu (`` + <GPU name>`` when ``device`` is
    "cuda"), threads (unless ``threads=False``), ram_gib (with ``ram=True``), torch, date, cores,
    loadavg_start (now, or the one given), weights (only when ``$QPEFT_RANDOM_WEIGHTS`` says the
    model has random weights), then with ``finished=True`` loadavg_end and loaded
    (else stamp them with :func:`finish`). The script adds its own keys after these:
    ``run_meta(...) | {...}``."""
    import torch

    from qpeft.sysinfo import cpu_model

    meta = {
        "command": command(script, argv),
        "cpu": cpu_model() + (f" + {torch.cuda.get_device_name()}" if device == "cuda" else ""),
    }
    if threads:
        meta["threads"] = torch.get_num_threads()
    if ram:
        with open("/proc/meminfo") as f:
            total = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) * 1024
        meta["ram_gib"] = total / 2**30
    meta["torch"] = torch.__version__
    meta["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta["cores"] = cores()
    meta["loadavg_start"] = loadavg_start if loadavg_start is not None else os.getloadavg()
    if os.environ.get("QPEFT_RANDOM_WEIGHTS"):  # benchmarks/gpu_device.sh: the model's shapes, random values
        meta["weights"] = "random (the model's architecture and config; timings only)"
    return finish(meta) if finished else meta


def finish(meta: dict) -> dict:
    """Stamp the load average at the end of the run (``loadavg_end``) and whether the load was
    above the core count at either end (``loaded``): the last two keys."""
    meta["loadavg_end"] = os.getloadavg()
    meta["loaded"] = max(meta["loadavg_start"][0], meta["loadavg_end"][0]) > meta["cores"]
    return meta


def load_note(meta: dict) -> str:
    """One Markdown sentence on the run's load, with a warning when it was ``loaded``."""
    text = (
        f"Load average {meta['loadavg_start'][0]:.1f} at the start and {meta['loadavg_end'][0]:.1f} at the end "
        f"(1 minute, {meta['cores']} cores)."
    )
    if meta.get("loaded"):
        text += (
            " **Loaded run: the load was above the core count, so these timings measure the other jobs too; do "
            "not quote them.**"
        )
    return text


# ---- timing --------------------------------------------------------------------------------

#: glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def steady_allocator() -> bool:
    """Pin glibc's heap: freed memory is kept for the next allocation instead of being returned to
    the system (no trimming) and large blocks come from the heap too (no per-block mmap). Returns
    False where the C library is not glibc (nothing changed)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    # 32 MiB: glibc's largest mmap threshold on 64-bit; past it, blocks are mapped anyway
    return bool(mallopt(_M_TRIM_THRESHOLD, 2**30)) and bool(mallopt(_M_MMAP_THRESHOLD, 32 * 2**20))


def spread(values: list[float]) -> dict:
    """{"min", "median", "max"} of the values."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(
    contenders: dict[str, Callable[[], object]],
    *,
    rounds: int = 3,
    repeats: int = 3,
    warmup: int = 2,
    sync: Callable[[], None] | None = None,
    slow_limit: float | None = None,
) -> dict[str, dict]:
    """Time ``contenders`` interleaved: ``warmup`` runs of each, then ``rounds`` rounds in which
    every contender runs ``repeats`` times (once, when its first warm-up run took longer than
    ``slow_limit`` seconds), in turn. ``sync`` runs before and after every timed run (e.g.
    ``torch.cuda.synchronize``).

    Returns, per contender: ``seconds`` and ``cpu_seconds`` (spread over the rounds of each
    round's median run), ``page_faults`` (median minor page faults per run), ``runs`` per round,
    and ``rounds_seconds`` (the per-round medians, for :func:`round_ratio`).
    """
    sync = sync or (lambda: None)
    per_round = dict.fromkeys(contenders, repeats)
    for name, fn in contenders.items():
        for _ in range(max(warmup, 1)):
            start = time.perf_counter()
            fn()
            if slow_limit is not None and time.perf_counter() - start > slow_limit:
                per_round[name] = 1  # slow: no more warm-up, one run per round
                break
    wall = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    faults = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            runs = []
            for _ in range(per_round[name]):
                sync()
                f, c, t = _faults(), time.process_time(), time.perf_counter()
                fn()
                sync()
                runs.append((time.perf_counter() - t, time.process_time() - c, _faults() - f))
            wall[name].append(statistics.median(r[0] for r in runs))
            cpu[name].append(statistics.median(r[1] for r in runs))
            faults[name] += [r[2] for r in runs]
    out = {}
    for name in contenders:
        out[name] = {
            "seconds": spread(wall[name]),
            "cpu_seconds": spread(cpu[name]),
            "page_faults": statistics.median(faults[name]),
            "runs": per_round[name],
            "rounds_seconds": wall[name],
        }
    return out


def round_ratio(timed: dict[str, dict], a: str, b: str) -> dict:
    """The spread of a's time over b's, taken within each round of :func:`measure` (runs seconds
    apart, so a change of load between rounds cancels)."""
    return spread([x / y for x, y in zip(timed[a]["rounds_seconds"], timed[b]["rounds_seconds"])])


# ---- results -------------------------------------------------------------------------------


#: the line a result's Markdown ends with when its model had random weights (``meta.weights``)
RANDOM_WEIGHTS_NOTE = (
    "\nWeights: random (the model's architecture and config; timings only): `benchmarks/gpu_device.sh` "
    "ran this on a machine the model file could not reach.\n"
)


def write_results(out: Path, name: str, payload: dict, write_markdown: Callable[..., object], *args) -> str:
    """Write ``out/<name>.json`` (``payload``) and ``out/<name>.md`` (``write_markdown(path,
    *args)``), print the Markdown and return it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    md = out / f"{name}.md"
    write_markdown(md, *args)
    if payload.get("meta", {}).get("weights"):
        with md.open("a") as f:
            f.write(RANDOM_WEIGHTS_NOTE)
    text = md.read_text()
    print(text)
    return text
