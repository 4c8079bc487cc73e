r"""Crop maps: a trained classifier over a raster stack -> a GeoTIFF class map and class probabilities.

    cmap map --checkpoint runs/.../checkpoints/last.ckpt --rasters cube/ --output sinop_map.tif \
        --pattern '_(?P<band>[A-Za-z0-9]+)_(?P<date>\d{4}-\d{2}-\d{2})' --scale 1e-4 --valid_range '[-2000, 10000]'

(``python -m cmap.map`` is the same command.) The stack (:class:`~cmap.data.raster.RasterStack`)
is read window by window, so memory depends on ``window_size``, not on the raster's size. Each
window's pixels are classified ``batch_size`` at a time through Lightning's ``Trainer.predict``
(``accelerator``, ``precision`` such as ``bf16-mixed``); pixels without any valid date are nodata.
Band names, class names, normalisation and the time axis come from the checkpoint's input contract
(:class:`~cmap.data.contract.InputContract`): days are counted as the training series' were, so a
stack that starts later than the training data (a missing first image) is still classified on the
training days.

Outputs, on the input's grid (CRS, transform, size), tiled and DEFLATE-compressed, Cloud Optimized
GeoTIFF by default:

- ``OUTPUT``: uint8 class index (0 .. K-1 in the checkpoint's class order, nodata 255), with a
  colour table, the class names in the tags (``class_names``, JSON) and a QGIS style sidecar
  (``OUTPUT`` with suffix ``.qml``: QGIS shows class names and colours when it opens the map);
- ``OUTPUT`` with ``_probs`` before the suffix (unless ``probabilities=False``): one uint8 band per
  class, the class probability in percent (0..100, nodata 255), bands described by class name.

Files are written under temporary names, with GDAL's write errors raised; each finished file is
reopened and every block read back, then flushed and renamed, class map last (:mod:`cmap.outputs`):
a run that fails (a full disk) or is killed leaves no file under the output names. Output paths are
checked first: never an input (a raster, the checkpoint), never an existing file that is not a cmap
map, never a name among the input rasters that the pattern would read as a date.
"""

import contextlib
import errno
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import lightning as L
import numpy as np
import rasterio
import rasterio.shutil
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from matplotlib import colormaps
from torch.utils.data import DataLoader, Dataset

from cmap.data.contract import InputContract, TimeAxis
from cmap.data.raster import DEFAULT_PATTERN, RASTER_SUFFIXES, RasterStack, pixel_series
from cmap.data.stac import open_stack
from cmap.ml.compile import CompileModel
from cmap.outputs import (
    OutputPathError,
    check_outputs,
    gdal_errors,
    publish,
    remove_stale_partials,
    temporary_path,
    verify_raster,
)
from cmap.predictions import load_classifier

NODATA = 255
MAX_CLASSES = 255


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
    """A qualitative colour per class (matplotlib's tab10 / tab20)."""
    palette = colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [tuple(int(round(255 * v)) for v in palette(i % palette.N)[:3]) for i in range(num_classes)]


def qgis_style(class_names: Sequence[str]) -> str:
    """A QGIS layer style (.qml) of a paletted class map: a value, colour and label per class."""
    entries = "\n".join(
        f'        <paletteEntry value="{i}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" label={quoteattr(name)}/>'
        for i, (name, (r, g, b)) in enumerate(zip(class_names, class_colours(len(class_names)), strict=True))
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28">\n  <pipe>\n'
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
        f"      <colorPalette>\n{entries}\n      </colorPalette>\n"
        "    </rasterrenderer>\n  </pipe>\n</qgis>\n"
    )


def probabilities_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_probs{output.suffix}")


class StackWindows(Dataset):
    """Windows of a raster stack as batches of normalised pixel series (the :class:`~cmap.data.Batch`
    keys, plus ``pixels``: the window's row-major pixel indices that have a valid date, and
    ``window``: the window's index). Safe in DataLoader worker processes (each opens its files)."""

    def __init__(self, stack: RasterStack, window_size: int, days: np.ndarray, contract: InputContract) -> None:
        self.stack = stack
        self.windows = list(stack.windows(window_size))
        self.days = torch.from_numpy(days)
        self.contract = contract
        self._datasets: dict[Path, Any] | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_datasets": None}  # open files do not cross processes

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._datasets is None:
            self._datasets = self.stack.open()
        series = pixel_series(self.stack.read(self.windows[index], self._datasets))  # (h * w, T, C)
        values, mask = self.contract.model_inputs(series)
        pixels = np.flatnonzero(mask.any(axis=1))  # pixels with a valid date; the others are nodata
        return {
            "values": torch.from_numpy(values[pixels]),
            "days": self.days.expand(len(pixels), -1),
            "mask": torch.from_numpy(mask[pixels]),
            "pixels": torch.from_numpy(pixels),
            "window": torch.tensor(index),
        }


