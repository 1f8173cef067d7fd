"""MPO layer: ``delta(x) = B A x`` with A: d_in -> r and B: r -> d_out tensor trains."""

from __future__ import annotations

import torch
from torch import nn

from qpeft.adapters.base import AdapterLayer
from qpeft.adapters.config import TensorTrainFields
from qpeft.adapters.mpo.tensor_train import TensorTrain, balanced_factors, check_factors


def factor_plan(config: TensorTrainFields, d_in: int, d_out: int) -> tuple[list[int], list[int], list[int]]:
    """(in_factors, rank_factors, out_factors): explicit ones checked, the rest balanced."""
    k = config.n_cores
    in_f = check_factors("in_factors", config.in_factors, d_in) if config.in_factors else balanced_factors(d_in, k)
    out_f = (
        check_factors("out_factors", config.out_factors, d_out) if config.out_factors else balanced_factors(d_out, k)
    )
    rank_f = list(config.rank_factors) if config.rank_factors else balanced_factors(config.r, k)
    return in_f, rank_f, out_f


def make_factors(layer: AdapterLayer, config: TensorTrainFields) -> tuple[TensorTrain, TensorTrain]:
    """A (d_in -> r, variance 1/d_in like Kaiming) and B (r -> d_out, last core zero).

    ``config.checkpoint``: each factor recomputes what its contraction order keeps for backward
    (the sequential order's intermediates; the dense order keeps nothing worth dropping)."""
    in_f, rank_f, out_f = factor_plan(config, layer.d_in, layer.d_out)
    kw = {"dtype": layer.weight_dtype, "device": layer.weight_device, "recompute": config.checkpoint}
    down = TensorTrain(in_f, rank_f, config.bond_dim, init_var=1.0 / layer.d_in, **kw)
    up = TensorTrain(rank_f, out_f, config.bond_dim, init_var=1.0 / config.r, zero_last=True, **kw)
    return down, up


class MPOLayer(AdapterLayer):
    """A frozen linear layer plus an MPO delta ``scaling * B (A x)``, with ``A``: d_in -> r and
    ``B``: r -> d_out each a :class:`~qpeft.adapters.mpo.tensor_train.TensorTrain`.

    ``B``'s last core starts at zero, so a fresh adapter changes nothing. Mergeable:
    ``delta_factors()`` contracts both trains to dense (r, d_in) and (d_out, r) matrices.

    Args:
        base_layer: the ``nn.Linear`` (or GPT-2 ``Conv1D``) to wrap; its weights stay frozen.
        config: an :class:`~qpeft.adapters.mpo.config.MPOConfig` (or any config with the tensor-train
            fields: r, bond_dim, n_cores, factorisations).
    """

    def __init__(self, base_layer: nn.Module, config: TensorTrainFields):
        super().__init__(base_layer, config)
        self.mpo_A, self.mpo_B = make_factors(self, config)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.mpo_B(self.mpo_A(x.to(self.weight_dtype)))

    def delta_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mpo_A.dense(), self.mpo_B.dense()  # (r, d_in), (d_out, r)
