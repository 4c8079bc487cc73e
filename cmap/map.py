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
GeoTIFF by default, each readable by GDAL without cmap's sidecars:

- ``OUTPUT``: uint8 class index (0 .. K-1 in the checkpoint's class order, nodata 255), with a
  colour table, the class names in the band's metadata (``0=...``) and the tags (``class_names``,
  JSON); GDAL's sidecar ``OUTPUT.aux.xml`` with the category names and a thematic raster attribute
  table (:func:`gdal_attributes`), and a QGIS style (``OUTPUT`` with suffix ``.qml``);
- ``OUTPUT`` with ``_probs`` before the suffix (unless ``probabilities=False``): one uint8 band per
  class, the class probability in percent (0..100, nodata 255, GDAL scale 0.01), bands described by
  class name;
- ``OUTPUT`` with ``_uncertainty`` (``uncertainty=True``): normalised entropy and margin uncertainty
  in percent (:mod:`cmap.postprocessing`);
- with ``parcels``, a GeoPackage of the polygons' class summaries (:mod:`cmap.parcels`).

``smoothing`` smooths the probabilities (sits' Bayesian smoother) on windows read with a halo, so
the result does not depend on the window size.

Several processes (Lightning's DDP strategy: ``devices``, ``num_nodes``, ``strategy``; torchrun and
SLURM) share the windows (:class:`WindowsToDo`); each finished window is saved as a part
(:class:`MapParts`), and process 0 assembles the rasters from the parts when every process is done
(:meth:`MapWriter.assemble`). Parts outlive a failed or killed run, so the same command resumes.

Rasters are written under temporary names, with GDAL's write errors raised; each finished file is
reopened and every block read back, then flushed and renamed, class map last (:mod:`cmap.outputs`):
a run that fails (a full disk) or is killed leaves no file under the output names. Output paths are
checked first: never an input (a raster, the checkpoint), never an existing file that is not a cmap
map, never a name among the input rasters that the pattern would read as a date.
"""

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import lightning as L
import numpy as np
import rasterio
import rasterio.shutil
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from matplotlib import colormaps
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset, Sampler

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
    write_bytes_atomically,
)
from cmap.parcels import is_cmap_parcels, read_parcels, summarise_parcels
from cmap.postprocessing import BayesianSmoothing, uncertainty_bands
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


def uncertainty_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_uncertainty{output.suffix}")


def attributes_path(output: Path) -> Path:
    """GDAL's sidecar (PAM) of the class map: its category names and raster attribute table."""
    return output.with_name(f"{output.name}.aux.xml")


def parts_path(output: Path) -> Path:
    """The hidden folder of the finished windows of a map being made (kept until the map is published)."""
    return output.with_name(f".{output.name}.partial-parts")


def gdal_attributes(class_names: Sequence[str]) -> str:
    """GDAL's PAM XML of the class band: category names and a thematic raster attribute table (value,
    class, red, green, blue, alpha), one row per class. ``gdalinfo`` lists the categories; QGIS and
    ArcGIS read the table. GeoTIFF itself cannot hold either (GDAL keeps them in ``.aux.xml``)."""
    # Field types: 0 integer, 2 string. Usages: 5 min-max (the pixel value), 2 name, 6-9 red..alpha.
    fields = [("value", 0, 5), ("class", 2, 2), ("red", 0, 6), ("green", 0, 7), ("blue", 0, 8), ("alpha", 0, 9)]
    definitions = "".join(
        f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{kind}</Type><Usage>{usage}</Usage></FieldDefn>\n'
        for i, (name, kind, usage) in enumerate(fields)
    )
    rows = "".join(
        f'      <Row index="{i}"><F>{i}</F><F>{escape(name)}</F><F>{r}</F><F>{g}</F><F>{b}</F><F>255</F></Row>\n'
        for i, (name, (r, g, b)) in enumerate(zip(class_names, class_colours(len(class_names)), strict=True))
    )
    categories = "".join(f"      <Category>{escape(name)}</Category>\n" for name in class_names)
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        f"    <CategoryNames>\n{categories}    </CategoryNames>\n"
        f'    <GDALRasterAttributeTable tableType="thematic">\n{definitions}{rows}    </GDALRasterAttributeTable>\n'
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )


