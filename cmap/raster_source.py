"""The raster-source options: which images a stack is read from, and how their values and grid are read.

One typed object for ``cmap map`` and ``cmap extract`` (and their Python functions): parsed from the
command line, turned into a :class:`~cmap.data.raster.RasterStack` by :func:`cmap.data.stac.open_stack`.
The dataclass is the one place of the options: ``cmap map`` (jsonargparse) declares them from its fields and
docstring, ``cmap extract`` (argparse) from the same with :func:`add_raster_source_arguments`.
This module imports nothing heavy, so a command's ``--help`` that lists these options starts fast.
"""

import argparse
import inspect
import types
from dataclasses import Field, dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

DEFAULT_PATTERN = r"(?P<date>\d{4}-\d{2}-\d{2})"

#: Options of STAC and Sentinel-2 inputs only: a folder of rasters is read on its own grid, unmasked.
STAC_ONLY = ("resolution", "masked_classes", "grid_crs", "bounds")


def _example(spelling: str) -> dict[str, Any]:
    """A field's ``metadata``: how its value is spelled on the command line, for argparse's error lines."""
    return {"example": spelling}


@dataclass(frozen=True)
class RasterSource:
    """The raster source: where the images are and how their values and grid are read.

    Args:
        rasters: folder of rasters, one file per date (or per date and band), see ``pattern``; or STAC
            items (a JSON file or URL, a catalogue folder) or a folder of Sentinel-2 L2A products (SAFE
            folders or COG folders): :mod:`cmap.data.stac`; or, with ``search``, a STAC API's URL.
        pattern: regular expression on file names with a ``date`` group, and a ``band`` group
            when each file holds one band (:mod:`cmap.data.raster`).
        scale: physical value = raw * scale + offset, as in the training data (default: a
            checkpoint's raw-value convention when its samples came from rasters; 1e-4 for
            Sentinel-2 L2A; else 1).
        offset: see ``scale`` (default: the checkpoint's, else 0).
        valid_range: raw values outside [low, high] are missing (clouds, fill values); default as
            ``scale``.
        resolution: STAC: pixel size of the target grid, in its CRS's units (default: the finest band's).
        masked_classes: Sentinel-2: SCL classes that make a date missing (default: no data, saturated,
            cloud shadows, clouds, cirrus, snow: ``[0, 1, 3, 8, 9, 10, 11]``; ``[]``: none).
        resampling: STAC: how bands off the target grid are resampled (``nearest``, ``bilinear``...).
        grid_crs: STAC: the CRS of the target grid (``EPSG:32631``; default: the first item's).
        bounds: STAC: ``[left, bottom, right, top]`` of the area to read, in the grid's CRS (default:
            every item), snapped outwards to the grid's pixels.
        search: a STAC API search, ``rasters`` being the API's URL: ``pystac_client.Client.search``'s keywords
            (``{collections: [sentinel-2-l2a], datetime: 2022-05-01/2022-09-30, bbox: [west, south, east,
            north], max_cloud_cover: 20}``; default area: the labels' or ``--parcels``' footprint, or ``bounds``
            in ``grid_crs``).
            The items found are saved beside the output (``<output>_stac_items.json``) and read from there:
            :mod:`cmap.data.stac_search`.
    """

    rasters: str
    pattern: str = DEFAULT_PATTERN
    scale: float | None = None
    offset: float | None = None
    valid_range: tuple[float, float] | None = field(default=None, metadata=_example("'[-2000, 10000]'"))
    resolution: float | None = None
    masked_classes: list[int] | None = field(default=None, metadata=_example("'[0, 1, 3, 8, 9, 10]' ('[]': no mask)"))
    resampling: str = "nearest"
    grid_crs: str | None = None
    bounds: tuple[float, float, float, float] | None = field(
        default=None, metadata=_example("'[left, bottom, right, top]'")
    )
    search: dict[str, Any] | None = field(
        default=None, metadata=_example("'{collections: [sentinel-2-l2a], datetime: 2022-05-01/2022-09-30}'")
    )

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "RasterSource":
        """The source of a command's options (``vars(namespace)``): its fields, the others ignored."""
        return cls(**{each.name: options[each.name] for each in fields(cls) if each.name in options})

    def stac_options_given(self) -> list[str]:
        """The STAC-only options set (:data:`STAC_ONLY`)."""
        return [name for name in STAC_ONLY if getattr(self, name) is not None]


