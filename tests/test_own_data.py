"""Your own data, shaped unlike ours, through ``cmap convert table`` and the default recipe's data
module: real Sentinel-2 series (Victoria, 10 bands, integer reflectance x 1e4) written as the
long table of docs/data.md with clouds as missing rows or marker cells, tiny classes, parcels."""

import warnings

import numpy as np
import pandas as pd
import pytest

from cmap.cli import main as cmap_main
from cmap.data import SeriesStore, open_store
from cmap.data.convert import MATO_GROSSO_BANDS, _read_rda_tibble, read_mato_grosso, read_victoria
from cmap.data.series import PixelSeries
from cmap.data.splits import group_split, kfold_split, stratified_split
from cmap.data.table import read_table

from .conftest import SHARED_DATA, require

BANDS = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]


def victoria_table(per_class=6, keep=(0.4, 0.8), marker=None, seed=0):
    """Victoria's training pixels (``per_class`` of each class) as a long table: real dates on the 5-day
    grid from 2017-09-01 (a southern season across the new year), a random 40-80 % of each pixel's dates
    kept; the others dropped as rows, or written as ``marker`` cells when a marker is given."""
    converted = read_victoria(require(SHARED_DATA / "igarss2019_s2_victoria") / "train_dataset.csv")
    series, rng = converted.series, np.random.default_rng(seed)
    chosen = np.concatenate([np.flatnonzero(series.labels == c)[:per_class] for c in range(8)])
    frames = []
    for i in chosen:
        kept = rng.random(73) < rng.uniform(*keep)
        kept[rng.integers(73)] = True
        dates = np.datetime64("2017-09-01") + series.days[i]
        frame = pd.DataFrame(series.values[i].astype(np.int64), columns=BANDS).astype(object)
        frame.insert(0, "date", dates.astype(str))
        frame.insert(0, "sample_id", f"px-{i}")
        frame["label"] = converted.class_names[series.labels[i]]
        frame["parcel"] = f"poly {series.groups[i]}"
        frames.append(
            frame[kept] if marker is None else frame.where(kept[:, None] | ~frame.columns.isin(BANDS), marker)
        )
    return pd.concat(frames, ignore_index=True)


def mato_grosso_table(locations=12, shared=10, singles=30):
    """Mato Grosso's samples as the long table a user exports from sits (one row per sample and date, the
    seasons 2000-2015): the samples of the first ``locations`` places observed in several seasons, of
    ``shared`` places that share their longitude with another place, and of ``singles`` other places of
    one season; columns sample_id,
    longitude, latitude, start_date (text), date, the six bands, label, cube. Also the .rda's row of each
    sample, in table order."""
    source = require(SHARED_DATA / "sits_matogrosso_mod13q1" / "br_mt_1_8K_9classes_6bands.rda")
    tibble = _read_rda_tibble(source, "br_mt_1_8K_9classes_6bands").reset_index(drop=True)
    place = tibble.groupby(["longitude", "latitude"]).ngroup().to_numpy()
    counts = np.bincount(place)
    shared_longitude = tibble.groupby("longitude")["latitude"].transform("nunique").to_numpy() > 1
    chosen = [
        np.unique(place[counts[place] > 1])[:locations],
        np.unique(place[shared_longitude])[:shared],
        np.unique(place[(counts[place] == 1) & ~shared_longitude])[:singles],
    ]
    rows = np.flatnonzero(np.isin(place, np.concatenate(chosen)))
    frames = []
    for row in rows:
        sample = tibble.iloc[row]
        series = sample["time_series"]
        dates = np.datetime64("1970-01-01", "D") + series["Index"].to_numpy(np.float64).round().astype(np.int64)
        frame = series[MATO_GROSSO_BANDS].copy()
        frame.insert(0, "date", dates.astype(str))
        frame.insert(0, "start_date", str(dates[0]))
        frame.insert(0, "latitude", sample["latitude"])
        frame.insert(0, "longitude", sample["longitude"])
        frame.insert(0, "sample_id", f"mg-{row}")
        frames.append(frame.assign(label=str(sample["label"]), cube=str(sample["cube"])))
    return pd.concat(frames, ignore_index=True), rows