class WindowClassifier(L.LightningModule):
    """Prediction only: class probabilities of a window's pixels, ``batch_size`` pixels at a time."""

    def __init__(self, model: torch.nn.Module, batch_size: int) -> None:
        super().__init__()
        self.model = model
        self.batch_size = batch_size

    def forward(self, values: torch.Tensor, days: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(values, days, mask)

    def on_predict_start(self) -> None:
        self.model.check_ensemble()  # an ensemble's other members join the model's device

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
        empty = item["values"].new_zeros((0, self.model.num_classes))
        return {
            "probabilities": torch.cat(chunks) if chunks else empty,
            "pixels": item["pixels"],
            "window": item["window"],
        }


class MapWriter(BasePredictionWriter):
    """Writes each window's predictions into the class map (and probability raster) as they come.

    Temporary files are renamed to the output names only when every window is written; on an
    exception they are removed.
    """

    def __init__(
        self,
        output: str | Path,
        stack: RasterStack,
        windows: list,
        class_names: Sequence[str],
        probabilities: bool = True,
        cog: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.stack, self.windows, self.class_names = stack, windows, list(class_names)
        self.probabilities, self.cog = probabilities, cog
        self._files: dict[Path, Any] = {}  # final path -> open temporary dataset

    def _temporary(self, path: Path, suffix: str = "") -> Path:
        return temporary_path(path, suffix)

    def _targets(self) -> list[Path]:
        return [probabilities_path(self.output)] * self.probabilities + [self.output]

    def _partials(self) -> list[Path]:
        """Every temporary file this writer may leave (removed on failure)."""
        return [self._temporary(path, suffix) for path in self._targets() for suffix in ("", ".cog")] + [
            self._temporary(self.output.with_suffix(".qml"))
        ]

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            raise ValueError("cmap map writes one file from one process: use devices=1 (map tiles in parallel instead)")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        for path in [*self._targets(), self.output.with_suffix(".qml")]:
            remove_stale_partials(path)  # left by killed runs
        profile = {
            "driver": "GTiff",
            "dtype": "uint8",
            "nodata": NODATA,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
            **self.stack.profile,
        }
        for path in self._targets():
            count = self._count(path)
            with gdal_errors(self._temporary(path)):
                dataset = rasterio.open(self._temporary(path), "w", count=count, **profile)
            self._files[path] = dataset
            dataset.update_tags(class_names=json.dumps(self.class_names))
            if path == self.output:
                dataset.set_band_description(1, "class")
                # A GeoTIFF palette holds 256 RGB entries (GDAL makes only nodata transparent): the
                # classes' colours, the rest black.
                dataset.write_colormap(
                    1, {i: (*rgb, 255) for i, rgb in enumerate(class_colours(len(self.class_names)))}
                )
                # Class names with the band, as GDAL band metadata (gdalinfo, rasterio's tags(1)).
                dataset.update_tags(1, **{str(i): name for i, name in enumerate(self.class_names)})
            else:
                for band, name in enumerate(self.class_names, start=1):
                    dataset.set_band_description(band, name)
                # GDAL's own scale and unit: a GIS reads probabilities (percent * 0.01), not 0..100.
                dataset.scales = [0.01] * count
                dataset.offsets = [0.0] * count
                dataset.units = ["probability"] * count
                dataset.update_tags(scale="0.01", unit="probability in percent")

    def _count(self, path: Path) -> int:
        return len(self.class_names) if path != self.output else 1

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, torch.Tensor],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        window = self.windows[int(prediction["window"])]
        height, width = int(window.height), int(window.width)
        pixels = prediction["pixels"].cpu().numpy()
        probabilities = prediction["probabilities"].cpu().numpy()
        classes = np.full(height * width, NODATA, dtype=np.uint8)
        classes[pixels] = probabilities.argmax(axis=1)
        with gdal_errors(self._temporary(self.output)):  # GDAL flushes cached blocks at any write
            self._files[self.output].write(classes.reshape(height, width), 1, window=window)
        if self.probabilities:
            percent = np.full((len(self.class_names), height * width), NODATA, dtype=np.uint8)
            percent[:, pixels] = np.rint(100 * probabilities.T)
            with gdal_errors(self._temporary(probabilities_path(self.output))):
                self._files[probabilities_path(self.output)].write(percent.reshape(-1, height, width), window=window)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every file is finished and verified (reopened, every block read) before any is renamed:
        # a failure (a full disk) leaves nothing new under the output names (cmap.outputs).
        for path, dataset in list(self._files.items()):
            with gdal_errors(self._temporary(path)):  # blocks still cached are written at close
                dataset.close()
        self._files.clear()
        staged: dict[Path, Path] = {}  # final path -> verified temporary file
        for path in self._targets():
            partial = self._temporary(path)
            if self.cog:  # a COG is written in one go (overviews, then tiles), from the finished GeoTIFF
                verify_raster(partial, self._count(path), self.stack.shape)
                with gdal_errors(self._temporary(path, ".cog")):
                    rasterio.shutil.copy(
                        partial, self._temporary(path, ".cog"), driver="COG", compress="DEFLATE",
                        overview_resampling="nearest", BIGTIFF="IF_SAFER",
                    )  # fmt: skip
                os.remove(partial)
                partial = self._temporary(path, ".cog")
            verify_raster(partial, self._count(path), self.stack.shape)
            staged[path] = partial
        style, text = self._temporary(self.output.with_suffix(".qml")), qgis_style(self.class_names)
        style.write_text(text)
        if style.read_text() != text:
            raise OSError(errno.EIO, f"{style}: the written style differs from what was written")
        staged = {path: staged[path] for path in self._targets()[:-1]} | {
            self.output.with_suffix(".qml"): style,
            self.output: staged[self.output],  # the class map last
        }
        for path, partial in staged.items():
            publish(partial, path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        for dataset in self._files.values():
            with contextlib.suppress(Exception):
                dataset.close()
        self._files.clear()
        for partial in self._partials():
            partial.unlink(missing_ok=True)


def is_cmap_raster(path: Path) -> bool:
    """A class map or probability raster written by ``cmap map`` (class names in its tags)."""
    if not path.is_file():
        return False
    try:
        with rasterio.open(path) as dataset:
            return "class_names" in dataset.tags()
    except rasterio.errors.RasterioError:
        return False


def is_cmap_style(path: Path) -> bool:
    """A QGIS paletted style as ``cmap map`` writes beside its maps."""
    try:
        text = path.read_text(errors="replace")[:4096]
    except OSError:
        return False
    return text.startswith("<!DOCTYPE qgis") and 'rasterrenderer type="paletted"' in text


def check_map_outputs(
    output: Path, probabilities: bool, stack: RasterStack, checkpoints: list[str], pattern: str
) -> None:
    """Refuse outputs that are inputs (rasters, checkpoints), other files, or files a later run would read as dates."""
    targets = [output, *([probabilities_path(output)] if probabilities else [])]
    if output.suffix.lower() == ".qml":  # the style beside the map would replace the map itself
        raise OutputPathError(f"{output}: the crop map is a GeoTIFF (.tif), and its QGIS style goes to the .qml name")
    rasters = list(dict.fromkeys(path for paths in stack.paths for path in paths))
    inputs = [*map(Path, checkpoints), *rasters]
    check_outputs(targets, inputs, is_cmap_raster, "crop map")
    check_outputs([output.with_suffix(".qml")], inputs, is_cmap_style, "crop map's QGIS style")
    folders = {Path(os.path.abspath(path.parent)).resolve() for path in rasters}
    regex = re.compile(pattern)
    for target in targets:
        if (
            Path(os.path.abspath(target.parent)).resolve() in folders
            and target.suffix.lower() in RASTER_SUFFIXES
            and regex.search(target.name)
        ):
            raise OutputPathError(
                f"{target}: the crop map would be written among its input rasters with a name matching the pattern "
                f"{pattern!r}, so the next run on that folder would read it as a date; choose another output path"
            )


def map_rasters(
    checkpoint: str | list[str],
    rasters: str,
    output: str,
    pattern: str = DEFAULT_PATTERN,
    scale: float | None = None,
    offset: float | None = None,
    valid_range: tuple[float, float] | None = None,
    resolution: float | None = None,
    masked_classes: list[int] | None = None,
    resampling: str = "nearest",
    reference_date: str | None = None,
    window_size: int = 256,
    batch_size: int = 8192,
    probabilities: bool = True,
    cog: bool = True,
    num_workers: int = 0,
    accelerator: str = "auto",
    precision: str = "32-true",
    compile: bool = False,
    progress: bool | None = None,
    threads: int | None = None,
) -> Path:
    """Classify every pixel of a raster stack with a trained classifier and write the crop map.

    Args:
        checkpoint: a ``cmap fit`` checkpoint of a Classifier (its input contract: band names,
            class names, normalisation, time axis and raw-value convention), or a list of them: an
            ensemble averaging their class probabilities (``'[seed0.ckpt, seed1.ckpt]'``; the input
            contracts must agree).
        rasters: folder of rasters, one file per date (or per date and band), see ``pattern``; or STAC
            items (a JSON file or URL, a catalogue folder) or a folder of Sentinel-2 L2A products (SAFE
            folders or COG folders): :mod:`cmap.data.stac`.
        output: the class map GeoTIFF to write (``*_probs.tif`` and ``.qml`` beside it).
        pattern: regular expression on file names with a ``date`` group, and a ``band`` group
            when each file holds one band (:mod:`cmap.data.raster`).
        scale: physical value = raw * scale + offset, as in the training data (default: the
            checkpoint's raw-value convention when its samples came from rasters, else 1).
        offset: see ``scale`` (default: the checkpoint's, else 0).
        valid_range: raw values outside [low, high] are missing (clouds, fill values); default as
            ``scale``.
        resolution: STAC: pixel size of the target grid, in its CRS's units (default: the finest band's).
        masked_classes: Sentinel-2: SCL classes that make a date missing (default: no data, saturated,
            cloud shadows, clouds, cirrus, snow: ``[0, 1, 3, 8, 9, 10, 11]``; ``[]``: none).
        resampling: STAC: how bands off the target grid are resampled (``nearest``, ``bilinear``...).
        reference_date: day 0 of the dates (YYYY-MM-DD), replacing the checkpoint's time axis
            (default: the time axis of the training data; for data without a calendar, days
            since the stack's first date).
        window_size: pixels per side of the windows read at once (memory scales with its square).
        batch_size: pixels per forward pass.
        probabilities: also write the class probabilities.
        cog: write Cloud Optimized GeoTIFFs (else tiled GeoTIFFs).
        num_workers: DataLoader processes reading windows.
        accelerator: Lightning Trainer's device type: ``auto``, ``cpu``, ``gpu``.
        precision: Lightning Trainer's precision. ``bf16-true`` (the model cast to bf16) is the
            fastest on GPUs and on CPUs with bf16 instructions (AVX512-BF16, AMX); speed-ups and their
            accuracy cost are measured by ``benchmarks/inference.py`` (figures in benchmarks/README.md).
        compile: ``torch.compile`` the model (:class:`~cmap.ml.compile.CompileModel`, weights frozen into
            the graph): faster once compiled (seconds to a minute, twice: the second batch size makes
            it dynamic), so worth it for large rasters.
        progress: show a progress bar (default: when the output is a terminal).
        threads: CPU threads of PyTorch (default: PyTorch's, one per core); the free cores when other
            jobs share the machine.
    """
    if threads:
        torch.set_num_threads(threads)
    checkpoints = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint)
    model = load_classifier(checkpoints)
    contract: InputContract = model.input_contract
    if len(model.class_names) > MAX_CLASSES:
        raise ValueError(
            f"{checkpoints[0]}: {len(model.class_names)} classes do not fit a uint8 map (max {MAX_CLASSES})"
        )
    stack = open_stack(
        rasters, list(contract.band_names), contract.raw_values, pattern, scale, offset, valid_range, resolution,
        masked_classes, resampling,
    )  # fmt: skip
    check_map_outputs(Path(output), probabilities, stack, checkpoints, pattern)
    time_axis = contract.time_axis if reference_date is None else TimeAxis.from_reference_date(reference_date)
    windows = StackWindows(stack, window_size, stack.days(time_axis), contract)
    writer = MapWriter(output, stack, windows.windows, model.class_names, probabilities, cog)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        callbacks=[writer, *([CompileModel()] if compile else [])],
        enable_progress_bar=sys.stdout.isatty() if progress is None else progress,
        enable_model_summary=False,
    )
    loader = DataLoader(windows, batch_size=None, num_workers=num_workers)
    with warnings.catch_warnings():  # each item is a window, not a batch of dataset indices: nothing to infer
        warnings.filterwarnings("ignore", "Couldn't infer the batch indices")
        trainer.predict(WindowClassifier(model, batch_size), loader, return_predictions=False)
    return Path(output)


def main(args: list[str] | None = None, prog: str = "python -m cmap.map") -> None:
    """``cmap map`` / ``python -m cmap.map``: :func:`map_rasters` from the command line (or a YAML ``--config``)."""
    from jsonargparse import auto_cli

    print(auto_cli(map_rasters, args=args, as_positional=False, prog=prog))


if __name__ == "__main__":
    main()
