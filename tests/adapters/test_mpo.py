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


def _reference_dense(tt: TensorTrain) -> torch.Tensor:
    """The (d_out, d_in) matrix from one einsum over all cores (independent of TensorTrain)."""
    k = len(tt.cores)
    letters = "abcdefghijklmnopqrstuvwxyz"
    bonds, ins, outs = letters[: k + 1], letters[k + 1 : 2 * k + 1], letters[2 * k + 1 : 3 * k + 1]
    spec = ",".join(f"{bonds[m]}{ins[m]}{outs[m]}{bonds[m + 1]}" for m in range(k))
    full = torch.einsum(f"{spec}->{bonds[0]}{outs}{ins}{bonds[k]}", *tt.cores)
    return full.reshape(tt.d_out, tt.d_in)


@pytest.mark.parametrize(
    "in_f,out_f,bond",
    [([4, 6, 3], [2, 2, 2], 3), ([8, 8], [4, 2], 5), ([2, 2, 2], [4, 6, 3], 3), ([24, 24], [4, 2], 6)],
)
def test_both_contraction_orders_equal_the_einsum_matrix(in_f, out_f, bond):
    torch.manual_seed(0)
    tt = TensorTrain(in_f, out_f, bond).double()
    x = torch.randn(3, 5, math.prod(in_f), dtype=torch.float64)
    expected = x @ _reference_dense(tt).T
    torch.testing.assert_close(tt.forward_sequential(x), expected)
    torch.testing.assert_close(tt.forward_dense(x), expected)
    torch.testing.assert_close(tt.dense(), _reference_dense(tt))


def test_contraction_order_follows_the_shapes():
    """SmolLM2's q_proj factors (576 -> 8 -> 576, D = 6) on 4 x 128 tokens: cores first is
    cheaper; a square 4096 x 4096 operator on a few tokens: one core at a time."""
    down = TensorTrain([24, 24], [4, 2], 6)
    up = TensorTrain([4, 2], [24, 24], 6)
    assert down.dense_is_cheaper(512) and up.dense_is_cheaper(512)
    square = TensorTrain([64, 64], [64, 64], 4)
    assert not square.dense_is_cheaper(8)
    sequential, dense = square._contraction_costs(8)
    # right to left: 8 * 4096 * 64 * 4 (last core), then 8 * 64 * 64 * 4 * 64 (first core)
    assert sequential == 8 * 4096 * 64 * 4 + 8 * 64 * 64 * 4 * 64
    assert dense == 64 * 64 * 4 * 64 * 64 + 8 * 4096 * 4096


def test_recompute_applies_to_the_sequential_order_only():
    square = TensorTrain([16, 16], [16, 16], 2, recompute=True)
    x = torch.randn(2, 256, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        square(x).sum().backward()
    assert not square.dense_is_cheaper(2)
    assert sum(saved) <= x.numel()  # the checkpoint keeps its input only
    grad = x.grad.clone()
    x.grad = None
    (x @ _reference_dense(square).T).sum().backward()
    torch.testing.assert_close(grad, x.grad)
