"""The prediction module of a map: class probabilities of a window's pixels, smoothed on the window."""

from typing import Any

import lightning as L
import torch

from cmap.ml.inference import inference_form
from cmap.postprocessing import BayesianSmoothing


class WindowClassifier(L.LightningModule):
    """Prediction only: class probabilities of a window's pixels, ``batch_size`` pixels at a time,
    smoothed by ``smoothing`` (on the window read with its halo, then cut to the window). With ``fast``,
    the model's inference form (:func:`cmap.ml.inference.inference_form`) computes them where it has one."""

    def __init__(
        self, model: torch.nn.Module, batch_size: int, smoothing: BayesianSmoothing | None = None, fast: bool = True
    ) -> None:
        super().__init__()
        self.model = model
        self.batch_size = batch_size
        self.smoothing = smoothing
        self.inference = inference_form(model) if fast else None  # a submodule: it follows device and precision

    def forward(self, values: torch.Tensor, days: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.model if self.inference is None else self.inference)(values, days, mask)

    def on_predict_start(self) -> None:
        self.model.check_ensemble()  # an ensemble's other members join the model's device

    def on_before_batch_transfer(self, item: Any, dataloader_idx: int) -> Any:
        return self.model.on_before_batch_transfer(item, dataloader_idx)  # the days' range, checked on the CPU

    def predict_step(self, item: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        chunks = [
            torch.softmax(
                self(  # through __call__, so that CompileModel's compiled module runs
                    item["values"][start : start + self.batch_size],
                    item["days"][start : start + self.batch_size],
                    item["mask"][start : start + self.batch_size],
                ).float(),
                dim=-1,
            )
            for start in range(0, len(item["pixels"]), self.batch_size)
        ]
        height, width = (int(v) for v in item["shape"])
        num_classes = self.model.num_classes
        # float32 whatever the precision: under bf16-true, Lightning makes bf16 the default dtype here.
        dense = torch.full((num_classes, height * width), torch.nan, dtype=torch.float32, device=item["values"].device)
        if chunks:
            dense[:, item["pixels"]] = torch.cat(chunks).T
        dense = dense.reshape(num_classes, height, width)
        valid = ~dense[0].isnan()
        if self.smoothing is not None:
            dense = self.smoothing(dense, valid)
        row, col, h, w = (int(v) for v in item["core"])
        return {
            "probabilities": dense[:, row : row + h, col : col + w],
            "valid": valid[row : row + h, col : col + w],
            "window": item["window"],
        }