def test_a_multi_year_table_without_bands_grouped_by_location_with_a_fitted_season(tmp_path, capsys):
    """Issue 34, the table path: Mato Grosso's samples (16 seasons) as a user's long table, converted with
    neither --bands (the numeric columns are the bands, listed) nor --season_start (fitted: 09-13, printed),
    grouped by location (--group_column longitude latitude): a place's other seasons never straddle a split,
    where longitude alone would merge places. The store equals the .rda converter's series."""
    table, rows = mato_grosso_table()
    table.to_csv(tmp_path / "mato_grosso.csv", index=False)
    location = ["--group_column", "longitude", "latitude"]
    cmap_main(["convert", "table", str(tmp_path / "mato_grosso.csv"), str(tmp_path / "store"), "--time_axis",
               "season_start", *location])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "cmap convert: bands (from the numeric columns): BLUE, RED, NIR, MIR, EVI, NDVI; not numbers, left out: "
        f"start_date ('{table['start_date'][0]}' row 0), cube ('{table['cube'][0]}' row 0)"
    )
    assert out[1].startswith("time axis: days since each series' latest 09-13 (season start fitted to the samples' ")
    store, metadata = open_store(tmp_path / "store")
    assert metadata["band_names"] == MATO_GROSSO_BANDS and metadata["time_axis"]["season_start"] == "09-13"
    expected = read_mato_grosso(SHARED_DATA / "sits_matogrosso_mod13q1" / "br_mt_1_8K_9classes_6bands.rda").series
    np.testing.assert_array_equal(np.asarray(store.values), expected.values[rows])
    np.testing.assert_array_equal(np.asarray(store.days), expected.days[rows])

    samples = table.drop_duplicates("sample_id")
    places = samples.groupby(["longitude", "latitude"], sort=False).ngroup().to_numpy()
    groups = np.asarray(store.groups)
    assert len(rows) >= len(np.unique(places)) + 12  # places seen in several seasons
    assert (pd.crosstab(groups, places).to_numpy() > 0).sum(axis=1).tolist() == [1] * len(np.unique(places))
    assert (pd.crosstab(places, groups).to_numpy() > 0).sum(axis=1).tolist() == [1] * len(np.unique(places))
    for fold in range(5):
        rest, test = kfold_split(store, 5, fold, seed=0)
        assert not set(places[rest]) & set(places[test])  # no place on both sides
    by_longitude = convert_without_bands(tmp_path, "--group_column", "longitude")
    assert len(np.unique(by_longitude.groups)) < len(np.unique(places))  # distinct places merged


def convert_without_bands(tmp_path, *options):
    cmap_main(["convert", "table", str(tmp_path / "mato_grosso.csv"), str(tmp_path / "other"), "--overwrite",
               "--time_axis", "season_start", *options])  # fmt: skip
    return open_store(tmp_path / "other")[0]


def convert(source, output, *options):
    cmap_main(["convert", "table", str(source), str(output), "--bands", *BANDS, "--overwrite", *options])
    return open_store(output)


def test_an_undeclared_nodata_value_is_an_error_and_a_declared_one_a_missing_date(tmp_path, capsys):
    """-9999 for a cloud, not declared: an error naming the file, column, row and the option (not a
    reflectance of -9999 in the statistics); declared (written -9999 or -9999.0, CSV or Parquet): missing."""
    table = victoria_table(marker=-9999)
    assert (table["B2"] == -9999).any()
    source = tmp_path / "samples.csv"
    table.to_csv(source, index=False)
    with pytest.raises(SystemExit) as exit_:
        convert(source, tmp_path / "store")
    first = int(np.flatnonzero(table["B2"] == -9999)[0])
    message = capsys.readouterr().err
    assert exit_.value.code == 1 and message.count("\n") == 1 and "Traceback" not in message  # one line
    assert f"samples.csv: column 'B2' row {first}: -9999 looks like a missing-value (nodata) marker" in message
    assert "--missing_values" in message and not (tmp_path / "store").exists()
    expected = convert(source, tmp_path / "store", "--missing_values", "-9999")[0]
    parquet = tmp_path / "samples.parquet"
    table.assign(**{band: table[band].astype(np.float64) for band in BANDS}).to_parquet(parquet)
    for store in (convert(parquet, tmp_path / "p", "--missing_values", "-9999.0")[0], expected):
        values = np.asarray(store.values)
        assert np.nanmin(values) >= 0 and np.isnan(values).any()
        assert (
            np.isnan(values).all(axis=-1).sum() == np.isnan(values).any(axis=-1).sum() == (table["B2"] == -9999).sum()
        )
    np.testing.assert_array_equal(np.asarray(expected.values), np.asarray(open_store(tmp_path / "p")[0].values))


