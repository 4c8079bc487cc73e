"""Group-propagation block (Exchanger, Cai et al. 2023, after GPViT, Yang et al. 2023).

A small set of K learned *group tokens* exchanges information between the T date tokens of a
series, so a block costs O(T*K) instead of self-attention's O(T^2):

1. collect: the groups attend to the date tokens (cross-attention; padded dates masked);
2. update: an MLP-mixer mixes the groups among themselves and along channels;
3. distribute: the date tokens attend to the updated groups (cross-attention);
4. a position-wise feed-forward network, as in a transformer layer.

Every step is pre-norm with a residual connection.
"""

import torch
from torch import Tensor, nn

from cmap.ml.mlp import mlp


class MixerBlock(nn.Module):
    """MLP-mixer layer (Tolstikhin et al. 2021) over a fixed number of tokens.

    Shapes: (B, K, D) -> (B, K, D).
    """

    def __init__(self, num_tokens: int, d_model: int, dropout_p: float = 0.0) -> None:
        super().__init__()
        self.token_norm = nn.LayerNorm(d_model)
        self.token_mlp = mlp([num_tokens, num_tokens * 2, num_tokens], dropout_p)
        self.channel_norm = nn.LayerNorm(d_model)
        self.channel_mlp = mlp([d_model, d_model * 2, d_model], dropout_p)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.token_mlp(self.token_norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.channel_norm(x))


class GroupPropagationBlock(nn.Module):
    """Collect, update and distribute through ``n_groups`` learned group tokens.

    Args:
        d_model: token width.
        n_groups: number of group tokens K.
        n_heads: attention heads of the two cross-attentions.
        dropout_p: dropout in attentions and MLPs.
        ffn_ratio: width of the feed-forward network relative to ``d_model``.

    Shapes: x (B, T, D), mask (B, T) bool, True on valid dates -> (B, T, D). The block is
    equivariant to permutations of the dates (test_gp_block checks it).
    """

    def __init__(
        self, d_model: int, n_groups: int = 16, n_heads: int = 8, dropout_p: float = 0.1, ffn_ratio: int = 4
    ) -> None:
        super().__init__()
        self.group_tokens = nn.Parameter(torch.empty(n_groups, d_model))
        nn.init.trunc_normal_(self.group_tokens, std=0.02)
        self.collect_norm_groups = nn.LayerNorm(d_model)
        self.collect_norm_dates = nn.LayerNorm(d_model)
        self.collect = nn.MultiheadAttention(d_model, n_heads, dropout=dropout_p, batch_first=True)
        self.update = MixerBlock(n_groups, d_model, dropout_p)
        self.distribute_norm_dates = nn.LayerNorm(d_model)
        self.distribute_norm_groups = nn.LayerNorm(d_model)
        self.distribute = nn.MultiheadAttention(d_model, n_heads, dropout=dropout_p, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = mlp([d_model, d_model * ffn_ratio, d_model], dropout_p)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        groups = self.group_tokens.expand(x.shape[0], -1, -1)
        dates = self.collect_norm_dates(x)
        collected, _ = self.collect(
            self.collect_norm_groups(groups), dates, dates, key_padding_mask=~mask, need_weights=False
        )
        groups = self.update(groups + collected)
        groups = self.distribute_norm_groups(groups)
        distributed, _ = self.distribute(self.distribute_norm_dates(x), groups, groups, need_weights=False)
        x = x + self.dropout(distributed)
        return x + self.dropout(self.ffn(self.ffn_norm(x)))
