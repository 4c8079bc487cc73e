"""Consistency training on unlabelled series: FixMatch (Sohn et al. 2020) adapted to series.

With few labels and every pixel of the area at hand unlabelled, each training step also takes a
batch of unlabelled series. A *weak* view of each (light band noise) gives a pseudo-label, the
class the model predicts, kept where its probability reaches ``threshold``; the model's prediction
on a *strong* view of the same series (date dropout, stronger band noise, amplitude scaling, and
optionally a run of its dates only) is trained towards it. The loss adds ``weight`` times that cross-entropy
(averaged over the whole unlabelled batch, kept or not, as FixMatch does) to the supervised loss.

:class:`~cmap.ml.classifiers.Classifier` runs it when given ``consistency`` and batches of the form
``{"labelled": Batch, "unlabelled": Batch}`` (a data module's ``unlabelled`` series, or any
``CombinedLoader``). The labelled series and the strong views pass the model in one batch, so batch
norm statistics see both; the weak views pass it without gradient. The running state (the
:class:`Teacher`'s weights, the running means of distribution alignment and adaptive thresholds) is
outside the model's state dict but saved in the Classifier's checkpoints: a resumed fit continues it.
In a multi-process fit (DDP) the running means follow the statistics of every process's batch
(:func:`process_mean`), so each process holds the same state as the one whose checkpoint is saved (rank 0).
"""

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from cmap.data.batch import Batch
from cmap.data.perturbations import Augmentation, SeriesViews, season_resampled, time_stretched

#: :class:`Consistency`'s running state, saved in a Classifier's checkpoints.
RUNNING_MEANS = ("class_mean", "adaptive_level", "adaptive_class_mean", "source_class_mean", "source_batches")


