"""LoRA: ``delta(x) = B A x`` with A: r x d_in, B: d_out x r (B zero at init)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qpeft.adapters.config import AdapterConfig


@dataclass
class LoraConfig(AdapterConfig):
    """Low-rank adaptation, numerically identical to PEFT's LoRA."""

    method: ClassVar[str] = "lora"
