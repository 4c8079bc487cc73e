"""Inference-only form of a trained TempCNN classifier (the default recipe's model): its predictions at the
speed of its matrix products.

:func:`inference_form` turns a trained, eval-mode :class:`~cmap.ml.classifiers.Classifier` whose encoder is
a :class:`~cmap.ml.encoders.TempCNNEncoder` and whose head is TempCNN's
(:class:`~cmap.ml.decoders.DateGridClassification` or :class:`~cmap.ml.decoders.FlattenClassification`)
into a module computing the same logits (ensembles too); ``cmap map`` runs it by default. What it changes,
each step measured by ``benchmarks/inference.py --model default`` (figures in
``benchmarks/results/performance.md``, "Default model at the roofline"):

- **Batch norms folded** into the convolution before them and the dense layer before the head's: in eval
  mode a batch norm uses its running statistics, an affine map, so ``conv(x) * scale + shift`` is one
  convolution with scaled weights and a bias. The masked batch norm's boolean selection of the valid
  dates, its scatter back and the zero-filled copies go (masked dates come out as 0 either way: they
  are multiplied by the mask after the ReLU).
- **Convolutions in the channels-last layout**: the features stay (B, T, D) in memory, seen as a
  (B, D, 1, T) channels-last image, so oneDNN runs each convolution over the short date axis as a
  blocked matrix product without the two transposed copies of ``nn.Conv1d`` on (B, D, T).
- **The date-grid head without scatter or gather on a dense grid**: when every series of the batch has
  the same days (a map's windows) and no two of them fall on one grid step, each step's features are
  one date's, or the interpolation of two (gap-filling): two row selections and one weighted sum
  instead of scatter-adds, divisions, gathers and ``where`` over the (B, steps, D) features. Other
  batches use the head's own binning (:meth:`~cmap.ml.decoders.DateGridClassification.grid_steps`).
- **One date embedding per batch** when the days are shared, and in-place ReLU and masking (fewer
  temporaries).

In bf16 (the module cast to bf16, as Lightning's ``bf16-true`` does, or under ``torch.autocast``) the
same code runs oneDNN's bf16 kernels (AVX512-BF16 / AMX CPUs, GPUs).
"""

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmap.ml.decoders import DateGridClassification, FlattenClassification, interpolation_sources
from cmap.ml.encoders import TempCNNEncoder
from cmap.ml.layers import MaskedConvBlock


