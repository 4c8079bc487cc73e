"""The options of ``cmap map``, in groups: what is written, the smoothing, and the computation.

Plain dataclasses, importing nothing heavy: the command line is parsed (and ``--help`` printed)
without torch or Lightning. Each group is one typed object of :class:`MapJob`; the raster source is
:class:`~cmap.raster_source.RasterSource`, shared with ``cmap extract``.
"""

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from cmap.raster_source import RasterSource


@dataclass(frozen=True)
class MapProducts:
    """What is written beside the class map.

    Args:
        probabilities: also write the class probabilities (``OUTPUT_probs.tif``).
        uncertainty: also write ``OUTPUT_uncertainty.tif``: normalised entropy and margin
            uncertainty (``1 - (p1 - p2)``) in percent, GDAL scale 0.01 (:mod:`cmap.postprocessing`).
        parcels: a vector file of polygons (GeoPackage, Shapefile, GeoJSON): each one's majority
            class, class shares and mean probabilities are written to ``parcels_output``
            (:mod:`cmap.parcels`).
        parcels_output: the GeoPackage of the parcels (default: ``OUTPUT`` with ``_parcels.gpkg``).
        cog: write Cloud Optimized GeoTIFFs (else tiled GeoTIFFs).
    """

    probabilities: bool = True
    uncertainty: bool = False
    parcels: str | None = None
    parcels_output: str | None = None
    cog: bool = True


@dataclass(frozen=True)
class SmoothingOptions:
    """Spatial smoothing of the class probabilities.

    Args:
        smoothing: smooth the class probabilities before labelling, with sits' Bayesian smoothing
            (Camara et al. 2023; :mod:`cmap.postprocessing`); windows are read with a halo of
            ``smoothing_window // 2`` pixels, so the map does not depend on ``window_size``.
        smoothing_window: side of the smoothing neighbourhood in pixels (odd; sits' default 9).
        smoothing_fraction: share of the neighbourhood's highest logits making each class's prior
            (sits' ``neigh_fraction``, 0.5).
        smoothness: the smoothing's likelihood variance (sits' default 20): larger smooths more.
    """

    smoothing: bool = False
    smoothing_window: int = 9
    smoothing_fraction: float = 0.5
    smoothness: float = 20.0


@dataclass(frozen=True)
class ComputeOptions:
    """How the map is computed: windows, batches, devices and processes.

    Args:
        window_size: pixels per side of the windows read at once (memory scales with its square).
        batch_size: pixels per forward pass.
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
        inference: ``fast``: a TempCNN classifier (the default recipe's) runs in its inference form,
            batch norms folded into its layers (:mod:`cmap.ml.inference`; class probabilities within
            1e-5 of the reference path's, figures in benchmarks/results/performance.md); other models
            run as they are. ``reference``: every model runs as it was trained.
    """

    window_size: int = 256
    batch_size: int = 8192
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    compile: bool = False
    progress: bool | None = None
    threads: int | None = None
    inference: Literal["fast", "reference"] = "fast"


@dataclass(frozen=True)
class TimeAxisOptions:
    """How the stack's dates become days: ``cmap convert``'s time-axis options
    (:func:`cmap.data.time_axis.add_time_axis_arguments`); none given: the checkpoint's time axis."""

    time_axis: str | None = None
    season_start: str | None = None
    reference_date: str | None = None


#: The option groups of a map, by their name in :class:`MapJob`; their fields are the command's options.
OPTION_GROUPS = {"source": RasterSource, "time_axis": TimeAxisOptions, "products": MapProducts,
                 "smoothing": SmoothingOptions, "compute": ComputeOptions}  # fmt: skip


@dataclass(frozen=True)
class MapJob:
    """Everything a map is made from: checkpoints, the raster source, the output and the option groups."""

    checkpoints: list[str]
    source: RasterSource
    output: Path
    time_axis: TimeAxisOptions = field(default_factory=TimeAxisOptions)
    products: MapProducts = field(default_factory=MapProducts)
    smoothing: SmoothingOptions = field(default_factory=SmoothingOptions)
    compute: ComputeOptions = field(default_factory=ComputeOptions)

    @classmethod
    def from_options(cls, checkpoint: str | list[str], output: str | Path, **options: Any) -> "MapJob":
        """The job of ``cmap map``'s options by name, as on the command line (``rasters``, ``scale``,
        ``window_size``...); an unknown name is a :class:`TypeError` naming it."""
        known = {f.name for group in OPTION_GROUPS.values() for f in fields(group)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown map options {unknown} (known: {sorted(known)})")
        groups = {name: group(**pick(group, options)) for name, group in OPTION_GROUPS.items()}
        checkpoints = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint)
        return cls(checkpoints, output=Path(output), **groups)


def pick(group: type, options: dict[str, Any]) -> dict[str, Any]:
    """The options of ``options`` that are fields of the dataclass ``group``."""
    return {f.name: options[f.name] for f in fields(group) if f.name in options}
