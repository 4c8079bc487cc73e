"""``cmap convert DATASET SOURCE OUTPUT``: original files -> a cmap series store.

Datasets (SOURCE is the original file, read in place):
  ucr_crop        Crop_TRAIN.tsv or Crop_TEST.tsv
  victoria        igarss2019 train_dataset.csv or test_dataset.csv
  tempcnn         TempCNN example train_dataset.csv or test_dataset.csv
  mato_grosso     br_mt_1_8K_9classes_6bands.rda
  sinop_samples   samples_modis_ndvi.rda
  table           your own long CSV / Parquet table (one row per sample and date)

``cmap extract RASTERS LABELS OUTPUT``: the pixel series of a folder of rasters, STAC items or
Sentinel-2 L2A products under labelled points or polygons -> a store (see ``extract --help``).

(``python -m cmap.data convert|extract ...`` is the same command.)
"""

import argparse
from pathlib import Path

import numpy as np

from cmap.data import convert, samples, skipped_shapes, stac, stac_search
from cmap.data import table as table_reader
from cmap.data.contract import RawValues
from cmap.data.store import check_store_output, write_store
from cmap.data.time_axis import add_time_axis_arguments, time_axis_from_arguments
from cmap.outputs import InputError
from cmap.raster_source import RasterSource, add_raster_source_arguments

READERS = {
    "ucr_crop": convert.read_ucr,
    "victoria": convert.read_victoria,
    "tempcnn": convert.read_tempcnn,
    "mato_grosso": convert.read_mato_grosso,
    "sinop_samples": convert.read_sinop_samples,
}


