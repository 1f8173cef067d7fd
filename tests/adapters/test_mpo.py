"""Tensor trains: factorisation, core-by-core forward == dense reconstruction, exactness."""

import math

import pytest
import torch

from qpeft.adapters import MPOConfig
from qpeft.adapters.mpo.layer import MPOLayer
from qpeft.adapters.mpo.tensor_train import TensorTrain, balanced_factors, bond_dims


@pytest.mark.parametrize(
    "d,k,expected",
    [
        (576, 2, [24, 24]),
        (192, 2, [16, 12]),
        (8, 3, [2, 2, 2]),
        (7, 2, [7, 1]),
        (576, 3, [12, 8, 6]),
        (1, 2, [1, 1]),
    ],
)
def test_balanced_factors(d, k, expected):
    assert balanced_factors(d, k) == expected
    assert math.prod(balanced_factors(d, k)) == d


@pytest.mark.parametrize(
    "in_f,out_f,bond",
    [
        ([4, 6, 3], [2, 2, 2], 3),
        ([8, 8], [4, 2], 5),
        ([5], [3], 2),
        ([2, 2, 2], [4, 6, 3], 3),
        ([2, 3], [5, 4], 4),
    ],
)
def test_forward_equals_dense_reconstruction(in_f, out_f, bond):
    torch.manual_seed(0)
    tt = TensorTrain(in_f, out_f, bond).double()
    x = torch.randn(2, 3, math.prod(in_f), dtype=torch.float64)
    torch.testing.assert_close(tt(x), x @ tt.dense().T)


def test_large_bond_equals_dense_low_rank_map():
    """With the bond dimension at the ranks of the unfoldings, an MPO is any matrix: the
    TT-SVD of a dense rank-r map B A reproduces it exactly."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 72, generator=g, dtype=torch.float64)
    b = torch.randn(36, 4, generator=g, dtype=torch.float64)
    dense = b @ a
    tt = TensorTrain.from_dense(dense, [6, 12], [6, 6], bond_dim=1000)
    torch.testing.assert_close(tt.dense(), dense)
    x = torch.randn(5, 72, generator=g, dtype=torch.float64)
    torch.testing.assert_close(tt(x), x @ dense.T)
    # a too-small bond dimension cannot: the (i1 j1) x (i2 j2) unfolding has rank > 2
    assert (TensorTrain.from_dense(dense, [6, 12], [6, 6], bond_dim=2).dense() - dense).abs().max() > 1e-3


def test_bond_dims_are_capped_at_useful_rank():
    assert bond_dims([2, 2], [1, 1], 50) == [1, 2, 1]
    assert bond_dims([24, 24], [2, 4], 6) == [1, 6, 1]


def test_mpo_layer_delta_matches_its_merged_weight():
    layer = MPOLayer(torch.nn.Linear(48, 20).double(), MPOConfig(r=6, bond_dim=4, n_cores=2, target_modules=["x"]))
    torch.nn.init.normal_(layer.mpo_B.cores[-1])
    x = torch.randn(7, 48, dtype=torch.float64)
    torch.testing.assert_close(layer.delta(x), x @ layer.delta_weight().T)
    assert layer.delta_weight().shape == (20, 48)
    assert torch.linalg.matrix_rank(layer.delta_weight()) <= 6


def test_explicit_factorisations():
    cfg = MPOConfig(r=6, n_cores=2, in_factors=[8, 6], out_factors=[5, 4], rank_factors=[3, 2], target_modules=["x"])
    layer = MPOLayer(torch.nn.Linear(48, 20), cfg)
    assert layer.mpo_A.in_factors == [8, 6] and layer.mpo_A.out_factors == [3, 2]
    assert layer.mpo_B.out_factors == [5, 4]
    bad = MPOConfig(r=6, n_cores=2, in_factors=[7, 7], target_modules=["x"])
    with pytest.raises(ValueError, match=r"`in_factors` \[7, 7\] multiply to 49, but the dimension is 48"):
        MPOLayer(torch.nn.Linear(48, 20), bad)
