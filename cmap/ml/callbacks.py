"""TensorBoard figures and projector embeddings, one callback per concept.

The ``cmap`` command adds all of them to every run (configurable, e.g.
``--attention_maps.every_n_epochs 5``). Each writes to the run's TensorBoard logger, and does
nothing for a task it does not apply to (no confusion matrix for an AutoEncoder). Figures are
made on the global-zero process only; metric states are synchronised first, so multi-process
runs log once. Figures and the projector are logged at the step of the epoch-end scalars
(:func:`logging_step`), so TensorBoard shows them on the same step axis.
"""

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from torchmetrics.classification import MulticlassConfusionMatrix

from cmap.data.batch import Batch
from cmap.ml.decoders import masked_mean


def tensorboard_writer(trainer: L.Trainer) -> SummaryWriter | None:
    """The SummaryWriter of the trainer's TensorBoard logger, if it has one."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def class_names_of(trainer: L.Trainer, pl_module: L.LightningModule) -> list[str] | None:
    names = getattr(pl_module, "class_names", None) or getattr(trainer.datamodule, "class_names", None)
    return None if names is None else list(names)


def logging_step(trainer: L.Trainer) -> int:
    """The step of the scalars logged at an epoch's end: Lightning writes them at the index of the
    epoch's last optimizer step (``global_step - 1``); figures use it too."""
    return max(trainer.global_step - 1, 0)


def _log_figure(trainer: L.Trainer, tag: str, figure: Figure) -> None:
    # Figures are built with matplotlib's object API (no pyplot state, no GUI backend).
    writer = tensorboard_writer(trainer)
    if writer is not None:
        writer.add_figure(tag, figure, global_step=logging_step(trainer))


def _class_axis_size(num_classes: int) -> float:
    return max(4.0, 0.35 * num_classes + 2)


def confusion_figure(matrix: np.ndarray, class_names: list[str]) -> Figure:
    """Counts and row-normalised (recall) confusion matrices side by side; rows are true classes."""
    size = _class_axis_size(len(class_names))
    figure = Figure(figsize=(2 * size + 2, size + 1), layout="constrained")
    axes = figure.subplots(1, 2)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for ax, values, title in ((axes[0], matrix, "counts"), (axes[1], normalised, "row-normalised (recall)")):
        image = ax.imshow(values, cmap="Blues")
        ax.set(
            title=title,
            xlabel="predicted",
            ylabel="true",
            xticks=range(len(class_names)),
            yticks=range(len(class_names)),
        )
        ax.set_xticklabels(class_names, rotation=90, fontsize=7)
        ax.set_yticklabels(class_names, fontsize=7)
        figure.colorbar(image, ax=ax, shrink=0.8)
    return figure


def distribution_figure(counts: dict[str, np.ndarray], class_names: list[str], title: str) -> Figure:
    """Grouped bars: one bar per class and series of ``counts`` (e.g. true vs predicted)."""
    figure = Figure(figsize=(_class_axis_size(len(class_names)) + 2, 4), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / len(counts)
    positions = np.arange(len(class_names))
    for i, (label, values) in enumerate(counts.items()):
        ax.bar(positions + i * width, values, width, label=label)
    ax.set_xticks(positions + 0.4 - width / 2, class_names, rotation=90, fontsize=7)
    ax.set(title=title, ylabel="series")
    ax.legend()
    return figure


class ClassDistributionLogger(L.Callback):
    """Series per class in the train, val (at fit start) and test (at test start) splits."""

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, splits: tuple[str, ...]) -> None:
        datamodule, names = trainer.datamodule, class_names_of(trainer, pl_module)
        if not hasattr(datamodule, "class_counts") or names is None or not trainer.is_global_zero:
            return
        counts = {split: datamodule.class_counts(split) for split in splits}
        figure = distribution_figure(counts, names, "class distribution: " + " / ".join(splits))
        _log_figure(trainer, f"class_distribution/{'_'.join(splits)}", figure)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, ("train", "val"))

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, ("test",))