def build_parser(prog: str = "python -m cmap.data") -> argparse.ArgumentParser:
    """The ``convert`` and ``extract`` commands' parser."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "convert", help="convert a dataset to a store", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keep the dataset list's lines
    )  # fmt: skip
    command.add_argument("dataset", choices=[*READERS, "table"], help="the dataset's reader (see above)")
    command.add_argument("source", help="the original file, read in place")
    command.add_argument("output", help="the store folder to write")
    command.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it is a cmap store")
    command.add_argument("--keep_bands", nargs="+", default=None, help="write only these bands, in this order")
    command.add_argument("--date_step", type=int, default=1, help="write every n-th date only")
    table = command.add_argument_group("table options")
    table.add_argument(
        "--bands", nargs="+",
        help="band columns, in order (default: every numeric column other than the id, date, label and group "
        "columns, printed)",
    )  # fmt: skip
    table.add_argument("--sample_column", default="sample_id", help="the column naming each sample")
    table.add_argument("--date_column", default="date", help="the column of acquisition dates")
    table.add_argument("--label_column", default="label", help="'' for unlabelled data")
    table.add_argument(
        "--group_column", nargs="+", default=None,
        help="parcel / polygon ids: splits keep a group together; several columns: one group per combination "
        "(--group_column longitude latitude: one per location, a field's seasons in one split)",
    )  # fmt: skip
    table.add_argument(
        "--class_names", nargs="+", default=None,
        help="class order (default: sorted; by number when every label is an integer)",
    )  # fmt: skip
    add_time_axis_arguments(table)
    table.add_argument(
        "--date_format", default=None,
        help="strftime layout of the dates, e.g. %%d/%%m/%%Y (default: ISO 8601, or any layout that reads the same "
        "day-first and month-first; ambiguous dates are an error)",
    )  # fmt: skip
    table.add_argument("--encoding", default="utf-8-sig", help="CSV text encoding (default: UTF-8, BOM or not)")
    table.add_argument("--delimiter", default=",", help="CSV field separator")
    table.add_argument("--decimal", default=".", help="decimal mark of band values (e.g. ,)")
    table.add_argument(
        "--missing_values", nargs="*", default=list(table_reader.MISSING_VALUES),
        help="band cells read as a missing (clouded) date; any other text is an error "
        f"(default: {' '.join(repr(v) for v in table_reader.MISSING_VALUES)})",
    )  # fmt: skip
    table.add_argument(
        "--allow_unlabelled", action="store_true",
        help="samples with an empty label are kept unlabelled (label -1, for pretraining stores) instead of an error",
    )  # fmt: skip
    add_extract_command(commands)
    return parser


def add_extract_command(commands: argparse._SubParsersAction) -> None:
    """The ``extract`` command's parser: rasters, labels, output, the raster source's options, the labels' columns,
    ``--strict`` and the time axis."""
    extract = commands.add_parser(
        "extract",
        help="training series from rasters under labelled points / polygons",
        description="Write a store of the pixel series of a raster stack (cmap.data.raster; STAC and Sentinel-2 "
        "L2A: cmap.data.stac) under labelled points (CSV) or polygons (GeoPackage, Shapefile, GeoJSON): one series "
        "per point, one per polygon pixel, grouped by polygon.",
    )
    # RASTERS is the first positional argument; --pattern ... --search are cmap map's, from one declaration.
    add_raster_source_arguments(extract.add_argument_group("raster source", "the rasters and how they are read"))
    extract.add_argument("labels", help="CSV of points, or a vector file of points / polygons")
    extract.add_argument("output", help="the store folder to write")
    extract.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it is a cmap store")
    extract.add_argument(
        "--bands", nargs="+", default=None,
        help="bands to read, in order (default: all; Sentinel-2 L2A: B02 B03 B04 B05 B06 B07 B08 B8A B11 B12, "
        "any spelling: blue, B2, B02_10m...)",
    )  # fmt: skip
    extract.add_argument("--label_field", default="label", help="the column / field holding class names")
    extract.add_argument("--x_column", default="longitude", help="CSV only")
    extract.add_argument("--y_column", default="latitude", help="CSV only")
    extract.add_argument("--crs", default="EPSG:4326", help="CSV only: CRS of the coordinates")
    extract.add_argument("--class_names", nargs="+", default=None, help="class order (default: sorted)")
    extract.add_argument(
        "--strict", action="store_true",
        help="a point or polygon without any series (outside the grid, clouded or without data on every date) is an "
        f"error naming them; default: skipped, listed with their reason in OUTPUT/{skipped_shapes.FILE_NAME}",
    )  # fmt: skip
    add_time_axis_arguments(
        extract.add_argument_group(
            "time axis", "how dates become days, as in cmap convert; none given: days since the month-day of the "
            "stack's first date (season_start), so another year's stack, or this one without its first image, maps "
            "on the same days",
        )
    )  # fmt: skip


def main(argv: list[str] | None = None, prog: str = "python -m cmap.data") -> None:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "extract":
        _extract(args)
        return
    if args.dataset == "table":
        converted = table_reader.read_table(
            args.source, args.bands, args.sample_column, args.date_column, args.label_column or None,
            args.group_column, args.class_names, args.reference_date, args.time_axis, args.season_start,
            args.date_format, args.encoding, args.missing_values, args.delimiter, args.decimal, args.allow_unlabelled,
            report=lambda line: print(f"{prog} convert: {line}"),
        )  # fmt: skip
        print(_describe_days(converted, fitted=args.season_start is None))
    else:
        converted = READERS[args.dataset](args.source)
    _write(converted.select(args.keep_bands, args.date_step), args.output, args.overwrite)


def _extract(args: argparse.Namespace) -> None:
    """``cmap extract``: the store of the shapes' series, the shapes without any listed in it (or, ``--strict``,
    an error naming them)."""
    check_store_output(Path(args.output), args.overwrite)  # before minutes of reading, and a search's saved items
    shapes = samples.read_labels(args.labels, args.label_field, args.x_column, args.y_column, args.crs)
    source = RasterSource.from_options(vars(args))
    area = samples.footprint(shapes) if source.search is not None else None  # of a STAC API search
    stack = stac.open_stack(source, args.bands, items_path=stac_search.items_path(args.output), area=area)
    raw_values = RawValues(stack.scale, stack.offset, stack.valid_range)
    first_dates = np.array(stack.dates, dtype="datetime64[D]")
    time_axis = time_axis_from_arguments(args, first_dates, default=stack.season())
    extraction = samples.extract_clear_samples(stack, shapes, args.class_names, time_axis)
    skipped, total = extraction.skipped, len(shapes.geometries)
    if args.strict and len(skipped):
        raise InputError(skipped_shapes.strict_message(skipped, shapes.source, total))
    extra_files = {skipped_shapes.FILE_NAME: skipped_shapes.table_bytes(skipped)} if len(skipped) else None
    series = extraction.series
    folder = write_store(
        args.output, series, stack.band_names, extraction.class_names, time_axis, raw_values, args.overwrite,
        extra_files,
    )  # fmt: skip
    print(f"{folder}: {series.values.shape[0]} series, {series.values.shape[1]} dates, bands {stack.band_names}")
    if len(skipped) or extraction.dropped_pixels:
        print(skipped_shapes.summary_line(skipped, shapes.source, total, str(folder), extraction.dropped_pixels))


def _describe_days(converted: convert.Converted, fitted: bool = False) -> str:
    """The time axis and the range of days it gives (``fitted``: no --season_start was given, so a season start
    is the one fitted to the samples' first dates), with a note when a sample spans more than a season."""
    series = converted.series
    days = np.where(series.valid_dates, series.days, -1)
    axis = converted.time_axis
    how = " (season start fitted to the samples' first dates)" if fitted and axis.rule == "season_start" else ""
    text = f"time axis: {axis.describe()}{how}; days 0 to {int(days.max())}"
    late = np.flatnonzero(days.max(axis=1) >= table_reader.ONE_SEASON_DAYS)
    if len(late):
        first = late[0] if series.sample_ids is None else repr(str(series.sample_ids[late[0]]))
        text += (
            f"; {len(late)} samples reach past day {table_reader.ONE_SEASON_DAYS - 1} (more than one season), "
            "first "
            f"{first} (days {int(days[late[0]][days[late[0]] >= 0].min())} to {int(days[late[0]].max())}): check "
            "PositionalEncoding.max_len, and whether --time_axis / --season_start fit your samples"
        )
    return text


def _write(converted: convert.Converted, output: str, overwrite: bool) -> None:
    folder = converted.write(output, overwrite)
    values = converted.series.values
    print(f"{folder}: {values.shape[0]} series, {values.shape[1]} dates, bands {converted.band_names}")


if __name__ == "__main__":
    main()
