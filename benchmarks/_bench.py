"""What the benchmark scripts share: the ``meta`` record of a run (command line, machine,
versions, load) and the results tail (``<name>.json`` and ``<name>.md`` in the out folder).

The scripts run as ``python benchmarks/X.py`` (this folder is then first on ``sys.path``) and
put the folder on ``sys.path`` themselves for ``runpy`` and ``importlib``. Only the standard
library is imported at module level: ``overhead.py`` re-runs itself as a child on another
source tree (``--baseline-src``, via ``PYTHONPATH``), which may predate ``qpeft.sysinfo``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


def command(script: str, argv: list[str] | None) -> str:
    """The command line as recorded: ``python benchmarks/<script> <args>``."""
    return f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def run_meta(
    script: str,
    argv: list[str] | None,
    device: str | None = None,
    *,
    threads: bool = True,
    ram: bool = False,
    shared: bool = True,
    loadavg_start: tuple[float, float, float] | None = None,
    finished: bool = False,
) -> dict:
    """A run's ``meta``, keys in this order: command, cpu (`` + <GPU name>`` when ``device`` is
    "cuda"), threads (unless ``threads=False``), ram_gib (with ``ram=True``), torch, date, then
    on a shared machine (``shared=True``) loadavg_start (now, or the one given), loadavg_end
    (only with ``finished=True``; else stamp it with :func:`finish`) and shared_machine. The
    script adds its own keys after these: ``run_meta(...) | {...}``."""
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
    if shared:
        meta["loadavg_start"] = loadavg_start if loadavg_start is not None else os.getloadavg()
        if finished:
            meta["loadavg_end"] = os.getloadavg()
        meta["shared_machine"] = True
    return meta


def finish(meta: dict) -> dict:
    """Stamp the load average at the end of the run (``loadavg_end``, the last key)."""
    meta["loadavg_end"] = os.getloadavg()
    return meta


def write_results(out: Path, name: str, payload: dict, write_markdown: Callable[..., object], *args) -> str:
    """Write ``out/<name>.json`` (``payload``) and ``out/<name>.md`` (``write_markdown(path,
    *args)``), print the Markdown and return it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    md = out / f"{name}.md"
    write_markdown(md, *args)
    text = md.read_text()
    print(text)
    return text
