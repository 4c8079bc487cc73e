"""What every cmap LightningModule shares: encoder + decoder, hyper-parameters, LR schedule."""

import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import CheckpointIO
from torch import Tensor, nn
from torch.optim import AdamW
from torchmetrics import MetricCollection

from cmap.data.batch import Batch
from cmap.data.contract import CHECKPOINT_KEY, InputContract
from cmap.ml.budget import one_cycle_schedule
from cmap.ml.decoders import Decoder
from cmap.ml.embeddings.position import PositionalEncoding
from cmap.ml.encoders import SeriesEncoder
from cmap.ml.weights import load_encoder_weights, state_dict_mismatch
from cmap.outputs import InputError

STAGES = ("train", "val", "test")


def fused_adamw_applies(parameters: Iterable[Tensor]) -> bool:
    """True when every parameter is a floating-point tensor on a CUDA device: PyTorch's fused AdamW
    updates them all in one kernel (its default there, ``foreach``, launches a dozen per step)."""
    parameters = list(parameters)
    return bool(parameters) and all(p.device.type == "cuda" and p.is_floating_point() for p in parameters)


def check_days(module: nn.Module, days: Tensor) -> None:
    """Check ``days`` against every date encoding of ``module`` (their ``max_len``), on ``days``' device."""
    for submodule in module.modules():
        if isinstance(submodule, PositionalEncoding):
            submodule.check_days(days)