def grown(window: Window, halo: int, shape: tuple[int, int]) -> Window:
    """``window`` with ``halo`` more pixels on each side, within a grid of ``shape`` (height, width)."""
    top, left = max(0, int(window.row_off) - halo), max(0, int(window.col_off) - halo)
    bottom = min(shape[0], int(window.row_off + window.height) + halo)
    right = min(shape[1], int(window.col_off + window.width) + halo)
    return Window(left, top, right - left, bottom - top)


class StackWindows(Dataset):
    """Windows of a raster stack as batches of normalised pixel series (the :class:`~cmap.data.Batch`
    keys, plus ``pixels``: the row-major pixel indices with a valid date of the window read, ``shape``
    its height and width, ``core``: the window itself (row, column, height, width) inside what was
    read, and ``window``: its index). With ``halo``, each window is read with ``halo`` more pixels on
    each side (within the grid), which spatial smoothing needs. Safe in DataLoader worker processes
    (each opens its files)."""

    def __init__(
        self, stack: RasterStack, window_size: int, days: np.ndarray, contract: InputContract, halo: int = 0
    ) -> None:
        self.stack = stack
        self.windows = list(stack.windows(window_size))
        self.days = torch.from_numpy(days)
        self.contract = contract
        self.halo = halo
        self._datasets: dict[Path, Any] | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_datasets": None}  # open files do not cross processes

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._datasets is None:
            self._datasets = self.stack.open()
        window = self.windows[index]
        read = grown(window, self.halo, self.stack.shape)
        series = pixel_series(self.stack.read(read, self._datasets))  # (h * w, T, C)
        values, mask = self.contract.model_inputs(series)
        pixels = np.flatnonzero(mask.any(axis=1))  # pixels with a valid date; the others are nodata
        core = (window.row_off - read.row_off, window.col_off - read.col_off, window.height, window.width)
        return {
            "values": torch.from_numpy(values[pixels]),
            "days": self.days.expand(len(pixels), -1),
            "mask": torch.from_numpy(mask[pixels]),
            "pixels": torch.from_numpy(pixels),
            "shape": torch.tensor([int(read.height), int(read.width)]),
            "core": torch.tensor([int(v) for v in core]),
            "window": torch.tensor(index),
        }


class WindowClassifier(L.LightningModule):
    """Prediction only: class probabilities of a window's pixels, ``batch_size`` pixels at a time,
    smoothed by ``smoothing`` (on the window read with its halo, then cut to the window)."""

    def __init__(self, model: torch.nn.Module, batch_size: int, smoothing: BayesianSmoothing | None = None) -> None:
        super().__init__()
        self.model = model
        self.batch_size = batch_size
        self.smoothing = smoothing

    def forward(self, values: torch.Tensor, days: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(values, days, mask)

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


class WindowsToDo(Sampler[int]):
    """The windows this process classifies: every ``world_size``-th one from its rank, less those
    already written by an earlier run (``parts``). Rank and world size are read when the windows are
    first asked for, in the processes Lightning's DDP strategy (or torchrun, SLURM) started."""

    def __init__(self, num_windows: int, parts: "MapParts") -> None:
        self.num_windows, self.parts = num_windows, parts
        self._indices: list[int] | None = None

    def indices(self) -> list[int]:
        if self._indices is None:
            rank, world = 0, 1
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            mine = range(rank, self.num_windows, world)
            self._indices = [index for index in mine if not self.parts.done(index)]
            if world > 1 or len(self._indices) < len(mine):  # said when it tells something: shared or resumed
                print(
                    f"cmap map: process {rank} of {world}: {len(self._indices)} windows to classify, "
                    f"{len(mine) - len(self._indices)} already written",
                    file=sys.stderr,
                )
        return self._indices

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())