def test_rows_dropped_for_clouds_and_marker_cells_give_the_same_series(tmp_path):
    """A cloud removed as a missing row or written as an empty cell: the same valid dates and days."""
    dropped, cells = victoria_table(), victoria_table(marker="")
    dropped.to_csv(tmp_path / "dropped.csv", index=False)
    cells.to_csv(tmp_path / "cells.csv", index=False, sep=";")
    a = convert(tmp_path / "dropped.csv", tmp_path / "a")[0]
    b = convert(tmp_path / "cells.csv", tmp_path / "b", "--delimiter", ";")[0]
    valid_a, valid_b = np.isfinite(np.asarray(a.values)).all(-1), np.isfinite(np.asarray(b.values)).all(-1)
    for i in range(len(a)):
        np.testing.assert_array_equal(np.asarray(a.days)[i][valid_a[i]], np.asarray(b.days)[i][valid_b[i]])
        np.testing.assert_array_equal(np.asarray(a.values)[i][valid_a[i]], np.asarray(b.values)[i][valid_b[i]])
    # a southern season (September to August) counts from the earliest date, across the new year
    assert int(np.asarray(a.days)[valid_a].max()) <= 360


def tiny_classes():
    """Labels of 40 series: classes of 30, 6, 2 and 1 series."""
    return np.repeat([0, 1, 2, 3], [30, 6, 3, 1])[:40]


def test_a_class_of_one_or_two_series_keeps_a_training_series_in_every_split():
    labels = tiny_classes()
    series = PixelSeries(np.zeros((40, 3, 1), np.float32), np.zeros((40, 3), np.int64), labels, "tiny")
    for fold in range(5):
        rest, test = kfold_split(series, 5, fold, seed=0)
        assert 3 not in labels[test]  # a class of one series is trained on, never tested
        train, val = stratified_split(labels[rest], 0.1, seed=0)
        assert set(labels[rest][train]) == {0, 1, 2, 3}
    train, val = stratified_split(labels, 0.1, seed=0)
    assert set(labels[train]) == {0, 1, 2, 3} and set(labels[val]) == {0, 1, 2}
    # with parcels: the one parcel of class 3 (and the last of class 2) is never held out for validation
    groups = np.arange(40) // 2
    for seed in range(20):
        train, val = group_split(groups, 0.3, seed, labels)
        assert set(labels[train]) == {0, 1, 2, 3} and len(val)