def is_plain_data(value: Any) -> bool:
    """True for what YAML writes and ``torch.load(weights_only=True)`` reads back."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain_data(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and is_plain_data(item) for key, item in value.items())
    return False


class SITSTask(L.LightningModule):
    """Base task: an ``encoder`` (per-date features) followed by a ``decoder`` (task output).

    ``__init__`` saves the hyper-parameters (with LightningCLI, the full ``class_path`` /
    ``init_args`` tree of encoder and decoder, so checkpoints rebuild the model without pickling
    it) and calls :meth:`configure_losses` and :meth:`configure_metrics`, in the manner of
    torchgeo's ``BaseTask``.

    Learning rate: AdamW under a one-cycle schedule between ``min_lr`` and ``max_lr``, stepped
    every optimizer step (:meth:`configure_optimizers`). These settings are this class's
    arguments only: tasks take their own and pass the rest on (``**kwargs``), so every task has
    the same defaults and LightningCLI lists them for each.

    The task carries the :class:`~cmap.data.contract.InputContract` of its data
    (``input_contract``): taken from the data module at :meth:`setup`, written into every checkpoint
    under :data:`~cmap.data.contract.CHECKPOINT_KEY`, read back by :meth:`on_load_checkpoint` (and
    so by ``load_from_checkpoint``), and handed to the data module when a run restores a checkpoint.

    Args:
        encoder: a :class:`~cmap.ml.encoders.SeriesEncoder`.
        decoder: the task's head (a :class:`~cmap.ml.decoders.Decoder`, bound to the encoder's width).
        min_lr: learning rate at the start and at the end of training.
        max_lr: peak learning rate, reached after ``warmup_fraction`` of the optimizer steps.
        warmup_fraction: fraction of the steps spent rising from ``min_lr`` to ``max_lr``.
        weight_decay: AdamW's decoupled weight decay.
        init_encoder_from: encoder weights to start from when training begins (a checkpoint of
            any cmap task, or a file of :func:`cmap.ml.weights.export_encoder`); ignored when
            resuming a run from its own checkpoint.
    """

    #: AdamW's ``fused`` implementation: None chooses it when every parameter is on a CUDA device
    #: (:func:`fused_adamw_applies`); True or False force it (benchmarks compare the two).
    fused_optimizer: bool | None = None

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        min_lr: float = 1e-5,
        max_lr: float = 1e-4,
        warmup_fraction: float = 0.1,
        weight_decay: float = 0.01,
        init_encoder_from: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 < min_lr <= max_lr:
            raise ValueError(f"need 0 < min_lr <= max_lr, got min_lr={min_lr}, max_lr={max_lr}")
        if not isinstance(encoder, SeriesEncoder):
            raise TypeError(f"encoder must be a cmap.ml.encoders.SeriesEncoder, got {type(encoder).__name__}")
        if not isinstance(decoder, Decoder):
            raise TypeError(f"decoder must be a cmap.ml.decoders.Decoder, got {type(decoder).__name__}")
        decoder.bind(encoder.d_model)
        with warnings.catch_warnings():
            # Lightning warns when layers given in Python reach the hyper-parameters; they are
            # removed just below (LightningCLI gives their class_path/init_args instead).
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        # Objects built in Python (not by LightningCLI: layers, masking strategies) would be
        # pickled into the hyper-parameters; keep plain data only. Weights are in the state dict.
        self.drop_hyperparameters(*[key for key, value in self.hparams.items() if not is_plain_data(value)])
        self.encoder = encoder
        self.decoder = decoder
        self.input_contract: InputContract | None = None
        self.configure_losses()
        self.configure_metrics()

    def drop_hyperparameters(self, *keys: str) -> None:
        """Remove ``keys`` from the hyper-parameters (saved in checkpoints) and their logged copy."""
        for key in keys:
            self.hparams.pop(key, None)
            self._hparams_initial.pop(key, None)

    def configure_losses(self) -> None:
        """Create the loss (may wait for :meth:`setup` when it needs the data's classes)."""

    def configure_metrics(self) -> None:
        """Create the torchmetrics collections (with :meth:`set_stage_metrics`)."""

    def reconfigure(self) -> None:
        """Rebuild losses and metrics once :meth:`setup` has learnt names from the data module."""
        self.configure_losses()
        self.configure_metrics()

    def set_stage_metrics(self, metrics: MetricCollection) -> None:
        """One copy of ``metrics`` per stage, prefixed ``train/``, ``val/``, ``test/``.

        Tasks update ``<stage>_metrics`` in their steps; the collections are computed, logged
        and reset at each epoch end.
        """
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", metrics.clone(prefix=f"{stage}/"))

    def log_loss(self, stage: str, loss: Tensor, batch_size: int) -> None:
        """The epoch mean of ``stage``'s loss; sync_dist: over every process's series (metrics sync by themselves)."""
        self.log(
            f"{stage}/loss", loss, batch_size=batch_size, on_step=False, on_epoch=True, sync_dist=True,
            prog_bar=stage != "test",
        )  # fmt: skip

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = getattr(self, f"{stage}_metrics", None)
        if metrics is not None:
            # compute() has synchronised the states of every process, so each logs the same value;
            # sync_dist makes Lightning's epoch-end reduction agree (a mean of equal values).
            self.log_dict(metrics.compute(), sync_dist=True)
            # Fresh states made under validate/test's inference mode could not be updated by a
            # later fit (whose validation runs outside inference mode).
            with torch.inference_mode(False):
                metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def set_input_contract(self, contract: InputContract) -> None:
        """Adopt ``contract``: layers sized by the data are built (:meth:`bind_to_data`), and tasks whose
        losses or metrics are named by it rebuild them."""
        changed = contract != self.input_contract
        self.bind_to_data(contract)
        self.input_contract = contract
        if changed:
            self.reconfigure()

    def bind_to_data(self, contract: InputContract) -> None:
        """Size what a config may leave to the data: the band embedding's input (``sizes[0]`` null;
        a given one is checked)."""
        self.encoder.bind_bands(contract.num_bands)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        contract = getattr(datamodule, "contract", None)
        if contract is not None:
            if self.encoder.num_bands is not None and contract.num_bands != self.encoder.num_bands:
                raise ValueError(
                    f"the encoder expects {self.encoder.num_bands} bands per date (bands_encoder sizes[0]) but "
                    f"{type(datamodule).__name__} provides {contract.num_bands}: {list(contract.band_names)}"
                )
            if self.input_contract is None:
                self.set_input_contract(contract)
            else:  # a model loaded from a checkpoint: its inputs are normalised as in training
                datamodule.adopt(self.input_contract, "the model")
        if stage == "fit" and self.hparams.init_encoder_from and self.trainer.ckpt_path is None:
            load_encoder_weights(self.encoder, self.hparams.init_encoder_from)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.input_contract is not None:
            checkpoint[CHECKPOINT_KEY] = self.input_contract.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        path = self._trainer.ckpt_path if self._trainer is not None else "the checkpoint"
        if CHECKPOINT_KEY in checkpoint:  # first: layers sized by the data are built from it
            datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            # The `cmap` command handed it over before setup (hand_over_checkpoint); from Python
            # (trainer.test(model, datamodule, ckpt_path=...)) it is handed over here, after setup.
            adopt_checkpoint_contract(self, datamodule, checkpoint, str(path))
        # Lightning's strict loading would name the tensors but not the file: a checkpoint of another
        # architecture (resuming with a changed config) is reported with its path.
        mismatch = state_dict_mismatch(self.state_dict(), checkpoint["state_dict"])
        if mismatch:
            raise ValueError(f"{path}: weights do not fit the configured {type(self).__name__}: {mismatch}")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The date encoding's range check, on the CPU copy of the batch: on the GPU it would make the
        # host wait for the device at every step.
        # A consistency step's batch holds two: {"labelled": Batch, "unlabelled": Batch}.
        for part in (batch, *batch.values()) if isinstance(batch, dict) else ():
            if isinstance(part, dict) and isinstance(part.get("days"), Tensor):
                check_days(self, part["days"])
        return batch

    def forward(self, values: Tensor, days: Tensor, mask: Tensor) -> Tensor:
        features = self.encoder(values, days, mask)
        return self.decoder.decode(features, mask, days)

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        """The loss of ``batch`` at ``stage`` (``train``, ``val``, ``test``), metrics updated and loss logged."""
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def lr_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """Parameter groups and their LR factor (of ``min_lr`` and ``max_lr``); one group by default."""
        return [(list(self.parameters()), 1.0)]

    def configure_optimizers(self) -> Any:
        """AdamW; one-cycle LR: linear warm-up from ``min_lr`` to ``max_lr``, cosine back to ``min_lr``.

        The schedule spans ``trainer.estimated_stepping_batches``, so Lightning's gradient
        accumulation, ``max_epochs`` / ``max_steps`` and device count are accounted for. AdamW is
        PyTorch's fused implementation (one kernel per step) when the parameters are on a CUDA
        device, unless :attr:`fused_optimizer` says otherwise.
        """
        hp = self.hparams
        groups = self.lr_groups()
        optimizer = AdamW(
            [{"params": params, "lr": hp.max_lr * factor} for params, factor in groups],
            weight_decay=hp.weight_decay,
            fused=self.fused_optimizer if self.fused_optimizer is not None else fused_adamw_applies(self.parameters()),
        )
        max_lrs = [hp.max_lr * factor for _, factor in groups]
        scheduler = one_cycle_schedule(optimizer, max_lrs, hp.min_lr, hp.max_lr, self.trainer, hp.warmup_fraction)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def adopt_checkpoint_contract(task: SITSTask, datamodule: Any, checkpoint: dict[str, Any], path: str) -> None:
    """The checkpoint's input contract for ``task`` and ``datamodule`` (when it takes one: ``adopt``):
    the data is normalised as in training, and layers sized by the data are built."""
    contract = InputContract.from_checkpoint(checkpoint, path)
    if datamodule is not None and hasattr(datamodule, "adopt"):
        datamodule.adopt(contract, path)
    task.set_input_contract(contract)


def read_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """The ``--ckpt_path`` file of a run, read once: its zip members' checksums checked first
    (``torch.load`` reads a damaged tensor without a word), then loaded weights-only (no code runs).
    Any problem is an :class:`~cmap.outputs.InputError` naming the file."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            if damaged is not None:
                raise ValueError(f"member {damaged} is damaged")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated, damaged or foreign files
        raise InputError(f"{path}: not a readable checkpoint ({' '.join(str(error).split())})") from error


def hand_over_checkpoint(trainer: L.Trainer, task: Any, datamodule: Any, path: str, checkpoint: dict) -> None:
    """Give a run the checkpoint the ``cmap`` command read (:func:`read_run_checkpoint`) before it starts:
    its input contract to the task and the data module, so that the data module's setup normalises
    with it and computes no statistics of its own; and the checkpoint itself to the trainer's restore,
    so that the file is not read again (:class:`ReadCheckpoint`)."""
    if isinstance(task, SITSTask) and CHECKPOINT_KEY in checkpoint:
        adopt_checkpoint_contract(task, datamodule, checkpoint, str(path))
    trainer.strategy.checkpoint_io = ReadCheckpoint(trainer.strategy.checkpoint_io, path, checkpoint)


class ReadCheckpoint(CheckpointIO):
    """The trainer's checkpoint IO (``inner``), handing back ``checkpoint`` when the restore asks for
    ``path``, once, instead of reading the file again; saves, removals and other loads go to ``inner``."""

    def __init__(self, inner: CheckpointIO, path: str | Path, checkpoint: dict[str, Any]) -> None:
        super().__init__()
        self.inner, self.path, self.checkpoint = inner, Path(path).resolve(), checkpoint

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if self.checkpoint is not None and "://" not in str(path) and Path(path).resolve() == self.path:
            checkpoint, self.checkpoint = self.checkpoint, None  # held no longer than the restore
            return checkpoint
        return self.inner.load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        self.inner.save_checkpoint(checkpoint, path, storage_options)

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()
