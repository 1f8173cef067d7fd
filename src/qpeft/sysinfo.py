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
