"""The writer of a map: each window's predictions saved as a part as they come, then the rasters
assembled from the parts, verified and published (class map last).

Rasters are written under temporary names, with GDAL's write errors raised; each finished file is
reopened and every block read back, then flushed and renamed, class map last (:mod:`cmap.outputs`):
a run that fails (a full disk) or is killed leaves no file under the output names.
"""

import contextlib
import errno
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import rasterio
import rasterio.shutil
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from cmap.data.raster import RasterStack
from cmap.mapping.options import MapProducts
from cmap.mapping.parts import MapParts
from cmap.mapping.products import map_rasters_of, map_sidecars, probabilities_path, uncertainty_path
from cmap.mapping.styles import class_colours, gdal_attributes, qgis_style
from cmap.outputs import gdal_errors, publish, remove_stale_partials, temporary_path, verify_raster
from cmap.postprocessing import uncertainty_bands

NODATA = 255
#: The unit of the probability and uncertainty rasters' values once scaled by GDAL's 0.01: a fraction, 0..1.
UNIT = "fraction"


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
        products: MapProducts,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.stack, self.windows, self.class_names, self.parts = stack, windows, list(class_names), parts
        self.probabilities, self.uncertainty, self.cog = products.probabilities, products.uncertainty, products.cog
        self.products = products
        self._files: dict[Path, Any] = {}  # final path -> open temporary dataset

    def _temporary(self, path: Path, suffix: str = "") -> Path:
        return temporary_path(path, suffix)

    def _targets(self) -> list[Path]:
        return map_rasters_of(self.output, self.products)

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
        # GDAL's own scale and unit: a GIS reads 0..1 (percent * 0.01), not 0..100. The unit is that of
        # the scaled values, the same in the file's tags and on every band.
        dataset.scales = [0.01] * len(names)
        dataset.offsets = [0.0] * len(names)
        dataset.units = [UNIT] * len(names)
        dataset.update_tags(scale="0.01", unit=UNIT)
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
