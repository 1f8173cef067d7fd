"""Matrix product operators (tensor trains) as ``nn.Module`` maps ``R^d_in -> R^d_out``.

Core m has shape ``(D_{m-1}, i_m, j_m, D_m)`` with ``D_0 = D_k = 1``; ``d_in = prod(i)``,
``d_out = prod(j)``, both indexed with the first factor most significant.

The forward pass contracts the network {x, core_1, ..., core_k} in the cheaper of two orders
for the shapes at hand (counted in multiply-adds): the input with one core at a time
(``forward_sequential``: never builds the (d_out, d_in) matrix, the order for large square
maps and few tokens), or the cores first and then one GEMM (``forward_dense``: the order
for an adapter factor d -> r on many tokens, where the contracted matrix is no larger than a
LoRA factor and the tokens meet a single product instead of k products and permutes). With
``recompute=True`` the sequential order recomputes its intermediates in backward; the dense
order keeps only x and the (d_out, d_in) matrix, so it has none to drop.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def balanced_factors(d: int, k: int) -> list[int]:
    """Factor ``d`` into ``k`` factors (1 allowed) as balanced as possible, largest first:
    the prime factors, largest first, each go to the currently smallest factor."""
    if d < 1 or k < 1:
        raise ValueError(f"cannot factor d = {d} into k = {k} factors")
    primes, rest, p = [], d, 2
    while p * p <= rest:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    if rest > 1:
        primes.append(rest)
    factors = [1] * k
    for prime in sorted(primes, reverse=True):
        factors[factors.index(min(factors))] *= prime
    return sorted(factors, reverse=True)


def check_factors(name: str, factors: list[int], d: int) -> list[int]:
    """Check an explicit factorisation of a dimension.

    Args:
        name: the config field it came from (for the message), e.g. ``"in_factors"``.
        factors: the factors given.
        d: the dimension they must multiply to.

    Returns:
        ``factors`` as a new list.

    Raises:
        ValueError: the product of ``factors`` is not ``d`` (naming the field, the factors and both
            numbers).
    """
    if math.prod(factors) != d:
        raise ValueError(f"`{name}` {factors} multiply to {math.prod(factors)}, but the dimension is {d}")
    return list(factors)


def bond_dims(in_factors: list[int], out_factors: list[int], bond_dim: int) -> list[int]:
    """[D_0, ..., D_k]: ``bond_dim`` capped at the largest rank each cut can carry."""
    sizes = [i * j for i, j in zip(in_factors, out_factors)]
    k = len(sizes)
    dims = [1]
    for m in range(1, k):
        left, right = math.prod(sizes[:m]), math.prod(sizes[m:])
        dims.append(min(bond_dim, left, right))
    return dims + [1]


class TensorTrain(nn.Module):
    """y = W x with W a matrix product operator; ``zero_last`` makes W exactly zero at init."""

    def __init__(
        self,
        in_factors: list[int],
        out_factors: list[int],
        bond_dim: int,
        *,
        init_var: float = 1.0,
        zero_last: bool = False,
        recompute: bool = False,
        dtype=None,
        device=None,
    ):
        super().__init__()
        self.recompute = recompute
        if len(in_factors) != len(out_factors):
            raise ValueError(f"in and out factorisations differ in length: {in_factors} vs {out_factors}")
        self.in_factors, self.out_factors = list(in_factors), list(out_factors)
        dims = bond_dims(self.in_factors, self.out_factors, bond_dim)
        k = len(self.in_factors)
        # Var(W) = prod_m std_m^2 * prod(internal bonds): spread init_var evenly over the cores.
        std = (init_var / math.prod(dims[1:-1])) ** (1 / (2 * k))
        cores = []
        for m, (i, j) in enumerate(zip(self.in_factors, self.out_factors)):
            shape = (dims[m], i, j, dims[m + 1])
            if zero_last and m == k - 1:
                cores.append(nn.Parameter(torch.zeros(shape, dtype=dtype, device=device)))
            else:
                cores.append(nn.Parameter(torch.randn(shape, dtype=dtype, device=device) * std))
        self.cores = nn.ParameterList(cores)

    @property
    def d_in(self) -> int:
        """Input size of the map, the product of ``in_factors``."""
        return math.prod(self.in_factors)

    @property
    def d_out(self) -> int:
        """Output size of the map, the product of ``out_factors``."""
        return math.prod(self.out_factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // self.d_in if self.d_in else 0
        if self.dense_is_cheaper(tokens):
            return self.forward_dense(x)
        if self.recompute and self.training and torch.is_grad_enabled():
            return checkpoint(self.forward_sequential, x, use_reentrant=False)
        return self.forward_sequential(x)

    def _contraction_costs(self, tokens: int) -> tuple[int, int]:
        """(sequential, dense) multiply-adds of one forward on ``tokens`` rows."""
        dims = [c.shape[0] for c in self.cores] + [1]
        k = len(self.cores)
        sequential = 0
        if self.d_in >= self.d_out:  # right to left: core m maps (i_m, D_m) -> (j_m, D_{m-1})
            done = 1
            for m in reversed(range(k)):
                left = math.prod(self.in_factors[: m + 1])
                sequential += tokens * done * left * dims[m + 1] * self.out_factors[m] * dims[m]
                done *= self.out_factors[m]
        else:  # left to right: core m maps (D_{m-1}, i_m) -> (j_m, D_m)
            done = 1
            for m in range(k):
                rest = math.prod(self.in_factors[m:])
                sequential += tokens * done * dims[m] * rest * self.out_factors[m] * dims[m + 1]
                done *= self.out_factors[m]
        build, i_acc, j_acc = 0, self.in_factors[0], self.out_factors[0]
        for m in range(1, k):
            build += i_acc * j_acc * dims[m] * self.in_factors[m] * self.out_factors[m] * dims[m + 1]
            i_acc, j_acc = i_acc * self.in_factors[m], j_acc * self.out_factors[m]
        return sequential, build + tokens * self.d_in * self.d_out

    def dense_is_cheaper(self, tokens: int) -> bool:
        """Whether contracting the cores first, then one GEMM, costs fewer multiply-adds."""
        sequential, dense = self._contraction_costs(tokens)
        return dense <= sequential

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Cores first (a (d_out, d_in) matrix), then one GEMM over all tokens."""
        return x @ self.dense().T

    def forward_sequential(self, x: torch.Tensor) -> torch.Tensor:
        """The input contracted with one core at a time (no (d_out, d_in) matrix)."""
        lead = x.shape[:-1]
        x = x.reshape(-1, self.d_in)
        # A down-projection reads its large input with plain GEMMs from the last core on;
        # an up-projection writes its large output in final order from the first core on.
        out = self._right_to_left(x) if self.d_in >= self.d_out else self._left_to_right(x)
        return out.reshape(*lead, self.d_out)

    def _left_to_right(self, x: torch.Tensor) -> torch.Tensor:
        t = x  # (tokens * J done, D * I left), with I left = i_m * rest
        for core in self.cores:
            d_prev, i, j, d_next = core.shape
            rows, rest = t.shape[0], t.shape[1] // (d_prev * i)
            mat = core.permute(2, 3, 0, 1).reshape(j * d_next, d_prev * i)  # (j D', D i)
            if rest == 1:
                t = t @ mat.T  # (rows, j D')
            else:
                t = torch.matmul(mat, t.reshape(rows, d_prev * i, rest))  # (rows, j D', rest)
            t = t.reshape(rows * j, d_next * rest)
        return t.reshape(x.shape[0], self.d_out)

    def _right_to_left(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.shape[0]
        t = x.reshape(tokens, 1, self.d_in, 1)  # (tokens, J done, I left, D)
        for core in reversed(self.cores):
            d_prev, i, j, d_next = core.shape
            _, done, left, _ = t.shape
            mat = core.permute(1, 3, 2, 0).reshape(i * d_next, j * d_prev)  # (i D, j D_prev)
            t = t.reshape(-1, i * d_next) @ mat  # contracts the two trailing axes: one GEMM
            t = t.reshape(tokens, done, left // i, j, d_prev).permute(0, 3, 1, 2, 4)  # j joins the front
            t = t.reshape(tokens, j * done, left // i, d_prev)
        return t.reshape(tokens, self.d_out)

    def dense(self) -> torch.Tensor:
        """The (d_out, d_in) matrix of the operator (for merging and export), contracted
        core by core over the bonds, independently of ``forward``."""
        full = self.cores[0][0]  # (I, J, D): I, J grow as the cores are absorbed
        for core in self.cores[1:]:
            i_acc, j_acc, d = full.shape
            _, i, j, d_next = core.shape
            # one GEMM over the bond: (I J, D) x (D, i j D'), then interleave (I, i) and (J, j)
            prod = full.reshape(i_acc * j_acc, d) @ core.reshape(d, i * j * d_next)
            prod = prod.reshape(i_acc, j_acc, i, j, d_next)
            full = prod.permute(0, 2, 1, 3, 4).reshape(i_acc * i, j_acc * j, d_next)
        return full[:, :, 0].T  # (d_out, d_in)

    @classmethod
    def from_dense(
        cls, matrix: torch.Tensor, in_factors: list[int], out_factors: list[int], bond_dim: int
    ) -> TensorTrain:
        """TT-SVD of a (d_out, d_in) matrix: exact when ``bond_dim`` reaches the ranks of
        its unfoldings, else the truncated (quasi-optimal) approximation."""
        tt = cls(in_factors, out_factors, bond_dim, dtype=matrix.dtype, device=matrix.device)
        k = len(in_factors)
        # (j_1..j_k, i_1..i_k) -> (i_1 j_1, ..., i_k j_k)
        t = matrix.reshape(*out_factors, *in_factors)
        t = t.permute([p for m in range(k) for p in (k + m, m)])
        rest, rank = t.reshape(-1), 1
        with torch.no_grad():
            for m in range(k - 1):
                i, j = in_factors[m], out_factors[m]
                unfolding = rest.reshape(rank * i * j, -1)
                u, s, vh = torch.linalg.svd(unfolding, full_matrices=False)
                keep = tt.cores[m].shape[-1]
                tt.cores[m].copy_(u[:, :keep].reshape(rank, i, j, keep))
                rest = (s[:keep, None] * vh[:keep]).reshape(-1)
                rank = keep
            tt.cores[k - 1].copy_(rest.reshape(rank, in_factors[-1], out_factors[-1], 1))
        return tt

    def extra_repr(self) -> str:
        return f"in={self.in_factors}, out={self.out_factors}, bonds={[c.shape[0] for c in self.cores][1:]}"