@dataclass
class Consistency:
    """FixMatch's settings for series; the defaults are the best of the variants measured on UCR Crop
    (``benchmarks/results/pretraining.md``: stronger views, which crop runs of dates or drop more of
    them, and thresholds near 1 lost the gain).

    Attributes:
        threshold: a pseudo-label counts where the weak view's top probability reaches it. Keep it
            under ``1 - label_smoothing`` (a smoothed model's probabilities stay under that). The
            best value depends on the area: 0.6 for many confusable classes (UCR Crop's 24; 0.8
            costs a point), 0.8 where a model of the few labels already tells the classes apart
            (Mato Grosso's 9: +4.2 points over training without unlabelled series, against +2.4
            at 0.6).
        weight: the unlabelled loss's weight (FixMatch's lambda_u).
        weak_noise: band noise of the weak view (normalised units).
        min_crop, date_dropout, band_noise: the strong view (:class:`~cmap.data.perturbations.SeriesViews`):
            a run of a uniform fraction in [min_crop, 1] of the valid dates, each date of it hidden
            with probability ``date_dropout``, Gaussian band noise.
        scale: the strong view's values are multiplied by a factor drawn uniformly in
            [1 - scale, 1 + scale] per series (0: none).
        max_shift: the strong view's values move by a whole number of date positions drawn
            uniformly in [-max_shift, max_shift] per series, the days staying where they are: a
            season earlier or later (dates shifted out are dropped, those shifted in are masked).
        time_stretch: the strong view's values resampled as if the season ran a factor drawn uniformly in
            [1 - time_stretch, 1 + time_stretch] faster or slower around the middle of the valid dates,
            the days staying where they are (:func:`~cmap.data.perturbations.time_stretched`; 0: none).
        teacher_decay: when > 0, the pseudo-labels come from a teacher whose weights are the
            exponential moving average of the model's (Mean Teacher, Tarvainen & Valpola 2017) with
            this decay per step, in eval mode; 0: from the model itself, in training mode (FixMatch).
        distribution_alignment: ``false``: none. ``true`` or ``"uniform"``: the weak view's probabilities
            are divided by their running mean over the unlabelled batches (of every process, in a
            multi-process fit; momentum 0.99) and renormalised before the pseudo-label is taken
            (ReMixMatch, Berthelot et al. 2020, with a uniform class prior): classes the model
            over-predicts lose confidence, rare predictions gain it. ``"estimated"``: towards the
            unlabelled series' own class proportions instead of uniform ones: the probabilities are
            multiplied by that running mean (the target's estimated prior) over the labelled batches'
            running class frequencies (the source prior) and renormalised: Saerens et al. 2002's
            prior-shift correction (one EM step): the pseudo-labels follow the proportions the model
            predicts on the unlabelled series, freed of the training classes' imbalance, and classes
            the unlabelled series lack are not pushed onto them.
        adaptive_threshold: None: the fixed ``threshold``. ``"global"``: the threshold follows the
            model's confidence on the area, the running mean (momentum ``adaptive_momentum``) of the
            weak views' top probability (over every process's batch, in a multi-process fit),
            starting at ``threshold``: a model sure of most series (an easy area) keeps only its
            surest pseudo-labels, an unsure one keeps more.
            ``"freematch"``: FreeMatch's self-adaptive thresholds (Wang et al. 2023): that level,
            starting at 1 / classes, times each class's running mean probability over the largest
            one's, so classes the model rarely predicts pass with less (on an area whose classes are
            unbalanced, rare ones then pass with almost anything: measured in
            ``benchmarks/results/pretraining.md``).
        adaptive_momentum: the running means' momentum per step (FreeMatch uses 0.999 over a million
            steps; a few hundred steps want about 0.99).
        temperature: 0: the target is the pseudo-label, the weak view's class (FixMatch); in (0, 1]: the
            weak view's probabilities sharpened by this temperature (raised to ``1 / temperature``,
            renormalised) are the target (UDA, Xie et al. 2020): with confusable classes, the second
            likeliest class is information too.
    """

    threshold: float = 0.6
    weight: float = 1.0
    weak_noise: float = 0.03
    min_crop: float = 1.0
    date_dropout: float = 0.1
    band_noise: float = 0.05
    scale: float = 0.1
    max_shift: int = 0
    time_stretch: float = 0.0
    teacher_decay: float = 0.0
    distribution_alignment: bool | Literal["uniform", "estimated"] = False
    adaptive_threshold: str | None = None
    adaptive_momentum: float = 0.99
    temperature: float = 0.0

    def __post_init__(self) -> None:
        valid = 0 <= self.threshold < 1 and self.weight >= 0 and self.weak_noise >= 0 and 0 <= self.scale < 1
        valid = valid and 0 <= self.temperature <= 1 and self.max_shift >= 0 and 0 <= self.time_stretch < 1
        if self.distribution_alignment not in (False, True, "uniform", "estimated"):
            raise ValueError(
                "distribution_alignment must be false, true (= 'uniform') or 'estimated', "
                f"got {self.distribution_alignment!r}"
            )
        if self.adaptive_threshold not in (None, "global", "freematch"):
            raise ValueError(
                f"adaptive_threshold must be None, 'global' or 'freematch', got {self.adaptive_threshold!r}"
            )
        if not valid or not 0 <= self.teacher_decay < 1 or not 0 <= self.adaptive_momentum < 1:
            raise ValueError(
                "consistency needs 0 <= threshold < 1, weight >= 0, weak_noise >= 0, 0 <= scale < 1, "
                "0 <= temperature <= 1, max_shift >= 0, 0 <= time_stretch < 1, 0 <= teacher_decay < 1 and "
                f"0 <= adaptive_momentum < 1, got {self.threshold}, {self.weight}, {self.weak_noise}, {self.scale}, "
                f"{self.temperature}, {self.max_shift}, {self.time_stretch}, {self.teacher_decay}, "
                f"{self.adaptive_momentum}"
            )
        self.weak_view = Augmentation(band_noise=self.weak_noise)  # the training augmentation's band noise
        self.strong_views = SeriesViews(self.min_crop, self.date_dropout, self.band_noise)
        # Running means of the weak views' probabilities (distribution alignment, adaptive thresholds)
        # and of their top probability (adaptive thresholds): no settings, so not in the hyper-parameters;
        # a Classifier saves them in its checkpoints (state_dict) and a resumed fit restores them.
        self.class_mean: Tensor | None = None
        self.adaptive_class_mean: Tensor | None = None
        self.adaptive_level: Tensor | None = None
        # The labelled batches' class frequencies, averaged over the batches seen (a uniform prior counted
        # as the first batch, so no class starts at 0), and that count (distribution_alignment "estimated").
        self.source_class_mean: Tensor | None = None
        self.source_batches: Tensor | None = None
        # Days added to the weak view's dates (TimeMatch's shift-corrected pseudo-labels), set during a fit by
        # cmap.ml.adaptation.SeasonAdaptation once it has estimated the target's shift; 0: none.
        self.weak_day_shift = 0
        # The same for the target's speed: the weak view resampled as if its season ran this factor faster
        # (cmap.data.perturbations.season_resampled), for pseudo-labels of a season that runs faster or slower
        # than the labelled ones, set by whoever estimated it; 1: none.
        self.weak_stretch = 1.0

    def state_dict(self) -> dict[str, Tensor]:
        """The running means started so far (none before the first step), for a checkpoint."""
        return {name: getattr(self, name) for name in RUNNING_MEANS if getattr(self, name) is not None}

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device | str | None = None) -> None:
        """Restore :meth:`state_dict`'s running means (on ``device``); one it lacks starts afresh."""
        for name in RUNNING_MEANS:
            value = state.get(name)
            setattr(self, name, None if value is None else value.to(device))

    def weak(self, batch: Batch) -> Batch:
        if self.weak_day_shift:
            batch = {**batch, "days": (batch["days"] + self.weak_day_shift).clamp_min(0)}
        if self.weak_stretch != 1:
            values, mask = season_resampled(batch["values"], batch["mask"], batch["days"], self.weak_stretch)
            batch = {**batch, "values": values, "mask": mask}
        return self.weak_view(batch)

    def strong(self, batch: Batch) -> Batch:
        values, mask = batch["values"], batch["mask"]
        if self.time_stretch:  # first: it reads the series' own valid dates and days
            values, mask = time_stretched(values, mask, batch["days"], self.time_stretch)
        values, mask = self.strong_views(values, mask)
        if self.scale:
            factor = 1 + self.scale * (2 * torch.rand(len(values), 1, 1, device=values.device) - 1)
            values = values * factor
        if self.max_shift:
            values, mask = shifted(values, mask, self.max_shift)
        return {**batch, "values": values, "mask": mask}

    def loss(self, weak_logits: Tensor, strong_logits: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The unlabelled loss and the fraction of the batch whose pseudo-label was kept; ``labels``: the
        step's labelled batch's classes (read by distribution alignment ``"estimated"`` only)."""
        probabilities = torch.softmax(weak_logits.detach().float(), dim=-1)
        if self.distribution_alignment:
            probabilities = self.aligned(probabilities, labels)
        confidence, pseudo = probabilities.max(dim=-1)
        threshold = self.adaptive_thresholds(probabilities)[pseudo] if self.adaptive_threshold else self.threshold
        kept = (confidence >= threshold).to(strong_logits.dtype)
        if self.temperature:
            target = probabilities ** (1 / self.temperature)
            target = (target / target.sum(dim=-1, keepdim=True)).to(strong_logits.dtype)
        else:
            target = pseudo
        loss = (F.cross_entropy(strong_logits, target, reduction="none") * kept).mean()
        return self.weight * loss, kept.mean()

    def aligned(self, probabilities: Tensor, labels: Tensor | None) -> Tensor:
        """``probabilities`` reweighted by ``distribution_alignment`` after this batch's update of the
        running means, renormalised."""
        mean = process_mean(probabilities)
        self.class_mean = mean if self.class_mean is None else torch.lerp(self.class_mean, mean, 0.01)
        weights = 1 / self.class_mean.clamp_min(1e-6)
        if self.distribution_alignment == "estimated":
            weights = self.class_mean / self.source_prior(labels, probabilities.shape[-1])
        probabilities = probabilities * weights
        return probabilities / probabilities.sum(dim=-1, keepdim=True)

    def source_prior(self, labels: Tensor | None, num_classes: int) -> Tensor:
        """The labelled series' class frequencies after this batch (``labels``, of every process in a
        multi-process fit): the mean over the batches so far, a uniform prior counted as the first. A
        mean, not a moving one: the labelled series do not change during a fit."""
        if labels is None:
            raise ValueError("distribution_alignment 'estimated' needs the labelled batch's labels: loss(..., labels)")
        one_hot = torch.zeros(len(labels), num_classes, device=labels.device)
        frequencies = process_mean(one_hot.scatter_(1, labels.long().unsqueeze(1), 1.0))  # F.one_hot reads the host
        if self.source_class_mean is None:
            self.source_class_mean = frequencies.new_full((num_classes,), 1 / num_classes)
            self.source_batches = frequencies.new_tensor(1.0)
        self.source_batches = self.source_batches + 1
        self.source_class_mean = torch.lerp(self.source_class_mean, frequencies, 1 / self.source_batches)
        return self.source_class_mean

    def adaptive_thresholds(self, probabilities: Tensor) -> Tensor:
        """Each class's threshold after this batch's update (``adaptive_threshold``)."""
        num_classes = probabilities.shape[-1]
        freematch = self.adaptive_threshold == "freematch"
        if self.adaptive_level is None:
            self.adaptive_level = probabilities.new_tensor(1 / num_classes if freematch else self.threshold)
            self.adaptive_class_mean = probabilities.new_full((num_classes,), 1 / num_classes)
        momentum, top = self.adaptive_momentum, probabilities.max(dim=-1, keepdim=True).values
        means = process_mean(torch.cat([top, probabilities], dim=-1) if freematch else top)  # one all_reduce
        self.adaptive_level = torch.lerp(self.adaptive_level, means[0], 1 - momentum)
        if not freematch:
            return self.adaptive_level.expand(num_classes)
        self.adaptive_class_mean = torch.lerp(self.adaptive_class_mean, means[1:], 1 - momentum)
        return self.adaptive_level * self.adaptive_class_mean / self.adaptive_class_mean.max()


def process_mean(values: Tensor) -> Tensor:
    """The mean of ``values`` (rows, ...) over its rows, and over every process's rows where a process
    group is initialised (DDP: one ``all_reduce`` of the sums and row counts, so every process gets
    the same mean, the batches' mean even where their sizes differ); in one process, the rows' mean."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values.mean(dim=0)
    totals = torch.cat([values.sum(dim=0).reshape(-1), values.new_tensor([len(values)])])
    dist.all_reduce(totals)  # sum over processes
    return (totals[:-1] / totals[-1]).reshape(values.shape[1:])


def shifted(values: Tensor, mask: Tensor, max_shift: int) -> tuple[Tensor, Tensor]:
    """Each series' values and mask moved by a whole number of positions in [-max_shift, max_shift]."""
    num_series, num_dates = mask.shape
    shift = torch.randint(-max_shift, max_shift + 1, (num_series, 1), device=mask.device)
    source = torch.arange(num_dates, device=mask.device) - shift  # position t takes position t - shift
    inside = (source >= 0) & (source < num_dates)
    source = source.clamp(0, num_dates - 1)
    mask = torch.gather(mask, 1, source) & inside
    values = torch.gather(values, 1, source.unsqueeze(-1).expand_as(values)).masked_fill(~mask.unsqueeze(-1), 0.0)
    return values, mask


class Teacher:
    """An exponential moving average of a model's encoder and decoder (weights and batch-norm
    statistics), kept outside its state dict (a Classifier saves :meth:`state_dict` in its checkpoints
    beside it); ``teacher(values, days, mask)`` gives its logits in eval mode."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, decay: float) -> None:
        self.modules = nn.ModuleDict({"encoder": copy.deepcopy(encoder), "decoder": copy.deepcopy(decoder)}).eval()
        self.modules.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, encoder: nn.Module, decoder: nn.Module) -> None:
        student = nn.ModuleDict({"encoder": encoder, "decoder": decoder}).state_dict()
        for name, value in self.modules.state_dict().items():
            if value.is_floating_point():
                value.lerp_(student[name].to(value.dtype), 1 - self.decay)
            else:
                value.copy_(student[name])

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights and statistics (``encoder.*``, ``decoder.*``)."""
        return self.modules.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`state_dict` (copied onto the teacher's device)."""
        self.modules.load_state_dict(state)

    @torch.no_grad()
    def __call__(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        encoder, decoder = self.modules["encoder"], self.modules["decoder"]
        return decoder.decode(encoder(values, days, mask), mask, days)


def concat_batches(first: Batch, second: Batch) -> Batch:
    """``values``, ``days`` and ``mask`` of two batches, one after the other; the one with fewer dates
    is padded (masked) to the other's."""
    num_dates = max(first["mask"].shape[1], second["mask"].shape[1])

    def padded(tensor: Tensor) -> Tensor:
        missing = num_dates - tensor.shape[1]
        if not missing:
            return tensor
        padding = tensor.new_zeros((len(tensor), missing, *tensor.shape[2:]))  # masked: False, zeros
        return torch.cat([tensor, padding], dim=1)

    return {key: torch.cat([padded(first[key]), padded(second[key])]) for key in ("values", "days", "mask")}