def add_raster_source_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Declare :class:`RasterSource`'s fields on an argparse parser, as ``cmap map`` (jsonargparse) declares them:
    the same help (the class docstring's ``Args:``), defaults and value spelling (YAML lists and mappings).

    ``rasters`` is the first positional argument, the others are ``--name`` options; the parsed namespace gives
    the source with :meth:`RasterSource.from_options`.
    """
    helps = option_help()
    hints = get_type_hints(RasterSource)
    for source_field in fields(RasterSource):
        help_text = helps[source_field.name].replace("%", "%%")  # argparse formats help with %
        if source_field.name == "rasters":
            parser.add_argument("rasters", help=help_text)
            continue
        spelling = _argparse_spelling(source_field, _without_none(hints[source_field.name]))
        parser.add_argument(f"--{source_field.name}", default=source_field.default, help=help_text, **spelling)


def option_help() -> dict[str, str]:
    """Each field's help: its text in the class docstring's ``Args:``, which jsonargparse shows for ``cmap map``."""
    from docstring_parser import parse  # jsonargparse's docstring reader (its "signatures" extra)

    return {param.arg_name: param.description for param in parse(inspect.getdoc(RasterSource)).params}


def _without_none(hint: Any) -> Any:
    """``X | None`` -> ``X``."""
    if get_origin(hint) in (Union, types.UnionType):
        (hint,) = [arg for arg in get_args(hint) if arg is not type(None)]
    return hint


def _argparse_spelling(source_field: Field, hint: Any) -> dict[str, Any]:
    """argparse's keywords reading a field's value as jsonargparse reads its type: numbers and text as such, lists
    and tuples as YAML lists (or their values one by one), mappings as YAML mappings."""
    origin, args, example = get_origin(hint), get_args(hint), source_field.metadata.get("example", "")
    if origin is list:
        return {"action": ListOption, "kind": args[0], "example": example}
    if origin is tuple:
        return {"action": ListOption, "kind": args[0], "length": len(args), "example": example}
    if origin is dict:
        return {"type": YamlMapping(f"{source_field.name} keywords", example)}
    if hint in (str, int, float):
        return {"type": hint}
    raise TypeError(f"RasterSource.{source_field.name}: no command-line spelling for {hint}")


class YamlMapping:
    """An argparse type: a YAML mapping (as jsonargparse reads a ``dict`` option), else one error line."""

    def __init__(self, what: str, example: str):
        self.what, self.example = what, example

    def __call__(self, text: str) -> dict:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = None
        if not isinstance(value, dict):
            spelling = f"a YAML mapping of {self.what}, e.g. {self.example}"
            raise argparse.ArgumentTypeError(f"expected {spelling}, got {text!r}")
        return value


class ListOption(argparse.Action):
    """A list option spelled as ``cmap map``'s (jsonargparse's YAML): ``'[0, 1, 3]'``, ``'[]'`` for an
    empty list; the values one by one (``0 1 3``) are read too. No value at all is an error, not an
    empty list (a forgotten value must not silently switch the cloud mask off).

    ``kind``: ``int`` or ``float``; ``length``: the number of values, when fixed.
    """

    def __init__(self, option_strings, dest, kind: type = int, length: int | None = None, example: str = "", **kwargs):
        super().__init__(option_strings, dest, nargs="*", **kwargs)
        self.kind, self.length, self.example = kind, length, example

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        what = f"{'' if self.length is None else f'{self.length} '}{'integers' if self.kind is int else 'numbers'}"
        spelling = f"a list of {what}, e.g. {option_string} {self.example}"
        if not values:
            parser.error(f"argument {option_string}: expected {spelling}")
        items = []
        for text in values:
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = text
            for item in value if isinstance(value, list) else [value]:
                number = isinstance(item, (int, float)) and not isinstance(item, bool)
                if not number or (self.kind is int and not isinstance(item, int)):
                    parser.error(f"argument {option_string}: expected {spelling}, got {text!r}")
                items.append(self.kind(item))
        if self.length is not None and len(items) != self.length:
            parser.error(f"argument {option_string}: expected {spelling}, got {len(items)} values")
        setattr(namespace, self.dest, items)
