"""Prediction with trained classifiers: loading one from its checkpoint, and ``cmap predict``'s table.

:func:`load_classifier` gives the Classifier of a ``cmap fit`` checkpoint with its
``input_contract`` (:class:`~cmap.data.contract.InputContract`: bands, classes, normalisation, time
axis), which ``cmap map`` and every other prediction path use to prepare inputs.

:class:`PredictionWriter` writes ``cmap predict``'s predictions to a table, one row per series::

    cmap predict --config run.yaml --ckpt_path last.ckpt \\
        --trainer.callbacks+=cmap.predictions.PredictionWriter --trainer.callbacks.output predictions.parquet

Columns: ``index`` (the series' row in the predicted split), ``sample_id`` (when the store keeps
sample ids, as stores converted from a table do: the id of the table's ``sample_id`` column, to join
predictions back to it), ``class`` (name), ``confidence`` (its probability) and
``probability/<class>`` per class. Parquet (``.parquet``) or CSV (any other
suffix). With several processes (``--trainer.devices 2``, DDP), each writes its own rows to
``<stem>.rank<k><suffix>``; rows are keyed by ``index`` (a sampler may repeat a few to even out
the processes). Files are written under a temporary name, read back, then renamed (:mod:`cmap.outputs`);
an existing file is replaced only when it is a prediction table, never an input.
"""

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from cmap.data.contract import InputContract
from cmap.data.dataset import SeriesDataset
from cmap.ml.classifiers import Classifier
from cmap.ml.weights import read_checkpoint
from cmap.outputs import InputError, check_outputs, write_bytes_atomically


def load_classifier(path: str | Path | Sequence[str | Path]) -> Classifier:
    """The Classifier of a ``cmap fit`` checkpoint, in eval mode, with its ``input_contract``.

    Several checkpoints give an ensemble: the first checkpoint's Classifier averaging the class
    probabilities of all of them (:meth:`~cmap.ml.classifiers.Classifier.ensemble_with`; their
    input contracts must agree).
    """
    if not isinstance(path, (str, Path)):
        paths = list(path)
        if not paths:
            raise InputError("no checkpoint given")
        model = load_classifier(paths[0])
        if len(paths) > 1:
            model.ensemble_with([load_classifier(member) for member in paths[1:]], paths[1:])
        return model
    InputContract.from_checkpoint(read_checkpoint(path), str(path))  # a clear error before Lightning's
    try:
        model = Classifier.load_from_checkpoint(path, map_location="cpu")
    except Exception as error:
        raise InputError(f"{path}: not a checkpoint of a cmap Classifier ({error})") from error
    return model.eval()


def predicted_sample_ids(trainer: L.Trainer, indices: list[int]) -> np.ndarray | None:
    """The sample ids of the predicted split's series at dataset positions ``indices`` (None when
    its series have no ids); only those ids are read from the store."""
    loaders = trainer.predict_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    dataset = getattr(loader, "dataset", None)
    if not isinstance(dataset, SeriesDataset) or dataset.series.sample_ids is None:
        return None
    rows = np.asarray(dataset.index[np.asarray(indices, dtype=np.int64)], dtype=np.int64)  # store rows
    return np.asarray(dataset.series.sample_ids[rows]).astype(object)


class PredictionWriter(BasePredictionWriter):
    """Collects the Classifier's ``predict_step`` outputs with their dataset indices, then writes them."""

    def __init__(self, output: str = "predictions.parquet") -> None:
        super().__init__(write_interval="epoch")
        self.output = Path(output)

    def path_for(self, trainer: L.Trainer) -> Path:
        if trainer.world_size == 1:
            return self.output
        return self.output.with_name(f"{self.output.stem}.rank{trainer.global_rank}{self.output.suffix}")

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        if not predictions:
            return
        # Lightning unwraps the outputs of a single dataloader, not their indices (a list per dataloader).
        if isinstance(predictions[0], list):
            predictions = predictions[0]
        if batch_indices and batch_indices[0] and isinstance(batch_indices[0][0], list):
            batch_indices = batch_indices[0]
        indices = [index for batch in batch_indices for index in batch]
        probabilities = torch.cat([batch["probabilities"] for batch in predictions]).float().cpu().numpy()
        if len(indices) != len(probabilities):
            raise RuntimeError(
                f"{len(indices)} dataset indices for {len(probabilities)} predictions: the predict dataloader "
                "needs a batch sampler for PredictionWriter"
            )
        class_names = list(getattr(pl_module, "class_names", range(probabilities.shape[1])))
        table = pd.DataFrame({"index": indices})
        sample_ids = predicted_sample_ids(trainer, indices)
        if sample_ids is not None:
            table["sample_id"] = sample_ids
        table["class"] = [class_names[i] for i in probabilities.argmax(axis=1)]
        table["confidence"] = probabilities.max(axis=1)
        for i, name in enumerate(class_names):
            table[f"probability/{name}"] = probabilities[:, i]
        write_table(table, self.path_for(trainer))

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before predicting: the table never replaces an input (store, checkpoint) or a file cmap did not write.
        data = trainer.datamodule
        inputs = [getattr(data, name, None) for name in ("path", "test_path")] + [trainer.ckpt_path]
        check_outputs([self.path_for(trainer)], [p for p in inputs if p], is_prediction_table, "prediction table")


def is_prediction_table(path: Path) -> bool:
    """A table written by :class:`PredictionWriter` (``class`` and ``confidence`` columns)."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            columns = pq.read_schema(path).names
        else:
            with open(path, encoding="utf-8") as file:
                columns = file.readline().strip().split(",")
    except (OSError, UnicodeDecodeError, ValueError, ImportError):
        return False
    return path.is_file() and {"class", "confidence"} <= set(columns)


def write_table(table: pd.DataFrame, path: Path) -> Path:
    """Write ``table`` as Parquet or CSV (by suffix), atomically (:func:`cmap.outputs.write_bytes_atomically`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    if path.suffix == ".parquet":
        table.to_parquet(buffer, index=False)
    else:
        buffer.write(table.to_csv(index=False).encode())
    return write_bytes_atomically(path, buffer.getbuffer())
