"""Your own table through ``cmap convert table``: time axis, explicit parsing, consistency checks,
sample ids, ``--overwrite``; every case through the command (``cmap.cli.main``)."""

import argparse
import contextlib
import csv
import datetime
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmap.cli import main as cmap_main
from cmap.data import SeriesStore, open_store
from cmap.data.table import class_order
from cmap.data.table_cells import NODATA_SENTINELS
from cmap.data.time_axis import (
    TimeAxis,
    add_time_axis_arguments,
    resolve_time_axis,
    time_axis_arguments,
    time_axis_from_arguments,
)  # fmt: skip
from cmap.ml.autoencoders import AutoEncoder
from cmap.ml.decoders import BandReconstruction
from cmap.ml.embeddings import PositionalEncoding
from cmap.outputs import InputError

from .conftest import CONFIGS, fit_tiny_classifier, quiet_trainer, tiny_classifier, tiny_encoder, tiny_encoder_config

HEADER = ["sample_id", "date", "B4", "B8", "label", "parcel"]


def write_csv(path, rows, header=HEADER, encoding="utf-8", delimiter=","):
    with open(path, "w", newline="", encoding=encoding) as file:
        writer = csv.writer(file, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def convert(source, output, *options, bands=("B4", "B8")):
    """``cmap convert table`` through the command (``bands=None``: no --bands); a bad input's one line on stderr
    (exit status 1, no traceback) comes back as the :class:`InputError` it names, for
    ``pytest.raises(ValueError, match=...)``."""
    stderr = io.StringIO()
    band_options = ["--bands", *bands] if bands else []
    try:
        with contextlib.redirect_stderr(stderr):
            cmap_main(["convert", "table", str(source), str(output), *band_options, *options])
    except SystemExit as exit_:
        line, prefix = stderr.getvalue(), "cmap convert: error: "
        assert exit_.code == 1 and line.startswith(prefix) and line.count("\n") == 1, line
        raise InputError(line[len(prefix) :].strip()) from None
    return open_store(output)


def predict(config, checkpoint, output):
    """``cmap predict`` writing the table ``output`` with :class:`cmap.predictions.PredictionWriter`."""
    writer = ["--trainer.callbacks+=cmap.predictions.PredictionWriter", "--trainer.callbacks.output", str(output)]
    cmap_main(["predict", "--config", str(config), "--ckpt_path", str(checkpoint), *writer])


def multi_year_rows(num_samples=60, seed=0):
    """Fields of 12 seasons (2010-2021), each observed from early September to late July, 3 classes."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_samples):
        year = 2010 + i % 12
        start = datetime.date(year, 9, 1) + datetime.timedelta(days=int(rng.integers(0, 20)))
        label = ["soy", "maize", "cotton"][i % 3]
        for k in range(int(rng.integers(8, 14))):
            date = start + datetime.timedelta(days=25 * k + int(rng.integers(0, 5)))
            ndvi = 0.3 + 0.1 * (i % 3) + 0.2 * math.sin(k / 2)
            rows.append((f"field-{i:03d}", date.isoformat(), f"{ndvi:.4f}", f"{ndvi + 0.1:.4f}", label, f"p{i // 2}"))
    return rows


# ---------------------------------------------------------------------------------------------
# The time axis
# ---------------------------------------------------------------------------------------------


def test_multi_year_table_needs_a_time_axis_choice_instead_of_days_in_the_thousands(tmp_path):
    source = write_csv(tmp_path / "samples.csv", multi_year_rows())
    span = r"samples.csv: dates span 2010-09-\d\d to 2022-.* more than one season"
    with pytest.raises(ValueError, match=span) as error:
        convert(source, tmp_path / "store")
    fitted = re.search(r"--time_axis season_start \(days since each sample's season start, fitted to the first "
                       r"dates: (\d\d-\d\d) here; --season_start MM-DD sets another\)", str(error.value))  # fmt: skip
    assert fitted and not (tmp_path / "store").exists()
    # The option as suggested, alone, gives that season start.
    assert convert(source, tmp_path / "fitted", "--time_axis", "season_start")[1]["time_axis"]["season_start"] == (
        fitted.group(1)
    )
    # An explicit reference date keeps the old behaviour, and the fit-time error names the option that fixes it.
    series, metadata = convert(source, tmp_path / "store", "--reference_date", "2010-09-01")
    assert metadata["time_axis"] == {"rule": "reference_date", "reference_date": "2010-09-01", "season_start": None}
    days = np.asarray(series.days)
    assert days.max() > 4000
    with pytest.raises(ValueError, match=r"max_len=1000\), got \[0, \d+\].*--time_axis season_start --season_start"):
        PositionalEncoding(8, max_len=1000)(torch.from_numpy(days))


def test_season_start_counts_days_within_each_season_and_trains_and_predicts_with_ids(tmp_path, capsys):
    rows = multi_year_rows()
    source = write_csv(tmp_path / "samples.csv", rows[::-1])  # any row order
    store = tmp_path / "store"
    series, metadata = convert(source, store, "--time_axis", "season_start", "--season_start", "09-01",
                               "--group_column", "parcel")  # fmt: skip
    assert "time axis: days since each series' latest 09-01; days" in capsys.readouterr().out
    assert metadata["time_axis"] == {"rule": "season_start", "reference_date": None, "season_start": "09-01"}
    days, valid = np.asarray(series.days), np.isfinite(np.asarray(series.values)).all(axis=-1)
    assert days[valid].min() >= 0 and days[valid].max() < 366  # the day of the season, whatever the year
    # Each sample's days: its dates minus 1 September of its season.
    table = pd.DataFrame(rows, columns=HEADER)
    ids = np.asarray(series.sample_ids[np.arange(len(series))]).tolist()
    assert sorted(ids) == sorted(table["sample_id"].unique())
    for row, sample in enumerate(ids[:5]):
        dates = sorted(datetime.date.fromisoformat(d) for d in table.loc[table["sample_id"] == sample, "date"])
        anchor = datetime.date(dates[0].year if dates[0].month >= 9 else dates[0].year - 1, 9, 1)
        assert days[row, : len(dates)].tolist() == [(d - anchor).days for d in dates]
    # The shipped tiny recipe (PositionalEncoding max_len 400) trains on it with only the data path set.
    data = {"class_path": "cmap.data.SeriesStore", "init_args": {"path": str(store), "fold": 0, "batch_size": 16}}
    checkpoint = fit_tiny_classifier(tmp_path / "run", data, num_bands=2, num_classes=3, steps=2)
    contract = torch.load(checkpoint, weights_only=False)["cmap_input_contract"]
    assert contract["time_axis"] == metadata["time_axis"]  # cmap predict and cmap map count days the same way
    output = tmp_path / "predictions.csv"
    predict(tmp_path / "run" / "config.yaml", checkpoint, output)
    predictions = pd.read_csv(output, dtype={"sample_id": str})
    assert list(predictions.columns[:3]) == ["index", "sample_id", "class"]
    test = SeriesStore(str(store), fold=0)
    test.setup("predict")
    expected = np.asarray(test.datasets["test"].series.sample_ids)[predictions["index"].to_numpy()]
    assert predictions["sample_id"].tolist() == expected.tolist()
    assert set(predictions["sample_id"]) <= set(table["sample_id"])


def test_series_start_and_fitted_season(tmp_path, capsys):
    source = write_csv(tmp_path / "samples.csv", multi_year_rows(12))
    series, metadata = convert(source, tmp_path / "a", "--time_axis", "series_start")
    assert metadata["time_axis"]["rule"] == "series_start" and np.asarray(series.days)[:, 0].tolist() == [0] * 12
    assert "(season start fitted" not in capsys.readouterr().out
    series, metadata = convert(source, tmp_path / "b", "--time_axis", "season_start")
    assert metadata["time_axis"]["rule"] == "season_start"
    fitted = metadata["time_axis"]["season_start"]
    assert "08-" in fitted or "09-" in fitted
    assert f"time axis: days since each series' latest {fitted} (season start fitted to the samples' first dates)" in (
        capsys.readouterr().out
    )
    assert np.asarray(series.days)[np.isfinite(np.asarray(series.values)).all(-1)].max() < 366
    with pytest.raises(ValueError, match="time axis 'series_start' takes no reference_date"):
        convert(source, tmp_path / "c", "--time_axis", "series_start", "--reference_date", "2010-01-01")


def test_a_sample_reaching_past_one_season_is_named_when_converted(tmp_path, capsys):
    rows = [("early", "2015-08-25", "0.1", "0.2", "m", "p"), ("early", "2016-03-01", "0.1", "0.2", "m", "p"),
            ("fine", "2015-09-10", "0.1", "0.2", "m", "p")]  # fmt: skip
    convert(write_csv(tmp_path / "samples.csv", rows), tmp_path / "store", "--season_start", "09-01")
    out = capsys.readouterr().out
    # 2015-08-25 lies before 2015-09-01: its season started on 2014-09-01.
    assert "1 samples reach past day 365 (more than one season), first 'early' (days 358 to 547)" in out


# ---------------------------------------------------------------------------------------------
# Explicit parsing
# ---------------------------------------------------------------------------------------------


def test_without_bands_the_numeric_columns_other_than_id_date_label_and_group_are_the_bands(tmp_path, capsys):
    """Numeric ids, crop codes as labels and numeric parcels are not bands; a column with a text cell, one
    without a number and a written index are left out, each named with why; the store is the one of --bands."""
    header = ["", "sample_id", "date", "B4", "note", "B8", "label", "parcel", "clouds"]
    rows = [(i, 10 + i // 2, f"2021-03-0{1 + i % 2}", 0.1 * i, "ok" if i else "sunny", 0.2, 7 + i // 2, i // 4, "")
            for i in range(8)]  # fmt: skip
    source = write_csv(tmp_path / "samples.csv", rows, header)
    series, metadata = convert(source, tmp_path / "store", "--group_column", "parcel", bands=None)
    assert capsys.readouterr().out.splitlines()[0] == (
        "cmap convert: bands (from the numeric columns): B4, B8; not numbers, left out: note ('sunny' row 0), "
        "clouds (no number), Unnamed: 0 (no header: a written index?)"
    )
    expected, expected_metadata = convert(source, tmp_path / "explicit", "--group_column", "parcel")
    assert metadata == expected_metadata and metadata["band_names"] == ["B4", "B8"]
    np.testing.assert_array_equal(np.asarray(series.values), np.asarray(expected.values))
    assert metadata["class_names"] == ["7", "8", "9", "10"] and series.groups.tolist() == [0, 0, 1, 1]
    parquet = tmp_path / "samples.parquet"
    pd.read_csv(source).drop(columns="Unnamed: 0").to_parquet(parquet)  # typed columns: the same bands
    from_parquet = convert(parquet, tmp_path / "parquet", "--group_column", "parcel", bands=None)
    assert from_parquet[1]["band_names"] == ["B4", "B8"] and from_parquet[1]["class_names"] == metadata["class_names"]
    np.testing.assert_array_equal(np.asarray(from_parquet[0].values), np.asarray(expected.values))


def test_a_table_without_a_numeric_band_column_is_one_error_naming_its_columns(tmp_path):
    rows = [("s", "2021-03-01", "cloud", "", "m", "p"), ("t", "2021-03-02", "0.3", "", "m", "p")]
    source = write_csv(tmp_path / "samples.csv", rows)
    message = (
        r"samples.csv: no numeric column to read as bands: the columns are \['sample_id', 'date', 'B4', 'B8', "
        r"'label', 'parcel'\], of which \['sample_id', 'date', 'label'\] are the id, date, label or group columns "
        r"and the others are not numbers \(B4 \('cloud' row 0\), B8 \(no number\), parcel \('p' row 0\)\); name "
        r"the band columns with --bands"
    )
    with pytest.raises(ValueError, match=message):
        convert(source, tmp_path / "store", bands=None)
    assert not (tmp_path / "store").exists()


def test_several_group_columns_make_one_group_per_combination(tmp_path):
    """--group_column longitude latitude: a place's seasons in one group, places sharing a longitude apart;
    a sample whose latitude changes between rows is an error naming the column."""
    header = ["sample_id", "date", "B4", "B8", "label", "longitude", "latitude"]
    places = [("-55.1", "-12.0"), ("-55.1", "-12.5"), ("-56.0", "-12.0"), ("-55.1", "-12.0")]
    rows = [(f"s{i}", date, "0.1", "0.2", "soy", *place) for i, place in enumerate(places)
            for date in (f"{2014 + i}-10-01", f"{2014 + i}-11-01")]  # fmt: skip
    source = write_csv(tmp_path / "samples.csv", rows, header)
    axis = ["--time_axis", "season_start"]
    series, _ = convert(source, tmp_path / "store", *axis, "--group_column", "longitude", "latitude")
    assert series.groups.tolist() == [0, 1, 2, 0]
    assert convert(source, tmp_path / "one", *axis, "--group_column", "longitude")[0].groups.tolist() == [0, 0, 1, 0]
    rows[1] = (*rows[1][:6], "-12.1")
    message = r"sample 's0' has group column 'latitude' '-12.0' \(row 0\) and '-12.1' \(row 1\)"
    with pytest.raises(ValueError, match=message):
        convert(write_csv(source, rows, header), tmp_path / "store", *axis, "--group_column", "longitude", "latitude")


def test_class_names_that_pandas_reads_as_missing_are_class_names(tmp_path):
    names = ["NA", "None", "null", "n/a", "NaN"]
    rows = [(f"s{i}", "2021-03-01", "0.1", "0.2", name, "p") for i, name in enumerate(names)]
    series, metadata = convert(write_csv(tmp_path / "samples.csv", rows), tmp_path / "store")
    assert metadata["class_names"] == sorted(names)
    assert [metadata["class_names"][i] for i in series.labels] == names
    json.loads((tmp_path / "store" / "metadata.json").read_text(), parse_constant=pytest.fail)  # strict JSON


@pytest.mark.parametrize(
    ("dates", "options", "expected"),
    [
        (["03/01/2020", "13/01/2020"], [], "ambiguous date '03/01/2020': 2020-03-01 read month first, 2020-01-03 day"),
        (["03/01/2020", "13/01/2020"], ["--date_format", "%d/%m/%Y"], [0, 10]),
        (["03/01/2020", "03/11/2020"], ["--date_format", "%m/%d/%Y"], [0, 10]),
        (["2020-01-03", "20200113"], [], [0, 10]),
        (["13/01/2020", "23/01/2020"], [], [0, 10]),  # day first is the only reading
        (["2020-01-03", "2020-13-45"], [], "unparsable date '2020-13-45'"),
        (["2020-01-03", "2020"], [], "unparsable date '2020': not a full date"),
        (["2020-01-03", "2020-01-13"], ["--date_format", "%d/%m/%Y"], "date '2020-01-03' does not match --date_format"),
    ],
)
def test_dates_are_read_as_written_or_rejected(tmp_path, dates, options, expected):
    rows = [("s", date, "0.1", "0.2", "m", "p") for date in dates]
    source = write_csv(tmp_path / "samples.csv", rows)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match="samples.csv: column 'date' row [01]: " + expected.replace("(", r"\(")):
            convert(source, tmp_path / "store", *options)
        assert not (tmp_path / "store").exists()
    else:
        series, _ = convert(source, tmp_path / "store", *options)
        assert np.asarray(series.days)[0].tolist() == expected


def test_day_first_dates_need_date_format_and_then_count_correctly(tmp_path):
    rows = [("s", "03/01/2020", "0.1", "0.2", "m", "p"), ("s", "05/01/2020", "0.1", "0.2", "m", "p")]
    source = write_csv(tmp_path / "samples.csv", rows)
    with pytest.raises(ValueError, match=r"column 'date' row 0: ambiguous date .* give the layout with --date_format"):
        convert(source, tmp_path / "store")
    series, metadata = convert(source, tmp_path / "store", "--date_format", "%d/%m/%Y")
    assert np.asarray(series.days)[0].tolist() == [0, 2]
    assert metadata["time_axis"]["reference_date"] == "2020-01-03"


@pytest.mark.parametrize("cell", ["cloud", "0,5", "1.2.3"])
def test_band_text_is_an_error_naming_file_column_row_and_value(tmp_path, cell):
    rows = [("s", "2021-03-01", "0.1", "0.2", "m", "p"), ("s", "2021-03-02", "0.3", cell, "m", "p")]
    message = rf"samples.csv: column 'B8' row 1: '{cell}' is not a number .*--missing_values.* \(line 3 of the file\)"
    with pytest.raises(ValueError, match=message):
        convert(write_csv(tmp_path / "samples.csv", rows), tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_missing_value_markers_decimal_comma_delimiter_and_encoding(tmp_path):
    rows = [
        ("s", "2021-03-01", "0,1", "cloud", "maïs", "p"),
        ("s", "2021-03-02", "0,5", "0,25", "maïs", "p"),
        ("t", "2021-03-01", "-", "1", "blé", "q"),
        ("t", "2021-03-03", "2", "3", "blé", "q"),
    ]
    source = write_csv(tmp_path / "samples.csv", rows, encoding="latin-1", delimiter=";")
    options = ["--delimiter", ";", "--decimal", ","]
    with pytest.raises(ValueError, match=r"samples.csv: not readable as utf-8-sig text .* --encoding"):
        convert(source, tmp_path / "store", *options)
    with pytest.raises(ValueError, match=r"column 'B4' row 2: '-' is not a number"):
        convert(source, tmp_path / "store", *options, "--encoding", "latin-1")
    series, metadata = convert(
        source, tmp_path / "store", *options, "--encoding", "latin-1", "--missing_values", "", "cloud", "-"
    )
    assert metadata["class_names"] == ["blé", "maïs"]
    values = np.asarray(series.values)
    np.testing.assert_array_equal(values[0, :2], np.array([[0.1, np.nan], [0.5, 0.25]], dtype=np.float32))
    np.testing.assert_array_equal(values[1, :2], np.array([[np.nan, 1], [2, 3]], dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# Consistency checks
# ---------------------------------------------------------------------------------------------


def test_a_label_that_changes_within_a_sample_is_an_error(tmp_path):
    rows = [("s", "2021-03-01", "0.1", "0.2", "mais", "p"), ("t", "2021-03-01", "0.1", "0.2", "ble", "p"),
            ("s", "2021-03-11", "0.1", "0.2", "colza", "p")]  # fmt: skip
    with pytest.raises(ValueError, match=r"samples.csv: sample 's' has label 'mais' \(row 0\) and 'colza' \(row 2\)"):
        convert(write_csv(tmp_path / "samples.csv", rows), tmp_path / "store")
    rows[2] = ("s", "2021-03-11", "0.1", "0.2", "mais", "q")
    with pytest.raises(ValueError, match=r"sample 's' has group 'p' \(row 0\) and 'q' \(row 2\)"):
        convert(write_csv(tmp_path / "samples.csv", rows), tmp_path / "store", "--group_column", "parcel")


def test_empty_label_is_unlabelled_only_when_allowed(tmp_path):
    rows = [("s", "2021-03-01", "0.1", "0.2", "mais", "p"), ("t", "2021-03-01", "0.1", "0.2", "", "p"),
            ("t", "2021-03-05", "0.1", "0.2", "", "p")]  # fmt: skip
    source = write_csv(tmp_path / "samples.csv", rows)
    message = r"samples.csv: column 'label' row 1: sample 't' has an empty label .*--allow_unlabelled"
    with pytest.raises(ValueError, match=message):
        convert(source, tmp_path / "store")
    series, metadata = convert(source, tmp_path / "store", "--allow_unlabelled")
    assert metadata["class_names"] == ["mais"] and series.labels.tolist() == [0, -1]
    series, _ = convert(source, tmp_path / "unlabelled", "--label_column", "")  # no label column: unlabelled store
    assert series.labels is None and not (tmp_path / "unlabelled" / "labels.npy").exists()


def test_empty_sample_id_is_an_error_naming_the_row(tmp_path):
    rows = [("s", "2021-03-01", "0.1", "0.2", "m", "p"), ("", "2021-03-02", "0.1", "0.2", "m", "p")]
    message = r"samples.csv: column 'sample_id' row 1: empty sample id.*\(line 3 of the file\)"
    with pytest.raises(ValueError, match=message):
        convert(write_csv(tmp_path / "samples.csv", rows), tmp_path / "store")


def test_two_rows_of_one_sample_on_one_date_name_both_rows(tmp_path):
    rows = [("s", "2021-03-01", "0.1", "0.2", "m", "p"), ("t", "2021-03-01", "0.1", "0.2", "m", "p"),
            ("s", "2021-03-01", "0.3", "0.2", "m", "p")]  # fmt: skip
    with pytest.raises(ValueError, match=r"sample 's' has two rows for the same date 2021-03-01 \(rows 0 and 2\)"):
        convert(write_csv(tmp_path / "samples.csv", rows), tmp_path / "store")


def test_unlabelled_samples_pretrain_and_supervised_training_names_them(tmp_path):
    rows = [(*row[:4], "" if int(row[0][-3:]) % 2 else row[4], row[5]) for row in multi_year_rows(24)]
    source = write_csv(tmp_path / "samples.csv", rows)
    axis = ["--time_axis", "season_start", "--season_start", "09-01"]
    partial, _ = convert(source, tmp_path / "partial", *axis, "--allow_unlabelled")
    assert (partial.labels == -1).sum() == 12
    convert(source, tmp_path / "none", *axis, "--label_column", "")
    for store in ("partial", "none"):  # pretraining uses every series, labelled or not
        data = SeriesStore(str(tmp_path / store), fold=0, batch_size=8)
        trainer = quiet_trainer(max_steps=2, limit_val_batches=1)
        trainer.fit(AutoEncoder(tiny_encoder(2), BandReconstruction([16, 2])), data)
        assert trainer.global_step == 2
        assert len(data.datasets["train"]) + len(data.datasets["val"]) == 24 - len(data.load_test())
    classifier = tiny_classifier(3, tiny_encoder_config(2, max_len=400))
    with pytest.raises(ValueError, match=r"partial: label index -1 is outside the 3 classes"):
        quiet_trainer(max_steps=1).fit(classifier, SeriesStore(str(tmp_path / "partial"), fold=0))
    with pytest.raises(ValueError, match=r"none: the series have no labels .* this task needs labelled series"):
        quiet_trainer(max_steps=1).fit(classifier, SeriesStore(str(tmp_path / "none"), fold=0))


def test_predictions_for_a_new_unlabelled_table_carry_its_sample_ids(tmp_path):
    axis = ["--time_axis", "season_start", "--season_start", "09-01"]
    convert(write_csv(tmp_path / "train.csv", multi_year_rows(30)), tmp_path / "train", *axis)
    new = [(f"new-{row[0]}", *row[1:4], "", row[5]) for row in multi_year_rows(8, seed=1)]
    series, _ = convert(write_csv(tmp_path / "new.csv", new), tmp_path / "new", *axis, "--label_column", "")
    data = {"class_path": "cmap.data.SeriesStore",
            "init_args": {"path": str(tmp_path / "train"), "test_path": str(tmp_path / "new"),
                          "batch_size": 16}}  # fmt: skip
    checkpoint = fit_tiny_classifier(tmp_path / "run", data, num_bands=2, num_classes=3, steps=1)
    output = tmp_path / "predictions.parquet"
    predict(tmp_path / "run" / "config.yaml", checkpoint, output)
    predictions = pd.read_parquet(output).sort_values("index")
    assert predictions["sample_id"].tolist() == [f"new-field-{i:03d}" for i in range(8)]
    assert set(predictions["class"]) <= {"cotton", "maize", "soy"}


def test_predictions_of_a_streaming_store_carry_sample_ids(tmp_path):
    axis = ["--time_axis", "season_start", "--season_start", "09-01"]
    series, _ = convert(write_csv(tmp_path / "train.csv", multi_year_rows(40)), tmp_path / "train", *axis)
    data = {"class_path": "cmap.data.StreamingSeriesStore",
            "init_args": {"path": str(tmp_path / "train"), "fold": 0, "batch_size": 16}}  # fmt: skip
    checkpoint = fit_tiny_classifier(tmp_path / "run", data, num_bands=2, num_classes=3, steps=1)
    output = tmp_path / "predictions.csv"
    predict(tmp_path / "run" / "config.yaml", checkpoint, output)
    predictions = pd.read_csv(output, dtype={"sample_id": str})
    ids = np.asarray(series.sample_ids[np.arange(len(series))])
    assert len(predictions) > 0 and predictions["sample_id"].tolist() == ids[predictions["index"]].tolist()


# ---------------------------------------------------------------------------------------------
# --overwrite replaces only a store
# ---------------------------------------------------------------------------------------------


def test_overwrite_replaces_a_store_but_never_another_folder_or_a_file(tmp_path):
    """Issue 30 item 9: each refusal is one line whose advice works (never "pass --overwrite" where
    --overwrite would be refused); an empty folder is written into."""
    source = write_csv(tmp_path / "samples.csv", [("s", "2021-03-01", "0.1", "0.2", "m", "p")])
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"precious")
    message = r"photos exists and is not a cmap series store \(it holds \['holiday.jpg'\]\)"
    with pytest.raises(InputError, match=message):
        convert(source, folder, "--overwrite")
    assert (folder / "holiday.jpg").read_bytes() == b"precious"
    message = r"photos exists and is not a cmap series store .*: overwrite replaces only a store; remove it"
    with pytest.raises(InputError, match=message):  # without --overwrite: the same advice, no circle
        convert(source, folder)
    for options in ((), ("--overwrite",)):  # an empty folder made ready for the output holds nothing to lose
        empty = tmp_path / f"empty{len(options)}"
        empty.mkdir()
        assert len(convert(source, empty, *options)[0]) == 1
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    with pytest.raises(InputError, match="notes.txt exists and is not a folder"):
        convert(source, file, "--overwrite")
    assert file.read_text() == "keep me"
    before = sorted(p.name for p in tmp_path.iterdir())
    convert(source, tmp_path / "store")
    with pytest.raises(InputError, match=r"store: a cmap series store exists there; pass .*--overwrite"):
        convert(source, tmp_path / "store")
    series, _ = convert(source, tmp_path / "store", "--overwrite")  # the advice works: a store is replaced
    assert len(series) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "store"])  # no hidden temporary left


# ---------------------------------------------------------------------------------------------
# Property: the store read back is the table, exactly
# ---------------------------------------------------------------------------------------------


TEXT = st.text(alphabet="abXYZ0179 ,;\"'é-_/.NAnulo", min_size=1, max_size=6).filter(lambda text: text.strip())
#: Any float32 but a nodata value (-9999, 65535, ...), which is an error unless declared (tests/test_own_data.py).
FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False).filter(lambda value: value not in NODATA_SENTINELS)


@st.composite
def tables(draw):
    """Samples (id, label, group, dates, values: None = missing), a row order, a file format, a time axis."""
    num_samples = draw(st.integers(1, 6))
    ids = draw(st.lists(TEXT, min_size=num_samples, max_size=num_samples, unique=True))
    classes = draw(st.lists(TEXT, min_size=1, max_size=3, unique=True))
    samples = []
    for sample_id in ids:
        first = draw(st.dates(datetime.date(2004, 1, 1), datetime.date(2024, 12, 31)))
        offsets = sorted(draw(st.sets(st.integers(0, 420), min_size=1, max_size=5)) | {0})
        values = [[draw(st.one_of(st.none(), FLOAT32)) for _ in range(2)] for _ in offsets]
        valid = draw(st.integers(0, len(offsets) - 1))
        values[valid] = [draw(FLOAT32), draw(FLOAT32)]  # at least one valid date
        dates = [first + datetime.timedelta(days=offset) for offset in offsets]
        label, group = draw(st.sampled_from(classes)), draw(st.sampled_from(["g0", "g1", "g2"]))
        samples.append((sample_id, label, group, dates, values))
    rows = [(s[0], date, value, s[1], s[2]) for s in samples for date, value in zip(s[3], s[4], strict=True)]
    order = draw(st.permutations(range(len(rows))))
    earliest = min(date for s in samples for date in s[3])
    time_axis = draw(
        st.one_of(
            st.just(("series_start", None)),
            st.tuples(st.just("season_start"), st.dates(datetime.date(2001, 1, 1), datetime.date(2001, 12, 31))),
            st.tuples(st.just("reference_date"), st.dates(datetime.date(2003, 1, 1), earliest)),
        )
    )
    file_format = draw(st.sampled_from(["csv", "parquet", "parquet-typed-dates"]))
    return samples, [rows[i] for i in order], time_axis, file_format


def expected_anchor(rule, parameter, first):
    if rule == "series_start":
        return first
    if rule == "reference_date":
        return parameter
    anchor = datetime.date(first.year, parameter.month, parameter.day)
    return anchor if anchor <= first else datetime.date(first.year - 1, parameter.month, parameter.day)


# Random tables hold rows whose bands are all 0: the fill-value warning (tested in test_own_data.py) is
# not what these round trips check.
@pytest.mark.filterwarnings("ignore:.*every band is 0 on:UserWarning")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tables())
def test_the_store_read_back_equals_the_table(tmp_path_factory, table):
    samples, rows, (rule, parameter), file_format = table
    folder = tmp_path_factory.mktemp("property")
    header = ["sample_id", "date", "B4", "B8", "label", "parcel"]
    if file_format == "csv":
        text = [(i, d.isoformat(), *("" if v is None else repr(float(v)) for v in values), label, group)
                for i, d, values, label, group in rows]  # fmt: skip
        source = write_csv(folder / "samples.csv", text, header)
    else:
        frame = pd.DataFrame(
            [(i, d, *(None if v is None else float(v) for v in values), label, group)
             for i, d, values, label, group in rows],
            columns=header,
        )  # fmt: skip
        typed = file_format == "parquet-typed-dates"
        frame["date"] = pd.to_datetime(frame["date"]) if typed else frame["date"].map(str)
        source = folder / "samples.parquet"
        frame.to_parquet(source)
    options = ["--group_column", "parcel", "--time_axis", rule]
    if rule == "season_start":
        options += ["--season_start", parameter.strftime("%m-%d")]
    elif rule == "reference_date":
        options += ["--reference_date", parameter.isoformat()]
    series, metadata = convert(source, folder / "store", *options)

    order = list(dict.fromkeys(row[0] for row in rows))  # samples in the order of their first rows
    by_id = {s[0]: s for s in samples}
    class_names = class_order({s[1] for s in samples})
    assert np.asarray(series.sample_ids).tolist() == order
    assert metadata["class_names"] == class_names
    assert series.labels.tolist() == [class_names.index(by_id[i][1]) for i in order]
    groups = [by_id[i][2] for i in order]
    assert series.groups.tolist() == pd.factorize(pd.Series(groups))[0].tolist()
    num_dates = max(len(s[3]) for s in samples)
    values, days = np.asarray(series.values), np.asarray(series.days)
    assert values.shape == (len(samples), num_dates, 2)
    for row, sample_id in enumerate(order):
        _, _, _, dates, sample_values = by_id[sample_id]
        anchor = expected_anchor(rule, parameter, dates[0])
        expected_values = np.full((num_dates, 2), np.nan, dtype=np.float32)
        expected_values[: len(dates)] = [[np.nan if v is None else v for v in pair] for pair in sample_values]
        np.testing.assert_array_equal(values[row], expected_values)
        assert days[row].tolist() == [(date - anchor).days for date in dates] + [0] * (num_dates - len(dates))
    assert TimeAxis.from_dict(metadata["time_axis"]).rule == rule


# Random tables hold rows whose bands are all 0: the fill-value warning (tested in test_own_data.py) is
# not what these round trips check.
@pytest.mark.filterwarnings("ignore:.*every band is 0 on:UserWarning")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tables(), st.data())
def test_a_bad_band_cell_anywhere_is_named_and_nothing_is_written(tmp_path_factory, table, data):
    samples, rows, _, _ = table
    folder = tmp_path_factory.mktemp("bad_cell")
    text = [[i, d.isoformat(), *("" if v is None else repr(float(v)) for v in values), label, group]
            for i, d, values, label, group in rows]  # fmt: skip
    row = data.draw(st.integers(0, len(text) - 1))
    band = data.draw(st.sampled_from(["B4", "B8"]))
    cell = data.draw(st.sampled_from(["cloud", "0,5", "1.2.3", "x", "--"]))
    text[row][2 if band == "B4" else 3] = cell
    source = write_csv(folder / "samples.csv", text)
    message = rf"samples.csv: column '{band}' row {row}: '{re.escape(cell)}' is not a number .*\(line {row + 2} of"
    with pytest.raises(ValueError, match=message):
        convert(source, folder / "store", "--time_axis", "series_start")
    assert sorted(path.name for path in folder.iterdir()) == ["samples.csv"]


def test_a_multi_year_table_trains_with_the_default_recipe_given_only_its_data(tmp_path):
    """configs/default.yaml with nothing but the data path (the band count and classes come from the store)."""
    source = write_csv(tmp_path / "samples.csv", multi_year_rows())
    store = tmp_path / "store"
    convert(source, store, "--time_axis", "season_start", "--season_start", "09-01")
    data = tmp_path / "data.yaml"
    data.write_text(f"class_path: cmap.data.SeriesStore\ninit_args: {{path: {store}, fold: 0}}\n")
    quick = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    cmap_main(["fit", "--config", str(CONFIGS / "default.yaml"), "--data", str(data),
               "--trainer.default_root_dir", str(tmp_path / "run"), *quick])  # fmt: skip
    from cmap.predictions import load_classifier

    model = load_classifier(next((tmp_path / "run").rglob("last.ckpt")))
    assert model.encoder.num_bands == 2 and model.class_names == ["cotton", "maize", "soy"] and model.num_classes == 3
    assert model.input_contract.time_axis == TimeAxis.from_season_start("09-01")


@pytest.mark.parametrize(
    "axis", [TimeAxis(), TimeAxis.from_reference_date("2019-10-01"), TimeAxis.from_season_start("09-13")]
)
def test_time_axis_options_turn_into_the_axis_and_back(axis):
    """The one set of time-axis options: axis -> options -> axis is the identity; no option gives the
    default (a checkpoint's axis); a bad value is one InputError naming the options."""
    parser = argparse.ArgumentParser()
    add_time_axis_arguments(parser)
    assert time_axis_from_arguments(parser.parse_args(time_axis_arguments(axis))) == axis
    assert time_axis_from_arguments(parser.parse_args([]), default=axis) is axis
    with pytest.raises(InputError, match="time axis options: season_start: '13-45' is not a month-day"):
        time_axis_from_arguments(parser.parse_args(["--season_start", "13-45"]), default=axis)


def test_time_axis_defaults_are_fitted_to_the_first_dates():
    first = np.array(["2018-09-20", "2019-09-14", "2020-09-13"], dtype="datetime64[D]")
    assert resolve_time_axis("season_start", first_dates=first) == TimeAxis.from_season_start("09-13")
    assert resolve_time_axis(first_dates=first) == TimeAxis.from_reference_date("2018-09-20")
    with pytest.raises(ValueError, match="time axis 'reference_date' needs reference_date"):
        resolve_time_axis()  # nothing to fit to, and no default