class MapParts:
    """The finished windows of a map being made: one ``.npz`` file per window in a hidden folder
    beside the output, named by the window and a key of everything that sets the pixels (inputs,
    model, options), so a rerun of the same command skips them and a changed command ignores them."""

    def __init__(self, output: Path, key: str) -> None:
        self.folder, self.key = parts_path(output), key

    def path(self, index: int) -> Path:
        return self.folder / f"window-{index:07d}-{self.key}.npz"

    def done(self, index: int) -> bool:
        return self.path(index).is_file()

    def save(self, index: int, **arrays: np.ndarray) -> None:
        """Written atomically (:func:`~cmap.outputs.write_bytes_atomically`): a part is whole or absent."""
        self.folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        # No scan of the folder per window (it grows with the map): remove() takes stale partials with it.
        write_bytes_atomically(self.path(index), buffer.getbuffer(), remove_stale=False)

    def load(self, index: int) -> dict[str, np.ndarray]:
        path = self.path(index)
        try:
            with np.load(path) as part:
                return {name: part[name] for name in part.files}
        except (OSError, ValueError, EOFError) as error:  # a part damaged after it was written
            path.unlink(missing_ok=True)
            raise OSError(
                errno.EIO, f"{path}: unreadable part of the map ({error}); removed: run the command again"
            ) from error

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class MapWriter(BasePredictionWriter):
    """Writes each window's predictions as a part (:class:`MapParts`) as they come; :meth:`assemble`
    then writes the class map, probability and uncertainty rasters from the parts.

    Temporary rasters are renamed to the output names only when every window is written and every
    file verified; on an exception they are removed (the parts are kept: the next run resumes).
    """

    def __init__(
        self,
        output: str | Path,
        stack: RasterStack,
        windows: list,
        class_names: Sequence[str],
        parts: MapParts,
        probabilities: bool = True,
        uncertainty: bool = False,
        cog: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.stack, self.windows, self.class_names, self.parts = stack, windows, list(class_names), parts
        self.probabilities, self.uncertainty, self.cog = probabilities, uncertainty, cog
        self._files: dict[Path, Any] = {}  # final path -> open temporary dataset

    def _temporary(self, path: Path, suffix: str = "") -> Path:
        return temporary_path(path, suffix)

    def _targets(self) -> list[Path]:
        return map_rasters_of(self.output, self.probabilities, self.uncertainty)

    def _sidecars(self) -> list[Path]:
        return map_sidecars(self.output)

    def _partials(self) -> list[Path]:
        """Every temporary file this writer may leave (removed on failure)."""
        return [self._temporary(path, suffix) for path in self._targets() for suffix in ("", ".cog")] + [
            self._temporary(path) for path in self._sidecars()
        ]

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)

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
        index = int(prediction["window"])
        probabilities = prediction["probabilities"].float()
        valid = prediction["valid"].cpu().numpy()
        classes = np.full(valid.shape, NODATA, dtype=np.uint8)
        classes[valid] = probabilities.argmax(dim=0).cpu().numpy()[valid]
        part = {"classes": classes}
        if self.probabilities:
            part["probabilities"] = percent(probabilities, valid)
        if self.uncertainty:
            part["uncertainty"] = percent(uncertainty_bands(probabilities), valid)
        self.parts.save(index, **part)

    def _count(self, path: Path) -> int:
        if path == self.output:
            return 1
        return len(self.class_names) if path == probabilities_path(self.output) else 2

    def _open(self, path: Path, profile: dict[str, Any]) -> Any:
        with gdal_errors(self._temporary(path)):
            dataset = rasterio.open(self._temporary(path), "w", count=self._count(path), **profile)
        self._files[path] = dataset
        dataset.update_tags(class_names=json.dumps(self.class_names))
        if path == self.output:
            dataset.set_band_description(1, "class")
            # A GeoTIFF palette holds 2**8 entries (the classes', then black); the exact list of
            # classes is in the attribute table and categories of the .aux.xml.
            dataset.write_colormap(1, {i: (*rgb, 255) for i, rgb in enumerate(class_colours(len(self.class_names)))})
            # Class names inside the file too, as GDAL band metadata (gdalinfo, rasterio's tags(1)).
            dataset.update_tags(1, **{str(i): name for i, name in enumerate(self.class_names)})
            return dataset
        names = self.class_names if path == probabilities_path(self.output) else ["entropy", "margin"]
        for band, name in enumerate(names, start=1):
            dataset.set_band_description(band, name)
        # GDAL's own scale and unit: a GIS reads 0..1 (percent * 0.01), not 0..100.
        dataset.scales = [0.01] * len(names)
        dataset.offsets = [0.0] * len(names)
        dataset.units = ["probability" if path == probabilities_path(self.output) else "uncertainty"] * len(names)
        dataset.update_tags(scale="0.01", unit="percent")
        return dataset

    def assemble(self) -> None:
        """The output rasters from the parts, verified, published (class map last); then the parts go."""
        for path in [*self._targets(), *self._sidecars()]:
            remove_stale_partials(path)  # left by killed runs
        missing = [index for index in range(len(self.windows)) if not self.parts.done(index)]
        if missing:
            raise RuntimeError(
                f"{self.output}: {len(missing)} windows of the map were not written (first: {missing[0]}); "
                "run the command again to classify them"
            )
        profile = {
            "driver": "GTiff",
            "dtype": "uint8",
            "nodata": NODATA,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            # A COG is copied from this GeoTIFF and compressed then: the intermediate file stays raw.
            "compress": "none" if self.cog else "deflate",
            "BIGTIFF": "IF_SAFER",
            **self.stack.profile,
        }
        try:
            for path in self._targets():
                self._open(path, profile)
            layers = {self.output: "classes", probabilities_path(self.output): "probabilities"}
            layers[uncertainty_path(self.output)] = "uncertainty"
            for index, window in enumerate(self.windows):
                part = self.parts.load(index)
                for path, dataset in self._files.items():
                    with gdal_errors(self._temporary(path)):  # GDAL flushes cached blocks at any write
                        data = part[layers[path]]
                        dataset.write(data if data.ndim == 3 else data[None], window=window)
            self._publish()
        except BaseException:
            self._clean()
            raise
        self.parts.remove()

    def _publish(self) -> None:
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
                # (the copy reads every block of it: a read error is raised here, as GDAL's write errors)
                with gdal_errors(self._temporary(path, ".cog")):
                    rasterio.shutil.copy(
                        partial, self._temporary(path, ".cog"), driver="COG", compress="DEFLATE",
                        overview_resampling="nearest", BIGTIFF="IF_SAFER",
                    )  # fmt: skip
                os.remove(partial)
                partial = self._temporary(path, ".cog")
            verify_raster(partial, self._count(path), self.stack.shape)
            staged[path] = partial
        texts = [qgis_style(self.class_names), gdal_attributes(self.class_names)]
        for sidecar, text in zip(self._sidecars(), texts, strict=True):
            temporary = self._temporary(sidecar)
            temporary.write_text(text)
            if temporary.read_text() != text:
                raise OSError(errno.EIO, f"{temporary}: the written text differs from what was written")
            staged[sidecar] = temporary
        staged[self.output] = staged.pop(self.output)  # the class map last
        for path, partial in staged.items():
            publish(partial, path)

    def _clean(self) -> None:
        for dataset in self._files.values():
            with contextlib.suppress(Exception):
                dataset.close()
        self._files.clear()
        for partial in self._partials():
            partial.unlink(missing_ok=True)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._clean()
        with contextlib.suppress(OSError):  # finished windows stay for the next run; an empty folder goes
            self.parts.folder.rmdir()


