"""Training length that follows the data: enough optimizer steps whatever the training set's size.

A fixed number of epochs is a different amount of training for 200 series and for 200,000: with
batches of 128, 40 epochs of 234 series are 40 steps (the TempCNN example: test OA 0.36 with the
default recipe), 40 epochs of UCR Crop 2,000. :class:`TrainingBudget` (in
``configs/default.yaml``) makes a small training set use smaller batches, then trains for at least
``min_steps`` optimizer steps, in whole epochs.
"""

import math
import warnings
from typing import Any

import lightning as L
from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

from cmap.outputs import InputError


class TrainingBudget(L.Callback):
    """Sets the batch size and the number of epochs from the training set's size at fit time.

    - Batches shrink (not below ``min_batch_size``) until an epoch has ``min_batches_per_epoch``
      batches: 234 series in batches of 14 rather than one batch of 128.
    - Epochs rise from the trainer's ``max_epochs`` until training makes ``min_steps`` optimizer
      steps (gradient accumulation counted), up to ``max_epochs``: the trainer's ``max_epochs`` is
      a minimum (the printed line says when it was raised); the trainer's ``max_steps`` still stops
      training, and ``min_steps`` is the setting to lower to train less.

    The data module's ``batch_size`` and the trainer's epochs are changed before training starts,
    the same way on every run of the same data (a resumed run agrees with the first), and printed
    (with the data's date grid, :class:`~cmap.data.contract.DateGrid`, when it has one).

    Args:
        min_steps: optimizer steps of the whole training, at least.
        min_batches_per_epoch: batches per epoch, at least (while batches can shrink).
        min_batch_size: the smallest batch.
        max_epochs: the most epochs.
    """

    def __init__(
        self, min_steps: int = 2000, min_batches_per_epoch: int = 16, min_batch_size: int = 8, max_epochs: int = 1000
    ) -> None:
        if min(min_steps, min_batches_per_epoch, min_batch_size, max_epochs) < 1:
            raise ValueError("TrainingBudget's settings must all be >= 1")
        self.min_steps, self.min_batches_per_epoch = min_steps, min_batches_per_epoch
        self.min_batch_size, self.max_epochs = min_batch_size, max_epochs

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if stage != "fit" or data is None or "train" not in getattr(data, "datasets", {}):
            return
        series = len(data.datasets["train"])
        batch_size = data.batch_size
        if series // batch_size < self.min_batches_per_epoch:
            batch_size = max(self.min_batch_size, min(batch_size, series // self.min_batches_per_epoch))
            data.batch_size = batch_size
        steps_per_epoch = max(1, series // batch_size // trainer.accumulate_grad_batches)  # full batches only
        if trainer.max_epochs == 0 or trainer.max_steps == 0:
            return  # no training asked for: the schedule (one_cycle_schedule) says so in one line
        configured = trainer.max_epochs or 1
        epochs = min(self.max_epochs, max(configured, math.ceil(self.min_steps / steps_per_epoch)))
        trainer.fit_loop.max_epochs = epochs
        if trainer.is_global_zero:
            raised = (
                f"; trainer.max_epochs {configured} raised to reach min_steps {self.min_steps} (train less: lower the "
                "TrainingBudget callback's min_steps, or set --trainer.max_steps)"
                if epochs > configured
                else ""
            )
            if 0 < trainer.max_steps < epochs * steps_per_epoch:
                raised += f"; stopped at trainer.max_steps {trainer.max_steps}"
            grid = getattr(getattr(data, "contract", None), "date_grid", None)
            calendar = "" if grid is None else f"; date grid: {grid.num_steps} steps of {grid.step} days"
            print(
                f"training budget: {series} training series, batches of {batch_size}, {epochs} epochs "
                f"({epochs * steps_per_epoch} optimizer steps){raised}{calendar}",
                flush=True,
            )


class OneCycleSchedule(OneCycleLR):
    """PyTorch's ``OneCycleLR`` that keeps the length of the run at hand when a checkpoint's state is loaded.

    A killed run resumed with the same settings has the same length: nothing changes. A finished
    run *extended* (``--ckpt_path last --trainer.max_steps 70`` after 60 steps, or more epochs)
    would restore the old 60-step cycle and fail at step 61 (``Tried to step 61 times``); here the
    cycle is re-spanned over the new length instead: warm-up and cosine decay as if the run had been
    configured for 70 steps from the start, so the 10 extra steps continue at the LR the 70-step
    cycle has at steps 61-70 (slightly above ``min_lr``, decaying to it) rather than at ``max_lr``.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        total_steps, phases = self.total_steps, self._schedule_phases
        super().load_state_dict(state_dict)
        if self.total_steps != total_steps:
            message = f"LR schedule: the checkpoint's {self.total_steps}-step cycle re-spanned to {total_steps} steps"
            warnings.warn(message, stacklevel=2)
            self.total_steps, self._schedule_phases = total_steps, phases


def one_cycle_schedule(
    optimizer: Optimizer, max_lrs: list[float], min_lr: float, max_lr: float, trainer: L.Trainer, warmup_fraction: float
) -> OneCycleSchedule:
    """Linear warm-up from ``min_lr`` to ``max_lrs`` (per parameter group), cosine back, over the training.

    The training's length is the trainer's ``estimated_stepping_batches`` (gradient accumulation,
    ``max_epochs`` / ``max_steps`` and devices accounted for). No training (``trainer.max_epochs 0``,
    ``max_steps 0``, or no full training batch) is an :class:`InputError`: a fit that trains nothing
    would save and report an untrained model as if it were one (Lightning counts ``max_epochs 0`` as
    one epoch's steps, then stops before the first).
    """
    total_steps = trainer.estimated_stepping_batches
    if total_steps == float("inf"):
        raise InputError("the LR schedule needs a finite training length: set trainer.max_epochs or max_steps")
    if total_steps < 1 or trainer.max_epochs == 0 or trainer.max_steps == 0:
        if trainer.max_epochs == 0 or trainer.max_steps == 0:
            reason = "trainer.max_epochs 0" if trainer.max_epochs == 0 else "trainer.max_steps 0"
        else:
            reason = "no full training batch"
        raise InputError(
            f"nothing to train ({reason}: 0 optimizer steps); give trainer.max_epochs >= 1 (or max_steps), "
            "or evaluate a checkpoint with cmap test / cmap validate"
        )
    total_steps = max(int(total_steps), 2)
    # OneCycleLR divides by the length of each phase: keep both at least half a step long
    # (a 10-step run with warmup_fraction 0.1 would otherwise have an empty warm-up).
    warmup_fraction = min(max(warmup_fraction, 1.5 / total_steps), 1 - 0.5 / total_steps)
    return OneCycleSchedule(
        optimizer,
        max_lr=max_lrs,
        total_steps=total_steps,
        pct_start=warmup_fraction,
        anneal_strategy="cos",
        cycle_momentum=False,
        div_factor=max_lr / min_lr,
        final_div_factor=1.0,
    )


def scaled_learning_rate(learning_rate: float, batch_size: int, reference_batch_size: int, rule: str = "sqrt") -> float:
    """``learning_rate`` tuned at ``reference_batch_size``, carried to ``batch_size`` by ``rule``.

    ``sqrt``: times ``sqrt(batch_size / reference_batch_size)``, the rule for Adam-type optimisers
    (Malladi et al. 2022, "On the SDEs and scaling rules for adaptive gradient algorithms"): the
    gradient noise falls as the square root of the batch. ``linear``: times the ratio itself (Goyal et
    al. 2017, for SGD; with warm-up). ``none``: unchanged.
    """
    if batch_size < 1 or reference_batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {reference_batch_size}")
    ratio = batch_size / reference_batch_size
    factors = {"sqrt": math.sqrt(ratio), "linear": ratio, "none": 1.0}
    if rule not in factors:
        raise ValueError(f"rule must be one of {list(factors)}, got {rule!r}")
    return learning_rate * factors[rule]


class ScaleBatch(L.Callback):
    """Larger batches on a GPU, the learning rate following: ``factor`` times the data module's
    ``batch_size``, and the task's ``min_lr`` and ``max_lr`` scaled by ``rule``
    (:func:`scaled_learning_rate`).

    A small model on a GPU is bound by the per-step work of the host (kernel launches, Lightning's
    loop), not by the device: a batch ``factor`` times larger costs about the same time per step,
    so an epoch takes about ``1 / factor`` of the time. The one-cycle schedule spans the new number
    of steps by itself (``trainer.estimated_stepping_batches``). The scaled rates are written into
    the task's hyper-parameters (the checkpoint records the rates used) and printed. Whether
    accuracy holds at the larger batch is measured per config (``benchmarks/gpu_check.py``).

    Put it before :class:`TrainingBudget` in the callbacks: the budget then counts the larger
    batches (its ``min_steps`` raises the epochs to keep the step count, i.e. more training).

    Args:
        factor: batch size multiplier (>= 1).
        rule: ``sqrt``, ``linear`` or ``none``.
        gpu_only: change nothing unless the trainer runs on a CUDA device.
    """

    def __init__(self, factor: int = 4, rule: str = "sqrt", gpu_only: bool = True) -> None:
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        scaled_learning_rate(1.0, factor, 1, rule)  # checks the rule
        self.factor, self.rule, self.gpu_only = factor, rule, gpu_only

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if stage != "fit" or data is None or not hasattr(data, "batch_size") or self.factor == 1:
            return
        if self.gpu_only and trainer.strategy.root_device.type != "cuda":
            return
        reference = data.batch_size
        data.batch_size = reference * self.factor
        for name in ("min_lr", "max_lr"):
            if name in pl_module.hparams:
                pl_module.hparams[name] = scaled_learning_rate(
                    pl_module.hparams[name], data.batch_size, reference, self.rule
                )
        if trainer.is_global_zero:
            print(
                f"batch scaling: batches of {data.batch_size} (x{self.factor}), learning rates x"
                f"{scaled_learning_rate(1.0, data.batch_size, reference, self.rule):.3g} ({self.rule} rule): "
                f"max_lr {pl_module.hparams.get('max_lr')}",
                flush=True,
            )
