"""Adaptation to a new season (or region) whose series are given unlabelled: the target store of a
data module's ``unlabelled`` option (:class:`~cmap.data.store_datamodule.StoreInputs`), i.e. the pixels to map.

- :func:`adapt_batch_norm`: AdaBN (Li et al. 2018): the batch-norm statistics re-estimated on the
  target series, the weights unchanged; the network then normalises the target's features with the
  target's own statistics, not the source's.
- :func:`estimate_shift`: TimeMatch's temporal shift estimation (Nyborg et al. 2022): the day shift,
  among candidates, that makes the source-trained model least uncertain on the target series (lowest
  mean entropy of its predictions): how much earlier or later the target's phenology runs.
- :func:`class_proportions` and :class:`SeasonAdaptation`'s report: the source's class proportions beside
  those predicted on the target, a shift a user should see.

:class:`SeasonAdaptation` (a Lightning callback) does these in a ``cmap fit`` with an ``unlabelled`` store;
what each costs or gains on Mato Grosso's season transfer is in ``benchmarks/results/season_transfer.md``.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from cmap.data.batch import Batch
from cmap.data.dataset import SeriesDataset, batch_loader
from cmap.data.perturbations import season_resampled

#: Batch size of the passes over the target series (no gradient).
PASS_BATCH_SIZE = 512


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batch_norm(model: nn.Module, batches: Iterable[Batch]) -> int:
    """Replace the running mean and variance of every batch norm of ``model`` by their averages over
    ``batches`` (the target series, each batch's statistics weighted alike: a cumulative average);
    dropout stays off and no weight changes. Returns the number of batches seen (0: ``model``
    unchanged)."""
    norms = batch_norms(model)
    if not norms:
        return 0
    saved = [(norm.momentum, norm.running_mean.clone(), norm.running_var.clone()) for norm in norms]
    training = model.training
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    seen = 0
    try:
        for batch in batches:
            model(*(batch[key].to(device_of(model)) for key in ("values", "days", "mask")))
            seen += 1
    finally:
        for norm, (momentum, mean, var) in zip(norms, saved, strict=True):
            norm.momentum = momentum
            if not seen:
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
        model.train(training)
    return seen


@torch.no_grad()
def mean_entropy(model: nn.Module, batches: Sequence[Batch], day_shift: int = 0, speed: float = 1.0) -> float:
    """The mean entropy of ``model``'s class probabilities over ``batches``, with every date's day moved
    by ``day_shift`` (days stay >= 0) and each series' values resampled as if its season ran ``speed``
    times faster (:func:`~cmap.data.perturbations.season_resampled`; 1: as they are)."""
    total, count = 0.0, 0
    for batch in batches:
        days, values, mask = (batch["days"] + day_shift).clamp_min(0), batch["values"], batch["mask"]
        if speed != 1:
            values, mask = season_resampled(values, mask, batch["days"], speed)
        device = device_of(model)
        logits = model(values.to(device), days.to(device), mask.to(device))
        probabilities = torch.softmax(logits.float(), dim=-1)
        total += float(-(probabilities * probabilities.clamp_min(1e-12).log()).sum(-1).sum())
        count += len(probabilities)
    return total / count


def lowest_entropy(
    model: nn.Module, batches: Sequence[Batch], candidates: dict[Any, dict[str, Any]], neutral: float
) -> tuple[Any, dict[Any, float]]:
    """The candidate (a key of ``candidates``: :func:`mean_entropy`'s keyword arguments) whose transformed
    target series the model, in eval mode, predicts with the lowest mean entropy, and each one's mean
    entropy. Ties go to the candidate nearest ``neutral`` (no change)."""
    training = model.training
    model.eval()
    try:
        entropies = {key: mean_entropy(model, batches, **options) for key, options in candidates.items()}
    finally:
        model.train(training)
    best = min(entropies, key=lambda key: (round(entropies[key], 6), abs(key - neutral)))
    return best, entropies


def estimate_shift(model: nn.Module, batches: Sequence[Batch], shifts: Sequence[int]) -> tuple[int, dict[int, float]]:
    """TimeMatch's estimate: the day shift of ``shifts`` whose shifted target series the model predicts
    with the lowest mean entropy, and each shift's mean entropy. Ties go to the smallest shift."""
    return lowest_entropy(model, batches, {int(shift): {"day_shift": int(shift)} for shift in shifts}, 0)


def estimate_speed(
    model: nn.Module, batches: Sequence[Batch], speeds: Sequence[float]
) -> tuple[float, dict[float, float]]:
    """TimeMatch's estimate with a season speed instead of a day shift: the factor of ``speeds`` whose
    resampled target series (:func:`~cmap.data.perturbations.season_resampled`) the model predicts with
    the lowest mean entropy, and each factor's mean entropy. Ties go to the factor nearest 1."""
    return lowest_entropy(model, batches, {float(speed): {"speed": float(speed)} for speed in speeds}, 1.0)


@torch.no_grad()
def predicted_probabilities(model: nn.Module, batches: Iterable[Batch]) -> Tensor:
    """``model``'s class probabilities (N, K) over ``batches``, in eval mode."""
    training = model.training
    model.eval()
    try:
        return torch.cat([
            torch.softmax(model(*(batch[key].to(device_of(model)) for key in ("values", "days", "mask"))).float(), -1)
            .cpu()
            for batch in batches
        ])  # fmt: skip
    finally:
        model.train(training)


def predicted_classes(model: nn.Module, batches: Iterable[Batch]) -> Tensor:
    return predicted_probabilities(model, batches).argmax(-1)


def target_priors(
    probabilities: Tensor, source_priors: Tensor, iterations: int = 100, tolerance: float = 1e-6
) -> Tensor:
    """The target's class proportions by EM (Saerens, Latinne & Decaestecker 2002): the model's
    probabilities on the target series (N, K), made under the training classes' proportions
    ``source_priors`` (K,), are reweighted by the ratio of the current estimate to those, and the
    estimate becomes the mean of the reweighted probabilities, until it stops moving."""
    probabilities, source_priors = probabilities.double(), source_priors.double().clamp_min(1e-12)
    priors = source_priors.clone()
    for _ in range(iterations):
        adjusted = prior_adjusted(probabilities, source_priors, priors)
        updated = adjusted.mean(0)
        if (updated - priors).abs().max() < tolerance:
            return updated.float()
        priors = updated
    return priors.float()


def prior_adjusted(probabilities: Tensor, source_priors: Tensor, target_priors: Tensor) -> Tensor:
    """Class probabilities under the target's proportions: p(k | x) * target_k / source_k, renormalised."""
    weighted = probabilities * (target_priors / source_priors.clamp_min(1e-12)).to(probabilities.dtype)
    return weighted / weighted.sum(-1, keepdim=True).clamp_min(1e-12)


def class_proportions(labels: np.ndarray | Tensor, num_classes: int) -> np.ndarray:
    """Each class's share of ``labels`` (0 for a class absent)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def proportions_table(class_names: Sequence[str], source: np.ndarray, target: np.ndarray) -> str:
    """The source's class proportions beside those predicted on the target, largest change first."""
    width = max(len(name) for name in class_names)
    lines = [f"  {'class':<{width}}  source  target (predicted)  change"]
    for index in np.argsort(-np.abs(target - source), kind="stable"):
        change = 100 * (target[index] - source[index])
        shares = f"{100 * source[index]:5.1f}%  {100 * target[index]:17.1f}%"
        lines.append(f"  {class_names[index]:<{width}}  {shares}  {change:+5.1f}")
    return "\n".join(lines)


class SeasonAdaptation(L.Callback):
    """Adaptation to the data module's ``unlabelled`` store (the target season's series) in a ``cmap fit``.

    When training ends: with ``batch_norm``, the model's batch-norm statistics are re-estimated on the
    target series (:func:`adapt_batch_norm`): the model that ``--test_after_fit`` tests, written again
    to ``last.ckpt`` (what ``cmap map`` maps; LastCheckpoint saved it at the last epoch's end, before); then
    the source's class proportions and those the model predicts on the target are printed. With
    ``shift_days``, TimeMatch's shift (:func:`estimate_shift`, candidates every ``shift_step`` days in
    [-shift_days, shift_days]) is estimated when ``shift_after`` of the training steps are done and is
    given to the model's :class:`~cmap.ml.consistency.Consistency` (``weak_day_shift``): pseudo-labels
    then come from the shift-corrected target series. A fit without an ``unlabelled`` store is left
    as it is. With ``speed``, the same is done for the target season's speed (:func:`estimate_speed`,
    factors every ``speed_step`` in [1 - speed, 1 + speed]), given to ``Consistency.weak_stretch``. The
    estimates are saved in checkpoints (the callback's state): a resumed fit keeps them.

    Args:
        batch_norm: re-estimate batch-norm statistics on the target when training ends (AdaBN).
        shift_days: largest shift tried (0: no shift estimation).
        shift_step: spacing of the shifts tried, in days.
        shift_after: fraction of the training's steps after which the shift and speed are estimated.
        report: print the class proportions when training ends.
        speed: largest change of the season's speed tried (0: no speed estimation; 0.2: factors 0.8 to 1.2).
        speed_step: spacing of the factors tried.
    """

    def __init__(self, batch_norm: bool = True, shift_days: int = 0, shift_step: int = 8, shift_after: float = 0.3,
                 report: bool = True, speed: float = 0.0, speed_step: float = 0.05) -> None:  # fmt: skip
        if shift_days < 0 or shift_step < 1 or not 0 <= shift_after < 1 or not 0 <= speed < 1 or speed_step <= 0:
            raise ValueError(f"SeasonAdaptation needs shift_days >= 0, shift_step >= 1, 0 <= shift_after < 1, "
                             f"0 <= speed < 1, speed_step > 0, got {shift_days}, {shift_step}, {shift_after}, "
                             f"{speed}, {speed_step}")  # fmt: skip
        self.batch_norm, self.report = batch_norm, report
        self.shift_days, self.shift_step, self.shift_after = shift_days, shift_step, shift_after
        self.speed_range, self.speed_step = speed, speed_step
        self.shift: int | None = None
        self.speed: float | None = None

    @property
    def state_key(self) -> str:  # several of them in one fit (e.g. one reporting, one estimating): one state each
        return self._generate_state_key(
            batch_norm=self.batch_norm, shift_days=self.shift_days, speed=self.speed_range, report=self.report
        )

    def state_dict(self) -> dict[str, Any]:
        return {"shift": self.shift, "speed": self.speed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shift, self.speed = state_dict.get("shift"), state_dict.get("speed")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.apply(pl_module)  # estimates restored from a checkpoint

    def apply(self, pl_module: L.LightningModule) -> None:
        """Give the estimates made so far to the model's consistency (its weak views)."""
        consistency = getattr(pl_module, "consistency", None)
        if consistency is None:
            return
        if self.shift is not None:
            consistency.weak_day_shift = self.shift
        if self.speed is not None:
            consistency.weak_stretch = self.speed

    @staticmethod
    def target(trainer: L.Trainer) -> SeriesDataset | None:
        datasets = getattr(trainer.datamodule, "datasets", {}) if trainer.datamodule is not None else {}
        return datasets.get("unlabelled")

    @staticmethod
    def batches(dataset: SeriesDataset) -> list[Batch]:
        return list(batch_loader(dataset, PASS_BATCH_SIZE))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        wanted = (self.shift_days and self.shift is None) or (self.speed_range and self.speed is None)
        if not wanted or self.target(trainer) is None:
            return
        if trainer.global_step < self.shift_after * trainer.estimated_stepping_batches:
            return
        batches, messages = self.batches(self.target(trainer)), []
        if self.shift_days and self.shift is None:
            shifts = range(-self.shift_days, self.shift_days + 1, self.shift_step)
            self.shift, entropies = estimate_shift(pl_module, batches, shifts)
            pl_module.log("adaptation/day_shift", float(self.shift), sync_dist=True)
            listed = ", ".join(f"{shift:+d}: {entropy:.3f}" for shift, entropy in entropies.items())
            messages.append(f"TimeMatch shift of the target series: {self.shift:+d} days (mean entropy {listed})")
        if self.speed_range and self.speed is None:
            steps = int(round(self.speed_range / self.speed_step))
            speeds = [round(1 + k * self.speed_step, 6) for k in range(-steps, steps + 1)]
            self.speed, entropies = estimate_speed(pl_module, batches, speeds)
            pl_module.log("adaptation/season_speed", float(self.speed), sync_dist=True)
            listed = ", ".join(f"{speed:.2f}: {entropy:.3f}" for speed, entropy in entropies.items())
            messages.append(f"Season speed of the target series: {self.speed:.2f} (mean entropy {listed})")
        self.apply(pl_module)
        if trainer.is_global_zero:
            print("\n".join(messages), flush=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dataset = self.target(trainer)
        if dataset is None:
            return
        batches = self.batches(dataset)
        if self.batch_norm and adapt_batch_norm(pl_module, batches):
            self.save_last(trainer)
        if not self.report or not trainer.is_global_zero:
            return
        names = list(pl_module.class_names)
        source = class_proportions(trainer.datamodule.datasets["train"].labels, len(names))
        target = class_proportions(predicted_classes(pl_module, batches).numpy(), len(names))
        print(f"Class proportions, training series vs the {len(dataset)} target series as predicted:\n"
              + proportions_table(names, source, target), flush=True)  # fmt: skip

    @staticmethod
    def save_last(trainer: L.Trainer) -> None:
        """``last.ckpt`` (of :class:`~cmap.ml.fault_tolerance.LastCheckpoint`, or a ``ModelCheckpoint`` with
        ``save_last``) again, now with the target's batch-norm statistics."""
        for callback in trainer.checkpoint_callbacks:
            if hasattr(callback, "last_path"):
                trainer.save_checkpoint(callback.last_path())
            elif getattr(callback, "save_last", False) and callback.dirpath is not None:
                trainer.save_checkpoint(f"{callback.dirpath}/{callback.CHECKPOINT_NAME_LAST}.ckpt")