@torch.no_grad()
def folded_norm(weight: Tensor, bias: Tensor | None, norm: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``norm(layer(x))`` as one layer, for a layer of ``weight`` (out, ...) and
    ``bias`` and an eval-mode batch norm ``norm`` (running statistics): computed in float64."""
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.weight is not None:
        scale, shift = scale * norm.weight.double(), shift * norm.weight.double() + norm.bias.double()
    folded_bias = shift if bias is None else bias.double() * scale + shift
    folded_weight = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    return folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)


class FoldedConv(nn.Module):
    """A :class:`~cmap.ml.layers.MaskedConvBlock`'s convolution with its batch norm folded in, on (B, T, D)
    features seen as a channels-last (B, D, 1, T) image: (B, T, in) -> (B, T, out), before the ReLU."""

    weight: Tensor
    bias: Tensor

    def __init__(self, block: MaskedConvBlock) -> None:
        super().__init__()
        weight, bias = folded_norm(block.conv.weight.detach(), block.conv.bias, block.norm)
        self.register_buffer("weight", weight.unsqueeze(2).contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias)
        self.padding = (0, block.conv.padding[0])

    def forward(self, features: Tensor) -> Tensor:
        size, num_dates, width = features.shape
        image = features.view(size, 1, num_dates, width).permute(0, 3, 1, 2)  # (B, D, 1, T), channels-last
        out = F.conv2d(image, self.weight, self.bias, padding=self.padding)
        return out.permute(0, 2, 3, 1).reshape(size, num_dates, -1)  # a view when oneDNN kept channels-last


def unsupported(classifier: nn.Module) -> str | None:
    """Why ``classifier`` has no inference form (None when it has one)."""
    encoder, decoder = getattr(classifier, "encoder", None), getattr(classifier, "decoder", None)
    if classifier.training:
        return "the model is in training mode"
    if not isinstance(encoder, TempCNNEncoder):
        return f"the encoder is a {type(encoder).__name__}, not a TempCNNEncoder"
    if not isinstance(decoder, (DateGridClassification, FlattenClassification)) or not hasattr(decoder, "dense"):
        return f"the head is a {type(decoder).__name__}, not a built DateGridClassification or FlattenClassification"
    norms = [block.norm for block in encoder.blocks] + [decoder.norm]
    if any(norm.running_mean is None for norm in norms):
        return "a batch norm keeps no running statistics"
    convs = [block.conv for block in encoder.blocks]
    if any(conv.stride != (1,) or conv.dilation != (1,) or conv.groups != 1 for conv in convs):
        return "a convolution is strided, dilated or grouped"
    return None


class FoldedTempCNN(nn.Module):
    """The inference form of one trained TempCNN classifier (see the module docstring): same inputs and
    logits as the classifier's ``forward``, for eval mode. Its weights are copies, folded at construction."""

    dense_weight: Tensor
    dense_bias: Tensor
    #: Pixels per pass through the layers (measured best on a 2 MB-L2 CPU: benchmarks/inference.py).
    chunk_size: int = 1024

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        reason = unsupported(classifier)
        if reason is not None:
            raise ValueError(f"FoldedTempCNN: no inference form: {reason}")
        encoder, decoder = classifier.encoder, classifier.decoder
        self.bands_encoder = copy.deepcopy(encoder.bands_encoder)
        self.position_encoder = copy.deepcopy(encoder.position_encoder)
        self.convs = nn.ModuleList(FoldedConv(block) for block in encoder.blocks)
        dense_weight, dense_bias = folded_norm(decoder.dense.weight.detach(), decoder.dense.bias, decoder.norm)
        self.register_buffer("dense_weight", dense_weight)
        self.register_buffer("dense_bias", dense_bias)
        self.linear = copy.deepcopy(decoder.linear)
        self.grid_head = copy.deepcopy(decoder) if isinstance(decoder, DateGridClassification) else None
        self.num_dates = getattr(decoder, "num_dates", None)

    def forward(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        shared_days = days.shape[0] > 1 and bool((days == days[:1]).all())
        logits = []
        # Chunks of pixels: their temporaries fit the caches, and the allocator reuses their memory (a
        # whole batch's, tens of MB each, is mapped afresh by the C allocator and faulted in page by page).
        for start in range(0, values.shape[0], self.chunk_size):
            chunk = slice(start, start + self.chunk_size)
            features = self.encode(values[chunk], days[:1] if shared_days else days[chunk], mask[chunk])
            logits.append(self.classify(features, mask[chunk], days[chunk], shared_days))
        return torch.cat(logits) if len(logits) != 1 else logits[0]

    def encode(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        """Per-date features (B, T, D), 0 at masked dates; ``days`` (B or 1, T)."""
        features = self.bands_encoder(values)
        features = features.add_(self.position_encoder(days).to(features.dtype))
        weights = mask.unsqueeze(-1).to(features.dtype)
        features = features.mul_(weights)
        for conv in self.convs:
            features = conv(features).relu_().mul_(weights)
        return features

    def classify(self, features: Tensor, mask: Tensor, days: Tensor, shared_days: bool) -> Tensor:
        """Logits (B, classes) of the encoder's ``features`` (the head, its batch norm folded)."""
        if self.grid_head is None:
            if features.shape[1] != self.num_dates:
                raise ValueError(
                    f"FlattenClassification was built for num_dates={self.num_dates} dates per series, got "
                    f"{features.shape[1]}: it needs a fixed date grid (use a pooling decoder otherwise)"
                )
            flat = features.flatten(1)
        else:
            date_of_step = self.date_of_step(days[0]) if shared_days else None
            if date_of_step is None:
                flat = self.grid_head.grid_steps(features, mask, days).flatten(1)
            else:
                flat = self.dense_grid(features, mask, date_of_step)
        return self.linear(F.linear(flat, self.dense_weight, self.dense_bias).relu_())

    def date_of_step(self, days: Tensor) -> Tensor | None:
        """The date index (T) on each grid step of series of ``days`` (T,), -1 where none; None when two
        dates share a step (their mean is the head's, by its own binning)."""
        num_steps = self.grid_head.date_grid.num_steps
        step = self.grid_head.step_of(days)
        on_grid = (step >= 0) & (step < num_steps)
        dates = on_grid.nonzero().squeeze(1)
        if torch.unique(step[dates]).numel() != dates.numel():
            return None
        date_of_step = torch.full((num_steps,), -1, dtype=torch.long, device=days.device)
        date_of_step[step[dates]] = dates
        return date_of_step

    def dense_grid(self, features: Tensor, mask: Tensor, date_of_step: Tensor) -> Tensor:
        """The head's flattened grid steps (B, steps * D) when each step holds at most one date, the same in
        every series (``date_of_step``): each step is its date's features, or the interpolation of two."""
        size, num_dates, width = features.shape
        has_date = date_of_step >= 0
        date = date_of_step.clamp_min(0)
        filled = mask[:, date] & has_date  # (B, S)
        if self.grid_head.empty_steps == "interpolate":
            before_at, after_at, share, any_filled = interpolation_sources(filled)
        else:  # empty steps stay 0: each filled step is its own source
            before_at = after_at = torch.arange(len(date), device=date.device).expand_as(filled)
            share, any_filled = torch.zeros(filled.shape, device=date.device), filled
        weight_after = (share * any_filled).to(features.dtype).reshape(-1, 1)
        weight_before = ((1 - share) * any_filled).to(features.dtype).reshape(-1, 1)
        first_row = torch.arange(size, device=date.device).unsqueeze(1) * num_dates  # each series' first date
        rows = features.reshape(size * num_dates, width)
        out = rows.index_select(0, (first_row + date[before_at]).flatten()).mul_(weight_before)
        out = out.addcmul_(rows.index_select(0, (first_row + date[after_at]).flatten()), weight_after)
        return out.view(size, -1)


class FoldedEnsemble(nn.Module):
    """The inference form of an ensemble (:meth:`~cmap.ml.classifiers.Classifier.ensemble_with`): the log
    of its members' mean probabilities, as the ensemble's ``forward``."""

    def __init__(self, members: list[FoldedTempCNN]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        probabilities = sum(torch.softmax(member(values, days, mask).float(), dim=-1) for member in self.members)
        return (probabilities / len(self.members)).clamp_min(1e-12).log()


def inference_form(classifier: nn.Module) -> nn.Module | None:
    """The inference form of a trained classifier (and of its ensemble members), or None when it (or a
    member) has none (:func:`unsupported`): then the classifier itself is the way to run it."""
    members = [classifier] + [member for member, _ in classifier.__dict__.get("ensemble_members", [])]
    if any(unsupported(member) is not None for member in members):
        return None
    folded = [FoldedTempCNN(member) for member in members]
    return folded[0] if len(folded) == 1 else FoldedEnsemble(folded)