def test_a_class_of_one_parcel_is_trained_on_in_every_fold_and_a_class_without_series_is_named(tmp_path):
    """A class of one parcel cannot be both trained and tested: it is in no fold (trained on in every
    one); a class that has no training series (here a --class_names class without samples) is named
    in a warning, instead of a silent zero."""
    table = victoria_table(per_class=3)
    table.loc[table["label"] == "water", "parcel"] = "one parcel"
    table.to_csv(tmp_path / "samples.csv", index=False)
    classes = ["rice", *sorted(table["label"].unique())]
    convert(tmp_path / "samples.csv", tmp_path / "store", "--group_column", "parcel", "--class_names", *classes)
    for fold in range(5):
        data = SeriesStore(str(tmp_path / "store"), fold=fold, batch_size=4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data.setup("fit")
            data.setup("test")
        water = data.class_names.index("water")
        assert data.class_counts("train")[water] + data.class_counts("val")[water] == 3
        assert data.class_counts("test")[water] == 0
        assert any("1 of 9 classes have no training series" in str(w.message) and "'rice' (0 test)" in str(w.message)
                   for w in caught)  # fmt: skip


def test_a_test_table_converted_alone_with_integer_codes_and_a_missing_class(tmp_path, capsys):
    """Train and test tables converted one by one, as a user would: crop codes as labels (ordered by
    number, 10 after 8), a test table without one class (read by name), and a test table whose earliest
    date differs (its own reference date: an error saying which option to convert it with)."""
    codes = {"bare_ground": 1, "canola": 2, "cereals": 3, "legumes": 7, "forest": 8, "grassland": 10, "water": 12}
    table = victoria_table(per_class=4)
    table = table[table["label"].isin(codes)].assign(label=lambda t: t["label"].map(codes).astype(str))
    train_ids = table["sample_id"].unique()[::2]
    train, test = table[table["sample_id"].isin(train_ids)], table[~table["sample_id"].isin(train_ids)]
    test = test[test["label"] != "12"]
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    store, metadata = convert(tmp_path / "train.csv", tmp_path / "train", "--reference_date", "2017-09-01")
    assert metadata["class_names"] == ["1", "2", "3", "7", "8", "10", "12"]
    convert(tmp_path / "test.csv", tmp_path / "test", "--reference_date", "2017-08-01")
    with pytest.raises(ValueError, match=r"convert the test table with the training store's time axis: "):
        SeriesStore(str(tmp_path / "train"), test_path=str(tmp_path / "test"))
    convert(tmp_path / "test.csv", tmp_path / "test", "--reference_date", "2017-09-01")
    data = SeriesStore(str(tmp_path / "train"), test_path=str(tmp_path / "test"), batch_size=8)
    data.setup("fit")
    data.setup("test")
    test_labels = [data.class_names[i] for i in data.datasets["test"].labels]
    assert test_labels == test.drop_duplicates("sample_id")["label"].tolist()  # by name, not by index


def test_a_band_that_masks_dates_alone_is_named(tmp_path):
    """A date needs every band: an empty band column is an error; a band missing where the others
    have values (another resolution, another product) is a warning naming it, not silently lost dates."""
    table = victoria_table(per_class=2)
    table["B8A"] = table["B8A"].where(np.arange(len(table)) % 3 > 0, "")  # a third of the rows
    table.to_csv(tmp_path / "gaps.csv", index=False)
    with pytest.warns(UserWarning, match=r"band 'B8A' alone is missing on 33% of the rows .* leave 'B8A' out"):
        convert(tmp_path / "gaps.csv", tmp_path / "store")
    table.assign(B12="").to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(SystemExit):
        convert(tmp_path / "empty.csv", tmp_path / "store")
    with pytest.raises(ValueError, match=r"empty.csv: band columns \['B12'\] have no value in any row"):
        read_table(tmp_path / "empty.csv", BANDS)


def test_parquet_codes_made_float_by_a_null_stay_integer_codes(tmp_path):
    """Integer crop codes and numeric ids in Parquet columns that pandas made float (one unlabelled
    sample): class names 2, 3, 10 (not 10.0, 2.0, 3.0, not in text order), ids 7 (not 7.0)."""
    table = victoria_table(per_class=1)
    samples = table["sample_id"].unique()
    codes = dict(zip(samples, [2.0, 10.0, 3.0, np.nan] * 10, strict=False))
    table = table.assign(label=table["sample_id"].map(codes), sample_id=table["sample_id"].str[3:].astype(float))
    assert table["label"].dtype == np.float64 and table["label"].isna().any()
    table.to_parquet(tmp_path / "codes.parquet")
    store, metadata = convert(tmp_path / "codes.parquet", tmp_path / "store", "--allow_unlabelled")
    assert metadata["class_names"] == ["2", "3", "10"]
    assert np.asarray(store.sample_ids).tolist() == [str(int(i)) for i in table["sample_id"].unique()]
    assert [metadata["class_names"][k] if k >= 0 else None for k in store.labels] == [
        None if np.isnan(codes[s]) else str(int(codes[s])) for s in samples
    ]


def test_rows_of_zeros_in_every_band_are_named_as_a_possible_fill_value(tmp_path):
    """Sentinel-2 L2A's fill value 0 on a clouded date: warned (row named), and declared it is missing."""
    table = victoria_table(per_class=2, marker=0)
    table.to_csv(tmp_path / "zeros.csv", index=False)
    first = int(np.flatnonzero((table[BANDS] == 0).all(axis=1))[0])
    with pytest.warns(
        UserWarning, match=rf"column 'date' row {first}: every band is 0 on \d+ rows.*--missing_values '' 0"
    ):
        convert(tmp_path / "zeros.csv", tmp_path / "store")
    store = convert(tmp_path / "zeros.csv", tmp_path / "store", "--missing_values", "", "0")[0]
    assert np.nanmin(np.asarray(store.values)) > 0


def test_a_wide_table_reads_only_the_columns_it_needs(tmp_path):
    """Extra columns (coordinates, a geometry, notes, other bands) are not read: the same store as
    without them, CSV and Parquet; a missing column is still named with the columns found."""
    table = victoria_table(per_class=1)
    wide = table.assign(geometry="POLYGON((" + "1 2, " * 50 + "1 2))", lon="145.1", note="x")
    table.to_csv(tmp_path / "narrow.csv", index=False)
    wide.to_csv(tmp_path / "wide.csv", index=False)
    wide.to_parquet(tmp_path / "wide.parquet")
    expected = np.asarray(convert(tmp_path / "narrow.csv", tmp_path / "a")[0].values)
    for name in ("wide.csv", "wide.parquet"):
        np.testing.assert_array_equal(np.asarray(convert(tmp_path / name, tmp_path / "b")[0].values), expected)
        with pytest.raises(ValueError, match=r"columns \['B13'\] are missing \(found \['sample_id', 'date', 'B2'"):
            read_table(tmp_path / name, [*BANDS, "B13"])


def test_a_test_table_in_other_units_is_named(tmp_path):
    """Training table in integers 0-10000, test table exported as reflectance 0-1: a warning naming
    the bands, not silent nonsense; the same units: no warning."""
    table = victoria_table(per_class=6)
    train_ids = table["sample_id"].unique()[::2]
    train, test = table[table["sample_id"].isin(train_ids)], table[~table["sample_id"].isin(train_ids)]
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "same.csv", index=False)
    test.assign(**{band: test[band] / 10000 for band in BANDS}).to_csv(tmp_path / "scaled.csv", index=False)
    axis = ("--reference_date", "2017-09-01")
    convert(tmp_path / "train.csv", tmp_path / "train", *axis)
    for name, expected in (("same", 0), ("scaled", 1)):
        convert(tmp_path / f"{name}.csv", tmp_path / name, *axis)
        data = SeriesStore(str(tmp_path / "train"), test_path=str(tmp_path / name), batch_size=4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data.setup("fit")
            data.setup("test")
        messages = [str(w.message) for w in caught if "another scale" in str(w.message)]
        assert len(messages) == expected
    assert "bands on another scale than the training series: 'B2' (mean 0." in messages[0]


def test_test_classes_never_seen_in_training_are_reported_not_scored(tmp_path, capsys):
    """Issue 30 item 6: a test store holding a class training never saw ('orge') is tested through the
    command: a warning names the class and counts its series, the other series are scored. The
    streaming module, which cannot leave series out, refuses in one line with advice that works."""
    import yaml

    from cmap.data import write_store

    from .conftest import fit_tiny_classifier

    rng = np.random.default_rng(0)

    def store(name, labels, class_names):
        series = PixelSeries(
            rng.normal(size=(len(labels), 5, 2)).astype(np.float32), np.tile(np.arange(5) * 10, (len(labels), 1)),
            np.asarray(labels), name,
        )  # fmt: skip
        return str(write_store(tmp_path / name, series, ["b1", "b2"], class_names))

    train = store("train", np.arange(60) % 2, ["ble", "mais"])
    test = store("test", [0] * 7 + [1] * 3, ["ble", "orge"])  # 7 'ble', 3 'orge'
    data = {"class_path": "cmap.data.SeriesStore", "init_args": {"path": train, "test_path": test, "batch_size": 8}}
    checkpoint = fit_tiny_classifier(tmp_path / "run", data, num_bands=2, num_classes=2, steps=2)
    config = tmp_path / "run" / "config.yaml"
    unseen = r"3 of 10 test series are of classes training never saw \('orge'; the model's classes: \['ble', 'mais'\]\)"
    with pytest.warns(UserWarning, match=unseen + ": they are not scored"):
        cmap_main(["test", "--config", str(config), "--ckpt_path", str(checkpoint)])
    module = SeriesStore(train, test_path=test)
    with pytest.warns(UserWarning, match=unseen):
        module.setup("test")
    assert module.datasets["test"].labels.tolist() == [0] * 7  # the 'ble' series, scored as 'ble'

    streaming = yaml.safe_load(config.read_text())
    streaming["data"]["class_path"] = "cmap.data.StreamingSeriesStore"
    (tmp_path / "streaming.yaml").write_text(yaml.safe_dump(streaming))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        cmap_main(["test", "--config", str(tmp_path / "streaming.yaml"), "--ckpt_path", str(checkpoint)])
    error = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(error) == 1 and "Traceback" not in error[0]
    assert "test classes ['orge'] were never seen in training" in error[0] and "test with SeriesStore" in error[0]

    # Data whose bands are not the model's: one line naming both, before any setup.
    other = write_store(tmp_path / "other", open_store(train)[0], ["c1", "c2"], ["ble", "mais"])
    (tmp_path / "other.yaml").write_text(config.read_text().replace(train, str(other)).replace(test, str(other)))
    with pytest.raises(SystemExit) as stop:
        cmap_main(["test", "--config", str(tmp_path / "other.yaml"), "--ckpt_path", str(checkpoint)])
    error = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(error) == 1
    assert "band_names ['c1', 'c2'] differ from the model's ['b1', 'b2']" in error[0]
