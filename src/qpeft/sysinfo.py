"""Facts about the machine that reports and benchmarks record (no training stack imported)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def accelerator() -> str:
    """Where qpeft trains: the GPU's name when PyTorch sees one (``qpeft train`` and ``compare``
    train there then), else ``"the CPU"``. Imports torch on first call."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA)"
    return "the CPU"


def machine() -> dict:
    """Where a run trains, as its ``results.json`` records it (``machine``): the processor, the
    operating system, the accelerator (:func:`accelerator`) and the PyTorch version."""
    import torch

    return {
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "accelerator": accelerator(),
        "torch": torch.__version__,
    }


def describe(recorded: dict) -> str:
    """One line for a :func:`machine` record: "CPU, OS, trained on ACCELERATOR (torch VERSION)"."""
    return (
        f"{recorded.get('cpu', '?')}, {recorded.get('platform', '?')}, trained on "
        f"{recorded.get('accelerator', '?')} (torch {recorded.get('torch', '?')})"
    )