class ConfusionMatrixLogger(L.Callback):
    """Confusion matrix (counts, row-normalised) and predicted vs true class counts, val and test.

    Uses the ``prediction`` returned by the task's validation/test steps (the Classifier's).
    """

    def __init__(self) -> None:
        self.matrices: dict[str, MulticlassConfusionMatrix] = {}

    def _update(self, stage: str, pl_module: L.LightningModule, outputs: Any, batch: Batch) -> None:
        if not isinstance(outputs, dict) or "prediction" not in outputs:
            return
        if stage not in self.matrices:
            self.matrices[stage] = MulticlassConfusionMatrix(pl_module.num_classes).to(pl_module.device)
        self.matrices[stage].update(outputs["prediction"], batch["label"])

    def _log(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric = self.matrices.pop(stage, None)
        if metric is None or trainer.sanity_checking:
            return
        matrix = metric.compute().cpu().numpy()  # every process takes part in the synchronisation
        names = class_names_of(trainer, pl_module) or [str(i) for i in range(len(matrix))]
        if trainer.is_global_zero:
            _log_figure(trainer, f"confusion_matrix/{stage}", confusion_figure(matrix, names))
            counts = {"true": matrix.sum(axis=1), "predicted": matrix.sum(axis=0)}
            figure = distribution_figure(counts, names, f"{stage}: predicted vs true classes")
            _log_figure(trainer, f"class_distribution/{stage}_predicted_vs_true", figure)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("val", pl_module, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("test", pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log("test", trainer, pl_module)


class EpochScheduledCallback(L.Callback):
    """Runs :meth:`log_epoch` at validation end of epochs ``first_epoch + k * every_n_epochs``.

    The defaults give epoch indices 1, 11, 21, ... (Lightning counts epochs from 0), on a fixed
    set of validation series: the first ``num_samples`` of the (unshuffled) validation loader.

    Args:
        first_epoch: the first epoch index logged (0 is the first epoch).
        every_n_epochs: epochs between two logged epochs.
        num_samples: validation series used (all of them when the split is smaller).
    """

    def __init__(self, first_epoch: int = 1, every_n_epochs: int = 10, num_samples: int = 64) -> None:
        if first_epoch < 0 or every_n_epochs < 1 or num_samples < 1:
            raise ValueError(
                f"need first_epoch >= 0, every_n_epochs >= 1, num_samples >= 1; got {first_epoch}, "
                f"{every_n_epochs}, {num_samples}"
            )
        self.first_epoch = first_epoch
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples

    def is_scheduled(self, epoch: int) -> bool:
        return epoch >= self.first_epoch and (epoch - self.first_epoch) % self.every_n_epochs == 0

    def validation_samples(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Batch:
        """The first ``num_samples`` validation series, on the module's device."""
        loader = trainer.val_dataloaders
        loader = loader[0] if isinstance(loader, list) else loader
        parts: list[Batch] = []
        for batch in loader:
            parts.append(batch)
            if sum(len(part["values"]) for part in parts) >= self.num_samples:
                break
        return {
            key: torch.cat([part[key] for part in parts])[: self.num_samples].to(pl_module.device) for key in parts[0]
        }

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.is_scheduled(trainer.current_epoch) or not trainer.is_global_zero:
            return
        if tensorboard_writer(trainer) is None or not trainer.val_dataloaders:
            return
        with torch.no_grad():
            self.log_epoch(trainer, pl_module, self.validation_samples(trainer, pl_module))

    def log_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Batch) -> None:
        raise NotImplementedError


def attention_figure(weights: Tensor, days: Tensor | None, layer: int) -> Figure:
    """One panel per head of a (heads, T, T) attention map; rows are queries, columns keys."""
    heads = weights.shape[0]
    columns = min(heads, 4)
    rows = -(-heads // columns)
    figure = Figure(figsize=(3.2 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    labels = None if days is None else [str(int(day)) for day in days]
    for head, ax in enumerate(axes.flat):
        if head >= heads:
            ax.axis("off")
            continue
        ax.imshow(weights[head].cpu().numpy(), cmap="viridis")
        ax.set_title(f"layer {layer} head {head}", fontsize=9)
        if labels is not None:
            step = max(1, len(labels) // 8)
            ticks = range(0, len(labels), step)
            ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=6)
            ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=6)
            ax.set(xlabel="key day", ylabel="query day")
    return figure


class AttentionMapLogger(EpochScheduledCallback):
    """Attention maps of every layer and head, averaged over fixed validation series.

    Only at the scheduled epochs does the encoder run :meth:`forward_with_attention` (once, on
    ``num_samples`` series); training and all other validation passes keep the fused attention.
    Dates label the axes when the series share their days (otherwise date indices).

    Args:
        first_epoch: the first epoch index logged (0 is the first epoch).
        every_n_epochs: epochs between two logged epochs.
        num_samples: validation series whose attention maps are averaged.
    """

    def log_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Batch) -> None:
        encoder = pl_module.encoder
        if not hasattr(encoder, "forward_with_attention"):
            return
        _, attention = encoder.forward_with_attention(batch["values"], batch["days"], batch["mask"])
        days = batch["days"][0] if (batch["days"] == batch["days"][:1]).all() else None
        for layer, weights in enumerate(attention):
            figure = attention_figure(weights.float().mean(dim=0), days, layer)
            _log_figure(trainer, f"attention/layer_{layer}", figure)


class EmbeddingProjector(EpochScheduledCallback):
    """Pooled encoder features of fixed validation series, for TensorBoard's projector.

    Features are spherized before logging (centred, then scaled to unit norm), which is what the
    projector's "Spherize data" option does; the class name of each series is its metadata
    (choose it under "Color by": TensorBoard's projector offers no way to preselect it).

    Args:
        first_epoch: the first epoch index logged (0 is the first epoch).
        every_n_epochs: epochs between two logged epochs.
        num_samples: validation series projected (all of them when the split is smaller).
    """

    def __init__(self, first_epoch: int = 1, every_n_epochs: int = 10, num_samples: int = 512) -> None:
        super().__init__(first_epoch, every_n_epochs, num_samples)

    def log_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Batch) -> None:
        features = masked_mean(pl_module.encoder(batch["values"], batch["days"], batch["mask"]), batch["mask"]).float()
        features = features - features.mean(dim=0)
        features = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
        names = class_names_of(trainer, pl_module)
        metadata = None
        if "label" in batch and names is not None:
            metadata = [names[int(label)] for label in batch["label"]]
        tensorboard_writer(trainer).add_embedding(
            features.cpu(), metadata=metadata, tag="val_embeddings", global_step=logging_step(trainer)
        )


def flat_hyperparameters(params: Any, prefix: str = "") -> dict[str, Any]:
    """Nested hyper-parameters as ``{"a/b": value}`` with values TensorBoard's hparams accept."""
    if isinstance(params, dict) or hasattr(params, "items"):
        nested = (flat_hyperparameters(value, f"{prefix}{key}/") for key, value in params.items())
        return {name: value for part in nested for name, value in part.items()}
    value = params if isinstance(params, (bool, int, float, str)) else str(params)
    return {prefix.rstrip("/"): value}


class FinalMetrics(L.Callback):
    """Puts the run's final validation and test metrics in TensorBoard's hyper-parameters tab.

    Lightning logs the hyper-parameters when training starts, with a placeholder ``hp_metric`` of
    -1. When fitting (then testing) ends, the hyper-parameters are written again naming the stage's
    scalar metrics (``val/overall_accuracy``, ``val/macro_f1``, ..., ``test/...``; not the
    per-class ones) as the tab's metric columns, whose values TensorBoard reads from the scalars
    already logged; ``hp_metric`` is set to the final ``monitor`` value. Each run is then one row
    of final figures.

    Args:
        monitor: the metric copied to ``hp_metric`` when fitting ends.
    """

    def __init__(self, monitor: str = "val/overall_accuracy") -> None:
        self.monitor = monitor
        self.names: set[str] = set()

    def _write(self, trainer: L.Trainer, stage: str) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if logger is None or not trainer.is_global_zero:
            return
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith(f"{stage}/") and name.count("/") == 1 and value.numel() == 1
        }
        if stage == "val" and self.monitor in metrics:
            logger.log_metrics({"hp_metric": metrics[self.monitor]}, step=logging_step(trainer))
        # Both stages' columns in every write: TensorBoard may show the session of either event file
        # (fit and the test after it write one each); a stage that never ran leaves its column empty.
        self.names |= {f"{other}/{name.split('/', 1)[1]}" for name in metrics for other in ("val", "test")}
        if not self.names:
            return
        writer = logger.experiment._get_file_writer()
        for summary in hparams_summary(flat_hyperparameters(logger.hparams), dict.fromkeys(self.names, 0.0)):
            writer.add_summary(summary, logging_step(trainer))
        writer.flush()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test")
