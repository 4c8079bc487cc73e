"""Encoders: embed each date (band values + acquisition day), then relate the dates.

Every encoder maps a batch ``values`` (B, T, C), ``days`` (B, T), ``mask`` (B, T; True on valid
dates) to per-date features (B, T, d_model). Features of padded dates are meaningless and must be
ignored downstream (decoders pool with the mask); features of valid dates never depend on padding.
"""

import math
from typing import Any

import torch
from torch import Tensor, nn

from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.gp_block import GroupPropagationBlock
from cmap.ml.layers import BatchNorm1dAnyBatch, MaskedConvBlock, zero_masked


class SeriesEncoder(nn.Module):
    """Shared embedding step: ``bands_encoder(values) + position_encoder(days)``, then dropout.

    Its arguments are every encoder's (subclasses take their own and pass these on, by keyword):

    Args:
        position_encoder: date embedding, width ``d_model``; default: ``PositionalEncoding(d_model,
            tau=1000, max_len=1000)``, days 0-999 (a season, or a year and its margins).
        bands_encoder: band embedding, output width ``d_model``; default: ``PixelEncoding([null,
            d_model])``, one linear layer from the data's bands (its count taken from the data).
        d_model: token width.
        dropout_p: dropout on the embedding (and, in the subclasses that say so, inside the layers).
    """

    def __init__(
        self,
        position_encoder: PositionalEncoding | None = None,
        bands_encoder: PixelEncoding | None = None,
        d_model: int = 256,
        dropout_p: float = 0.1,
    ) -> None:
        super().__init__()
        # Sized by d_model when not given, so a config states the width once.
        position_encoder = position_encoder or PositionalEncoding(d_model, tau=1000, max_len=1000)
        bands_encoder = bands_encoder or PixelEncoding([None, d_model])
        for name, width in (("position_encoder", position_encoder.d_model), ("bands_encoder", bands_encoder.d_model)):
            if width != d_model:
                raise ValueError(f"{type(self).__name__}: {name} produces width {width}, expected d_model={d_model}")
        self.position_encoder = position_encoder
        self.bands_encoder = bands_encoder
        self.d_model = d_model
        self.dropout_p = dropout_p
        self.embedding_dropout = nn.Dropout(dropout_p)

    @property
    def num_bands(self) -> int | None:
        """Number of band values per date the encoder expects (None until bound to the data)."""
        return self.bands_encoder.num_bands

    def bind_bands(self, num_bands: int) -> None:
        """Take the data's band count when the band embedding left it open (``sizes[0]`` null)."""
        self.bands_encoder.bind_bands(num_bands)

    def embed(self, values: Tensor, days: Tensor) -> Tensor:
        return self.embedding_dropout(self.bands_encoder(values) + self.position_encoder(days))

    def forward(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError


class TransformerEncoder(SeriesEncoder):
    """Pre-norm ``torch.nn.TransformerEncoder`` over the embedded dates.

    Padded dates are excluded with a key padding mask. :meth:`forward` asks for no attention
    weights, so PyTorch uses its fused scaled-dot-product attention; :meth:`forward_with_attention`
    additionally returns the weights of every layer and head, for logging.

    Args:
        n_att_head: attention heads per layer.
        n_att_layers: number of layers.
        dim_feedforward: hidden width of the feed-forward networks (default ``4 * d_model``).
        **kwargs: :class:`SeriesEncoder`'s ``position_encoder``, ``bands_encoder``, ``d_model`` (256)
            and ``dropout_p`` (0.1: on the embedding and inside every layer).
    """

    def __init__(
        self, n_att_head: int = 8, n_att_layers: int = 4, dim_feedforward: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        d_model, dropout_p = self.d_model, self.dropout_p
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_att_head,
            dim_feedforward=dim_feedforward or 4 * d_model,
            dropout=dropout_p,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors do not support pre-norm layers; say so rather than let PyTorch warn.
        self.transformer = nn.TransformerEncoder(
            layer, n_att_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )

    def forward(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        return self.transformer(self.embed(values, days), src_key_padding_mask=~mask)

    def forward_with_attention(self, values: Tensor, days: Tensor, mask: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Features and, per layer, attention weights (B, heads, T, T) (rows: queries)."""
        padding = ~mask
        x = self.embed(values, days)
        attention = []
        for layer in self.transformer.layers:
            # Recompute the layer's attention with weights; the layer itself then runs unchanged,
            # so features are exactly those of forward().
            query = layer.norm1(x) if layer.norm_first else x
            _, weights = layer.self_attn(
                query, query, query, key_padding_mask=padding, need_weights=True, average_attn_weights=False
            )
            attention.append(weights)
            x = layer(x, src_key_padding_mask=padding)
        return self.transformer.norm(x), attention


class ExchangerEncoder(SeriesEncoder):
    """Stack of group-propagation blocks (:mod:`cmap.ml.gp_block`), linear in the number of dates.

    Args:
        n_groups: group tokens per block.
        n_att_head: heads of the collect/distribute cross-attentions.
        n_blocks: number of blocks.
        **kwargs: :class:`SeriesEncoder`'s ``position_encoder``, ``bands_encoder``, ``d_model`` (256)
            and ``dropout_p`` (0.1: on the embedding and inside every block).
    """

    def __init__(self, n_groups: int = 16, n_att_head: int = 8, n_blocks: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        d_model, dropout_p = self.d_model, self.dropout_p
        self.blocks = nn.ModuleList(
            GroupPropagationBlock(d_model, n_groups, n_att_head, dropout_p) for _ in range(n_blocks)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        x = self.embed(values, days)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class TempCNNEncoder(SeriesEncoder):
    """TempCNN (Pelletier et al. 2019): 1-D convolutions over the date axis, per-date features out.

    Each block is a convolution of ``kernel_size`` dates ('same' padding, so T dates in, T out),
    batch norm, ReLU and dropout (:class:`~cmap.ml.layers.MaskedConvBlock`). Masked dates
    (padding, clouds, date dropout) are zeroed at the input of every block and in its output, and
    the batch norm's statistics count valid dates only, so features of valid dates never depend
    on the values of masked ones; masked dates' features are 0.

    How dates are positioned: the convolutions see the *order* of the dates (a date's neighbours
    in the series, whatever their days); the *day* of each date enters through the base's date
    embedding, ``bands_encoder(values) + position_encoder(days)``, added before the first block,
    so irregular calendars are told apart. The receptive field is ``n_layers * (kernel_size - 1) +
    1`` dates (13 with the defaults).

    Decoder contract: like every encoder, per-date features (B, T, d_model). The pooling decoders
    (:class:`~cmap.ml.decoders.MultiClassClassification`) work on any series; TempCNN's own
    flatten + dense head, which keeps where in the series each feature is, is
    :class:`~cmap.ml.decoders.FlattenClassification`, for data on a fixed date grid.

    Args:
        n_layers: number of convolution blocks (Pelletier et al.: 3).
        kernel_size: dates per convolution window, odd (Pelletier et al.: 5).
        dropout_p: dropout after every block (Pelletier et al.: 0.2).
        embedding_dropout_p: dropout on the date embedding (the base's ``dropout_p``; TempCNN has none).
        **kwargs: :class:`SeriesEncoder`'s ``position_encoder``, ``bands_encoder`` (``[C, d_model]``:
            one linear layer) and ``d_model`` (the filters of every convolution, and the feature
            width; Pelletier et al.: 64).
    """

    def __init__(
        self, n_layers: int = 3, kernel_size: int = 5, dropout_p: float = 0.2, embedding_dropout_p: float = 0.0,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(dropout_p=embedding_dropout_p, **kwargs)
        self.blocks = nn.ModuleList(
            MaskedConvBlock(self.d_model, self.d_model, kernel_size, dropout_p) for _ in range(n_layers)
        )

    def forward(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        x = zero_masked(self.embed(values, days), mask)
        for block in self.blocks:
            x = block(x, mask)
        return x


class LTAEEncoder(SeriesEncoder):
    """Lightweight temporal attention encoder (L-TAE, Garnot & Landrieu 2020): pools the series.

    Each of ``n_head`` heads has one learnt *master query* (no query per date): it scores every
    valid date by its key (a ``d_k``-wide projection of the date's embedding, day included), and
    averages its own slice of ``d_model / n_head`` embedding channels with the softmax of those
    scores. The heads' outputs, concatenated, go through a dense layer, batch norm, ReLU, dropout
    and a layer norm: one vector per series.

    Decoder contract: a pooled encoder still returns per-date features (B, T, d_model), its pooled
    vector on every valid date and 0 on masked dates. The masked mean of the pooling decoders
    (``MultiClassClassification``, ``ProjectionHead``, the embedding projector) gives back exactly
    that vector, so every task, decoder, callback and ``init_encoder_from`` works unchanged, at the
    cost of a (B, T, d_model) tensor; decoders that need each date's own features (reconstruction
    for pretraining, ``FlattenClassification``) get nothing from it. :meth:`pool` returns (B, d_model).

    Args:
        n_head: heads (master queries); must divide ``d_model`` (L-TAE: 16).
        d_k: width of queries and keys (L-TAE: 8).
        dropout_p: dropout on the attention weights and after the dense layer.
        embedding_dropout_p: dropout on the date embedding (the base's ``dropout_p``).
        **kwargs: :class:`SeriesEncoder`'s ``position_encoder``, ``bands_encoder`` and ``d_model``
            (the embedding width, split among the heads, and the output width; L-TAE: 128).
    """

    def __init__(
        self, n_head: int = 16, d_k: int = 8, dropout_p: float = 0.2, embedding_dropout_p: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(dropout_p=embedding_dropout_p, **kwargs)
        d_model = self.d_model
        if d_model % n_head:
            raise ValueError(f"LTAEEncoder: n_head={n_head} must divide d_model={d_model}")
        self.n_head, self.d_k = n_head, d_k
        self.in_norm = nn.LayerNorm(d_model)
        self.keys = nn.Linear(d_model, n_head * d_k)
        self.queries = nn.Parameter(torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k))
        self.attention_dropout = nn.Dropout(dropout_p)
        self.out = nn.Sequential(
            nn.Linear(d_model, d_model), BatchNorm1dAnyBatch(d_model), nn.ReLU(), nn.Dropout(dropout_p),
            nn.LayerNorm(d_model),
        )  # fmt: skip

    def attention(self, values: Tensor, days: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The embedded dates (B, T, d_model) and each head's weights over the dates (B, n_head, T)."""
        x = self.in_norm(self.embed(values, days))
        b, t, _ = x.shape
        keys = self.keys(x).view(b, t, self.n_head, self.d_k)
        scores = torch.einsum("bthk,hk->bht", keys, self.queries) / math.sqrt(self.d_k)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        # A series without any valid date would give NaN weights: it gets none.
        weights = torch.softmax(scores, dim=-1).masked_fill(~mask.unsqueeze(1), 0.0)
        return x, self.attention_dropout(weights)

    def pool(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        """One vector per series (B, d_model)."""
        x, weights = self.attention(values, days, mask)
        b, t, d = x.shape
        heads = torch.einsum("bht,bthc->bhc", weights, x.view(b, t, self.n_head, d // self.n_head))
        return self.out(heads.reshape(b, d))

    def forward(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        return zero_masked(self.pool(values, days, mask).unsqueeze(1).expand(-1, mask.shape[1], -1), mask)
