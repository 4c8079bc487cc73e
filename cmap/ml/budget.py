"""Training length that follows the data: enough optimizer steps whatever the training set's size.

A fixed number of epochs is a different amount of training for 200 series and for 200,000: with
batches of 128, 40 epochs of 234 series are 40 steps (the TempCNN example: test OA 0.36 with the
default recipe), 40 epochs of UCR Crop 2,000. :class:`TrainingBudget` (in
``configs/default.yaml``) makes a small training set use smaller batches, then trains for at least
``min_steps`` optimizer steps, in whole epochs.
"""

import math

import lightning as L


class TrainingBudget(L.Callback):
    """Sets the batch size and the number of epochs from the training set's size at fit time.

    - Batches shrink (not below ``min_batch_size``) until an epoch has ``min_batches_per_epoch``
      batches: 234 series in batches of 14 rather than one batch of 128.
    - Epochs rise from the trainer's ``max_epochs`` until training makes ``min_steps`` optimizer
      steps (gradient accumulation counted), up to ``max_epochs``.

    The data module's ``batch_size`` and the trainer's epochs are changed before training starts,
    the same way on every run of the same data (a resumed run agrees with the first), and printed.

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
        epochs = min(self.max_epochs, max(trainer.max_epochs or 1, math.ceil(self.min_steps / steps_per_epoch)))
        trainer.fit_loop.max_epochs = epochs
        if trainer.is_global_zero:
            print(
                f"training budget: {series} training series, batches of {batch_size}, {epochs} epochs "
                f"({epochs * steps_per_epoch} optimizer steps)",
                flush=True,
            )
