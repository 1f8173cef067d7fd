"""LoRA layer: ``delta(x) = B A x``; initialised as PEFT does (A Kaiming-uniform, B zero)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qpeft.adapters.base import AdapterLayer
from qpeft.adapters.lora.config import LoraConfig


class LoraLayer(AdapterLayer):
    """A frozen linear layer plus a LoRA delta ``scaling * B (A x)``.

    ``A`` (``lora_A``, (r, d_in)) starts Kaiming-uniform, as in PEFT, and ``B`` (``lora_B``,
    (d_out, r)) at zero, so a fresh adapter changes nothing. Mergeable: ``delta_factors()`` is
    ``(A, B)``.

    Args:
        base_layer: the ``nn.Linear`` (or GPT-2 ``Conv1D``) to wrap; its weights stay frozen.
        config: the :class:`~qpeft.adapters.lora.config.LoraConfig` (r, alpha, dropout).
    """

    def __init__(self, base_layer: nn.Module, config: LoraConfig):
        super().__init__(base_layer, config)
        kw = {"dtype": self.weight_dtype, "device": self.weight_device}
        self.lora_A = nn.Parameter(torch.empty(config.r, self.d_in, **kw))  # (r, d_in)
        self.lora_B = nn.Parameter(torch.zeros(self.d_out, config.r, **kw))  # (d_out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x.to(self.lora_A.dtype), self.lora_A), self.lora_B)

    def delta_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_A, self.lora_B
