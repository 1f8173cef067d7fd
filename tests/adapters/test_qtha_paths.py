"""QTHA weights mode: the folded B (I + M) path and the unfolded one give the merged delta."""

import torch

from qpeft.adapters import QTHAConfig
from qpeft.adapters.qtha.layer import QTHALayer


def test_weights_mode_delta_on_few_and_many_tokens_equals_merged_weight():
    torch.manual_seed(0)
    layer = QTHALayer(
        torch.nn.Linear(64, 48).double(), QTHAConfig(r=4, bond_dim=3, qnn_mode="weights", target_modules=["x"])
    )
    layer.qnn.double()
    torch.nn.init.normal_(layer.mpo_B.cores[-1])
    for tokens in (1, 300):  # B applied core by core (few tokens), and B (I + M) folded (many)
        x = torch.randn(tokens, 64, dtype=torch.float64)
        folded = layer.mpo_B.dense_is_cheaper(tokens)
        assert folded == (tokens == 300)
        a, b = layer.mpo_A.dense(), layer.mpo_B.dense()
        expected = x @ (b @ (torch.eye(4, dtype=torch.float64) + layer.mixing()) @ a).T
        torch.testing.assert_close(layer.delta(x), expected)
