"""Faster inference options: bf16 weights (Lightning's ``bf16-true``) keep the date encoding exact;
``torch.compile`` through :class:`cmap.ml.compile.CompileModel` (``cmap map --compile``, a callback
for ``cmap predict``) changes no result."""

import copy

import lightning as L
import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from cmap.data import SyntheticSITS
from cmap.mapping import map_rasters
from cmap.mapping.products import probabilities_path
from cmap.ml.classifiers import Classifier
from cmap.ml.compile import CompileModel
from cmap.ml.embeddings import PositionalEncoding

from .conftest import fit_tiny_classifier, quiet_trainer, tiny_classifier, tiny_encoder_config

CLASSES = ["a", "b", "c"]


def test_positional_encoding_cast_to_bf16_computes_angles_in_float32():
    encoding = PositionalEncoding(d_model=64, tau=10000, max_len=10000)
    days = torch.tensor([[0, 7, 365, 1234, 9999]])
    reference = encoding(days)
    cast = copy.deepcopy(encoding).to(torch.bfloat16)
    encoded = cast(days)
    assert encoded.dtype == torch.bfloat16
    # Only the output is rounded to bf16 (half an ulp of values in [-1, 1] is 2^-9); rounded
    # frequencies times days in the thousands would be off by whole radians.
    torch.testing.assert_close(encoded.float(), reference, atol=2**-8, rtol=0)


def predict(model: Classifier, data: SyntheticSITS, precision: str) -> dict[str, torch.Tensor]:
    batches = quiet_trainer(accelerator="cpu", precision=precision).predict(copy.deepcopy(model), datamodule=data)
    return {key: torch.cat([batch[key] for batch in batches]) for key in ("probabilities", "prediction")}


def test_bf16_true_prediction_matches_float32():
    data = SyntheticSITS(CLASSES, num_bands=2, num_dates=20, num_train=64, num_test=256, batch_size=128)
    encoder = tiny_encoder_config(2, d_model=32, heads=4, layers=2, dropout=0.0)
    model = tiny_classifier(len(CLASSES), encoder, class_names=CLASSES).eval()
    reference, bf16 = predict(model, data, "32-true"), predict(model, data, "bf16-true")
    assert bf16["probabilities"].dtype == torch.float32  # predict_step returns float32 probabilities
    torch.testing.assert_close(bf16["probabilities"], reference["probabilities"], atol=0.02, rtol=0)
    assert (bf16["prediction"] == reference["prediction"]).float().mean() > 0.95


class CountingCompile(CompileModel):
    """CompileModel with TorchDynamo's ``eager`` backend: the same tracing and compiled calls as
    Inductor's, without its code generation (tens of seconds); records the stages it compiled."""

    stages: list[str] = []

    def __init__(self) -> None:
        super().__init__(backend="eager")

    def setup(self, trainer, pl_module, stage) -> None:
        super().setup(trainer, pl_module, stage)
        assert not torch.backends.mha.get_fastpath_enabled()  # Inductor sees the transformer's ops
        self.stages.append(stage)


def test_compile_option_of_map_and_predict_gives_the_same_results(tmp_path, monkeypatch):
    synthetic = {
        "class_path": "cmap.data.SyntheticSITS",
        "init_args": {"class_names": CLASSES, "num_bands": 1, "num_dates": 6, "num_train": 64, "num_test": 16,
                      "batch_size": 32},
    }  # fmt: skip
    checkpoint = fit_tiny_classifier(tmp_path / "run", synthetic, num_bands=1, num_classes=3, steps=2)
    rasters = tmp_path / "rasters"
    rasters.mkdir()
    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": 30, "height": 20, "count": 1, "dtype": "float32", "crs": "EPSG:32631"}
    for date in ("2021-04-01", "2021-05-01", "2021-06-01"):
        with rasterio.open(rasters / f"TILE_b1_{date}.tif", "w", transform=from_origin(0, 0, 10, 10), **profile) as out:
            out.write(rng.normal(size=(1, 20, 30)).astype(np.float32))
    monkeypatch.setattr("cmap.mapping.run.CompileModel", CountingCompile)
    torch._dynamo.reset()
    maps = {}
    for compiled in (False, True):
        output = tmp_path / f"map_{compiled}.tif"
        map_rasters(str(checkpoint), str(rasters), str(output), pattern=r"_(?P<band>b1)_(?P<date>\d{4}-\d{2}-\d{2})",
                    window_size=16, batch_size=100, compile=compiled, progress=False)  # fmt: skip
        with rasterio.open(probabilities_path(output)) as dataset:
            maps[compiled] = dataset.read()
    assert CountingCompile.stages == ["predict"] and torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert torch.backends.mha.get_fastpath_enabled()  # restored
    assert np.abs(maps[True].astype(int) - maps[False].astype(int)).max() <= 1  # percent, rounded

    # cmap predict: the same callback compiles the Classifier (its predict_step calls the module).
    data = SyntheticSITS(["a", "b", "c"], num_bands=1, num_dates=6, num_train=64, num_test=40, batch_size=16)
    model = Classifier.load_from_checkpoint(checkpoint).eval()
    plain = L.Trainer(logger=False, enable_progress_bar=False).predict(copy.deepcopy(model), datamodule=data)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, callbacks=[CountingCompile()])
    compiled = trainer.predict(model, datamodule=data)
    assert CountingCompile.stages == ["predict", "predict"]
    for a, b in zip(plain, compiled, strict=True):
        torch.testing.assert_close(a["probabilities"], b["probabilities"])