def percent(values: torch.Tensor, valid: np.ndarray) -> np.ndarray:
    """uint8 (B, h, w) whole percents of values in [0, 1] (B, h, w); NODATA where not ``valid``."""
    out = np.rint(100 * values.nan_to_num(0.0).clamp(0, 1).cpu().numpy()).astype(np.uint8)
    out[:, ~valid] = NODATA
    return out


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


def is_gdal_sidecar(path: Path) -> bool:
    """GDAL's PAM sidecar (``.aux.xml``) of a raster, as ``cmap map`` writes beside its class map."""
    try:
        return path.read_text(errors="replace")[:4096].lstrip().startswith("<PAMDataset>")
    except OSError:
        return False


def map_rasters_of(output: Path, probabilities: bool, uncertainty: bool) -> list[Path]:
    """The rasters ``cmap map`` writes for ``output``, in the order they are published (the class map last)."""
    return [*[probabilities_path(output)] * probabilities, *[uncertainty_path(output)] * uncertainty, output]


def map_sidecars(output: Path) -> list[Path]:
    """The files beside the class map: its QGIS style and its GDAL attributes."""
    return [output.with_suffix(".qml"), attributes_path(output)]


def check_map_outputs(
    output: Path,
    probabilities: bool,
    stack: RasterStack,
    checkpoints: list[str],
    pattern: str,
    uncertainty: bool = False,
) -> None:
    """Refuse outputs that are inputs (rasters, checkpoints), other files, or files a later run would read as dates."""
    targets = map_rasters_of(output, probabilities, uncertainty)
    if output.suffix.lower() == ".qml":  # the style beside the map would replace the map itself
        raise OutputPathError(f"{output}: the crop map is a GeoTIFF (.tif), and its QGIS style goes to the .qml name")
    rasters = list(dict.fromkeys(path for paths in stack.paths for path in paths))
    inputs = [*map(Path, checkpoints), *rasters]
    check_outputs(targets, inputs, is_cmap_raster, "crop map")
    style, attributes = map_sidecars(output)
    check_outputs([style], inputs, is_cmap_style, "crop map's QGIS style")
    check_outputs([attributes], inputs, is_gdal_sidecar, "crop map's GDAL attributes (.aux.xml)")
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


