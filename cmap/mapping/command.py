"""``cmap map`` / ``python -m cmap.mapping``: the command line of a map, and :func:`map_rasters`.

The options are the fields of the option groups (:mod:`cmap.mapping.options`) and of the raster
source (:class:`~cmap.raster_source.RasterSource`), flat on the command line (``--scale``,
``--window_size``) and in a YAML ``--config``. This module imports neither torch nor Lightning:
``--help`` and a parse error come at once; the map is made by :mod:`cmap.mapping.run`, imported
when a map is made.
"""

from pathlib import Path
from typing import Any

from cmap.mapping.options import OPTION_GROUPS, MapJob, TimeAxisOptions


def map_rasters(checkpoint: str | list[str], rasters: str, output: str | Path, **options: Any) -> Path:
    """Classify every pixel of a raster stack with a trained classifier and write the crop map.

    Args:
        checkpoint: a ``cmap fit`` checkpoint of a Classifier (its input contract: band names,
            class names, normalisation, time axis and raw-value convention), or a list of them: an
            ensemble averaging their class probabilities (``'[seed0.ckpt, seed1.ckpt]'``; the input
            contracts must agree).
        rasters: the rasters to classify (:class:`~cmap.raster_source.RasterSource`).
        output: the class map GeoTIFF to write (``*_probs.tif`` and ``.qml`` beside it).
        options: the command's other options by name (``pattern``, ``scale``, ``window_size``...:
            ``cmap map --help``).
    """
    from cmap.mapping.run import make_map  # torch and Lightning: only when a map is made

    return make_map(MapJob.from_options(checkpoint, output, rasters=rasters, **options))


def build_parser(prog: str = "python -m cmap.mapping") -> Any:
    """The command's parser: checkpoint, output, then each option group's fields."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    # Imports cmap.data, whose package imports Lightning: here, not at the module's import.
    from cmap.data.time_axis import add_time_axis_arguments

    parser = ArgumentParser(prog=prog, description=map_rasters.__doc__.split("\n")[0])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_argument(
        "--checkpoint", type=str | list[str], required=True,
        help="a cmap fit checkpoint of a Classifier (its input contract: band names, class names, normalisation, "
        "time axis and raw-value convention), or a list of them: an ensemble averaging their class probabilities "
        "('[seed0.ckpt, seed1.ckpt]'; the input contracts must agree)",
    )  # fmt: skip
    parser.add_argument("--output", type=str, required=True, help="the class map GeoTIFF to write")
    add_time_axis_arguments(
        parser.add_argument_group("How the stack's dates become days (none given: the checkpoint's time axis)")
    )
    for group in OPTION_GROUPS.values():
        if group is not TimeAxisOptions:  # its options are cmap convert's, from cmap.data.time_axis
            parser.add_class_arguments(group, None)
    return parser


def main(args: list[str] | None = None, prog: str = "python -m cmap.mapping") -> None:
    """Parse the command line (or a YAML ``--config``), make the map and print its path."""
    options = build_parser(prog).parse_args(args).as_dict()
    options.pop("config", None)
    print(map_rasters(options.pop("checkpoint"), options.pop("rasters"), options.pop("output"), **options))
