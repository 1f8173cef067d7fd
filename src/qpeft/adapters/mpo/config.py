"""MPO: ``delta(x) = B A x`` with A and B matrix product operators (tensor trains)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qpeft.adapters.config import TensorTrainFields


@dataclass
class MPOConfig(TensorTrainFields):
    """A LoRA whose two factors are tensor trains with bond dimension ``bond_dim``."""

    method: ClassVar[str] = "mpo"