def parts_key(stack: RasterStack, checkpoints: Sequence[str], options: dict[str, Any]) -> str:
    """A key of everything that sets a map's pixels: the stack (its files, their sizes and times), the
    checkpoints' files and the options. Parts written under another key are not reused."""

    def stamp(path: str | Path) -> list:
        if not os.path.exists(path):  # a URL
            return [str(path)]
        status = os.stat(path)
        return [os.path.abspath(path), status.st_size, status.st_mtime_ns]

    files = [stamp(path) for path in dict.fromkeys(path for paths in stack.paths for path in paths)]
    content = json.dumps(
        [repr(stack), files, [stamp(path) for path in checkpoints], options], sort_keys=True, default=str
    )
    return hashlib.sha256(content.encode()).hexdigest()[:16]


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
    grid_crs: str | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    reference_date: str | None = None,
    window_size: int = 256,
    batch_size: int = 8192,
    probabilities: bool = True,
    uncertainty: bool = False,
    smoothing: bool = False,
    smoothing_window: int = 9,
    smoothing_fraction: float = 0.5,
    smoothness: float = 20.0,
    parcels: str | None = None,
    parcels_output: str | None = None,
    cog: bool = True,
    num_workers: int = 0,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
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
        grid_crs: STAC: the CRS of the target grid (``EPSG:32631``; default: the first item's).
        bounds: STAC: ``[left, bottom, right, top]`` of the area to map, in the grid's CRS (default:
            every item), snapped outwards to the grid's pixels.
        reference_date: day 0 of the dates (YYYY-MM-DD), replacing the checkpoint's time axis
            (default: the time axis of the training data; for data without a calendar, days
            since the stack's first date).
        window_size: pixels per side of the windows read at once (memory scales with its square).
        batch_size: pixels per forward pass.
        probabilities: also write the class probabilities.
        uncertainty: also write ``OUTPUT_uncertainty.tif``: normalised entropy and margin
            uncertainty (``1 - (p1 - p2)``) in percent, GDAL scale 0.01 (:mod:`cmap.postprocessing`).
        smoothing: smooth the class probabilities before labelling, with sits' Bayesian smoothing
            (Camara et al. 2023; :mod:`cmap.postprocessing`); windows are read with a halo of
            ``smoothing_window // 2`` pixels, so the map does not depend on ``window_size``.
        smoothing_window: side of the smoothing neighbourhood in pixels (odd; sits' default 9).
        smoothing_fraction: share of the neighbourhood's highest logits making each class's prior
            (sits' ``neigh_fraction``, 0.5).
        smoothness: the smoothing's likelihood variance (sits' default 20): larger smooths more.
        parcels: a vector file of polygons (GeoPackage, Shapefile, GeoJSON): each one's majority
            class, class shares and mean probabilities are written to ``parcels_output``
            (:mod:`cmap.parcels`).
        parcels_output: the GeoPackage of the parcels (default: ``OUTPUT`` with ``_parcels.gpkg``).
        cog: write Cloud Optimized GeoTIFFs (else tiled GeoTIFFs).
        num_workers: DataLoader processes reading windows.
        accelerator: Lightning Trainer's device type: ``auto``, ``cpu``, ``gpu``.
        devices: devices (or CPU processes) per node; with more than one, windows are shared
            between processes by Lightning's DDP strategy (``torchrun`` and SLURM launches are
            detected by Lightning): each process writes whole windows, process 0 assembles the map.
            A killed run, rerun with the same command, classifies only the windows not yet written.
        num_nodes: machines of a multi-node run (SLURM, torchrun).
        strategy: Lightning Trainer's strategy (``auto``; ``ddp`` for several devices,
            ``ddp_spawn`` to start them from a Python session or notebook).
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
    smoother = BayesianSmoothing(smoothing_window, smoothing_fraction, smoothness) if smoothing else None
    model = load_classifier(checkpoints)
    contract: InputContract = model.input_contract
    if len(model.class_names) > MAX_CLASSES:
        raise ValueError(
            f"{checkpoints[0]}: {len(model.class_names)} classes do not fit a uint8 map (max {MAX_CLASSES})"
        )
    stack = open_stack(
        rasters, list(contract.band_names), contract.raw_values, pattern, scale, offset, valid_range, resolution,
        masked_classes, resampling, grid_crs, bounds,
    )  # fmt: skip
    output = Path(output)
    check_map_outputs(output, probabilities, stack, checkpoints, pattern, uncertainty)
    parcel_layer = Path(parcels_output) if parcels_output else output.with_name(f"{output.stem}_parcels.gpkg")
    if parcels is not None:
        # None of the map's own files either: refused now, not after the whole map is made.
        map_files = [*map_rasters_of(output, probabilities, uncertainty), *map_sidecars(output)]
        check_outputs(
            [parcel_layer], [*map_files, Path(parcels), *map(Path, checkpoints)], is_cmap_parcels, "parcel layer"
        )
        parcel_polygons = read_parcels(parcels, model.class_names)  # read and checked once, summarised at the end
    time_axis = contract.time_axis if reference_date is None else TimeAxis.from_reference_date(reference_date)
    windows = StackWindows(stack, window_size, stack.days(time_axis), contract, smoother.halo if smoother else 0)
    options = {
        "time_axis": repr(time_axis), "window_size": window_size, "batch_size": batch_size, "precision": precision,
        "probabilities": probabilities, "uncertainty": uncertainty, "smoothing": repr(smoother),
    }  # fmt: skip
    parts = MapParts(output, parts_key(stack, checkpoints, options))
    writer = MapWriter(output, stack, windows.windows, model.class_names, parts, probabilities, uncertainty, cog)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        logger=False,
        callbacks=[writer, *([CompileModel()] if compile else [])],
        enable_progress_bar=sys.stdout.isatty() if progress is None else progress,
        enable_model_summary=False,
        use_distributed_sampler=False,  # WindowsToDo shares the windows (and skips the written ones)
    )
    loader = DataLoader(windows, batch_size=None, sampler=WindowsToDo(len(windows), parts), num_workers=num_workers)
    with warnings.catch_warnings():  # each item is a window, not a batch of dataset indices: nothing to infer
        warnings.filterwarnings("ignore", "Couldn't infer the batch indices")
        trainer.predict(WindowClassifier(model, batch_size, smoother), loader, return_predictions=False)
    trainer.strategy.barrier("cmap map: every window written")  # then process 0 assembles the map
    if trainer.global_rank == 0:
        writer.assemble()
        if parcels is not None:
            probs = probabilities_path(output) if probabilities else None
            summarise_parcels(output, parcel_polygons, parcel_layer, probs)
    return output


def main(args: list[str] | None = None, prog: str = "python -m cmap.map") -> None:
    """``cmap map`` / ``python -m cmap.map``: :func:`map_rasters` from the command line (or a YAML ``--config``)."""
    from jsonargparse import auto_cli

    print(auto_cli(map_rasters, args=args, as_positional=False, prog=prog))


if __name__ == "__main__":
    main()
