"""``python -m cmap.data convert DATASET SOURCE OUTPUT``: original files -> a cmap series store.

Datasets (SOURCE is the original file, read in place):
  ucr_crop        Crop_TRAIN.tsv or Crop_TEST.tsv
  victoria        igarss2019 train_dataset.csv or test_dataset.csv
  tempcnn         TempCNN example train_dataset.csv or test_dataset.csv
  mato_grosso     br_mt_1_8K_9classes_6bands.rda
  sinop_samples   samples_modis_ndvi.rda
  table           your own long CSV / Parquet table (one row per sample and date), with --bands ...
"""

import argparse

from cmap.data import convert
from cmap.data.store import write_store

READERS = {
    "ucr_crop": convert.read_ucr,
    "victoria": convert.read_victoria,
    "tempcnn": convert.read_tempcnn,
    "mato_grosso": convert.read_mato_grosso,
    "sinop_samples": convert.read_sinop_samples,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cmap.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("convert", help="convert a dataset to a store", description=__doc__)
    command.add_argument("dataset", choices=[*READERS, "table"])
    command.add_argument("source")
    command.add_argument("output")
    command.add_argument("--overwrite", action="store_true")
    command.add_argument("--keep_bands", nargs="+", default=None, help="write only these bands, in this order")
    command.add_argument("--date_step", type=int, default=1, help="write every n-th date only")
    table = command.add_argument_group("table options")
    table.add_argument("--bands", nargs="+", help="band columns, in order")
    table.add_argument("--sample_column", default="sample_id")
    table.add_argument("--date_column", default="date")
    table.add_argument("--label_column", default="label", help="'' for unlabelled data")
    table.add_argument("--group_column", default=None)
    table.add_argument("--class_names", nargs="+", default=None, help="class order (default: sorted)")
    table.add_argument("--reference_date", default=None, help="day 0 (default: the earliest date)")
    args = parser.parse_args(argv)
    if args.dataset == "table":
        if not args.bands:
            parser.error("table needs --bands")
        converted = convert.read_table(
            args.source, args.bands, args.sample_column, args.date_column, args.label_column or None,
            args.group_column, args.class_names, args.reference_date,
        )  # fmt: skip
    else:
        converted = READERS[args.dataset](args.source)
    converted = converted.select(args.keep_bands, args.date_step)
    folder = write_store(
        args.output, converted.series, converted.band_names, converted.class_names, converted.reference_date,
        overwrite=args.overwrite,
    )  # fmt: skip
    values = converted.series.values
    print(f"{folder}: {values.shape[0]} series, {values.shape[1]} dates, bands {converted.band_names}")


if __name__ == "__main__":
    main()
