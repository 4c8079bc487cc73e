"""Every real dataset of ../shared/data converts to a store (README facts hold) and trains."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cmap.data import SeriesStore, UCRCrop, open_store, write_store
from cmap.data.__main__ import main as convert_main
from cmap.data.contract import TimeAxis
from cmap.data.convert import read_mato_grosso, read_sinop_samples, read_tempcnn, read_victoria
from cmap.data.table import read_table

from .conftest import SHARED_DATA, quiet_trainer, require, tiny_classifier, tiny_encoder_config


def counts(converted) -> dict[str, int]:
    labels = np.bincount(converted.series.labels, minlength=len(converted.class_names))
    return dict(zip(converted.class_names, labels.tolist(), strict=True))


def test_victoria_matches_its_readme():
    folder = require(SHARED_DATA / "igarss2019_s2_victoria")
    train, test = read_victoria(folder / "train_dataset.csv"), read_victoria(folder / "test_dataset.csv")
    assert train.series.values.shape == (400, 73, 10) and test.series.values.shape == (400, 73, 10)
    assert set(counts(train).values()) == {50} and set(counts(test).values()) == {50}
    assert train.band_names[0] == "B2" and train.band_names[-1] == "B12"
    assert 0 <= train.series.values.min() and train.series.values.max() <= 6344
    train_polygons, test_polygons = set(train.series.groups), set(test.series.groups)
    assert (len(train_polygons), len(test_polygons), len(train_polygons & test_polygons)) == (113, 107, 38)
    assert int(np.isin(test.series.groups, list(train_polygons)).sum()) == 168


def test_tempcnn_matches_its_readme():
    folder = require(SHARED_DATA / "tempcnn_formosat2_example")
    train, test = read_tempcnn(folder / "train_dataset.csv"), read_tempcnn(folder / "test_dataset.csv")
    assert train.series.values.shape == (260, 149, 3) and test.series.values.shape == (260, 149, 3)
    assert set(counts(train).values()) == {20} and len(train.class_names) == 13
    assert len(set(train.series.groups)) == 149 and len(set(test.series.groups)) == 142
    assert not set(train.series.groups) & set(test.series.groups)


def test_mato_grosso_matches_its_readme():
    converted = read_mato_grosso(require(SHARED_DATA / "sits_matogrosso_mod13q1" / "br_mt_1_8K_9classes_6bands.rda"))
    assert converted.series.values.shape == (1892, 23, 6)
    assert counts(converted) == {
        "Cerrado": 379, "Fallow_Cotton": 29, "Forest": 131, "Pasture": 344, "Soy_Corn": 364, "Soy_Cotton": 352,
        "Soy_Fallow": 87, "Soy_Millet": 180, "Soy_Sunflower": 26,
    }  # fmt: skip
    # 16-day composites (restarting on 1 January) of one agricultural year, counted from the season's
    # start: 09-13, the first composite's day in leap years (09-14 in the others, day 1).
    assert converted.time_axis == TimeAxis.from_season_start("09-13")
    assert set(converted.series.days[:, 0].tolist()) == {0, 1} and set(np.diff(converted.series.days).ravel()) <= set(
        range(13, 18)
    )
    assert 345 <= converted.series.days[:, -1].min() and converted.series.days[:, -1].max() <= 354
    assert not np.isnan(converted.series.values).any()


def test_sinop_samples_match_their_readme():
    converted = read_sinop_samples(require(SHARED_DATA / "sits_sinop_modis_cube" / "samples_modis_ndvi.rda"))
    assert converted.series.values.shape == (1218, 12, 1)
    assert counts(converted) == {"Cerrado": 379, "Forest": 131, "Pasture": 344, "Soy_Corn": 364}
    assert 0.0 < converted.series.values.min() and converted.series.values.max() <= 1.0


DATASETS = {
    "ucr_crop": ("ucr_crop_formosat2/Crop_TRAIN.tsv", "ucr_crop_formosat2/Crop_TEST.tsv"),
    "victoria": ("igarss2019_s2_victoria/train_dataset.csv", "igarss2019_s2_victoria/test_dataset.csv"),
    "tempcnn": ("tempcnn_formosat2_example/train_dataset.csv", "tempcnn_formosat2_example/test_dataset.csv"),
    "mato_grosso": ("sits_matogrosso_mod13q1/br_mt_1_8K_9classes_6bands.rda", None),
    "sinop_samples": ("sits_sinop_modis_cube/samples_modis_ndvi.rda", None),
}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_dataset_converts_and_trains_through_one_data_module(dataset, tmp_path):
    train_file, test_file = DATASETS[dataset]
    convert_main(["convert", dataset, str(require(SHARED_DATA / train_file)), str(tmp_path / "train")])
    if test_file:
        convert_main(["convert", dataset, str(require(SHARED_DATA / test_file)), str(tmp_path / "test")])
        data = SeriesStore(str(tmp_path / "train"), test_path=str(tmp_path / "test"), batch_size=32)
    else:  # cross-validation datasets
        data = SeriesStore(str(tmp_path / "train"), fold=0, num_folds=5, batch_size=32)
    model = tiny_classifier(len(data.class_names), tiny_encoder_config(data.num_bands), max_lr=1e-3)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1, limit_test_batches=1)
    trainer.fit(model, data)
    assert trainer.global_step == 2
    # Two steps at the start of the LR schedule learn nothing measurable, and the one test batch is
    # mostly of one class (stores are in class order): accuracy says nothing here. What must hold:
    # every weight tensor moved and stayed finite, and the test loss is finite (a NaN or infinite
    # value left in the converted series fails here).
    after = list(model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(torch.isfinite(parameter).all() for parameter in after)
    assert math.isfinite(trainer.test(model, data, verbose=False)[0]["test/loss"])
    if data.fold is not None:  # no series in both the test fold and training
        series, _ = open_store(data.path)
        assert len(data.datasets["train"]) + len(data.datasets["val"]) + len(data.datasets["test"]) == len(series)


def long_table(tmp_path, rows):
    path = tmp_path / "samples.csv"
    pd.DataFrame(rows, columns=["sample_id", "date", "B4", "B8", "label", "parcel"]).to_csv(path, index=False)
    return path


def test_table_with_irregular_dates_and_clouds(tmp_path):
    path = long_table(
        tmp_path,
        [
            ("a", "2021-03-10", 0.1, 0.3, "mais", "p1"),
            ("a", "2021-03-01", 0.2, 0.4, "mais", "p1"),  # out of order: sorted by date
            ("a", "2021-04-01", None, None, "mais", "p1"),  # cloud
            ("b", "2021-03-05", 0.5, 0.6, "colza", "p2"),
        ],
    )
    converted = read_table(path, ["B4", "B8"], group_column="parcel", class_names=["colza", "mais", "orge"])
    series = converted.series
    assert series.values.shape == (2, 3, 2)
    assert series.days.tolist() == [[0, 9, 31], [4, 0, 0]] and converted.time_axis == TimeAxis.from_reference_date(
        "2021-03-01"
    )
    np.testing.assert_allclose(series.values[0, 0], [0.2, 0.4])
    assert series.valid_dates.tolist() == [[True, True, False], [True, False, False]]
    assert series.labels.tolist() == [1, 0] and series.groups.tolist() == [0, 1]
    store = write_store(tmp_path / "store", series, converted.band_names, converted.class_names)
    reopened, metadata = open_store(store)
    assert not isinstance(reopened.values, np.ndarray) and metadata["class_names"] == ["colza", "mais", "orge"]
    np.testing.assert_array_equal(reopened.values[np.array([1, 0])], series.values[[1, 0]])
    np.testing.assert_array_equal(reopened.days, series.days)


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        ([("a", "2021-13-45", 0.1, 0.2, "mais", "p")], {}, r"column 'date' row 0: unparsable date '2021-13-45'"),
        ([("a", "2021-03-01", 0.1, 0.2, "maize", "p")], {"class_names": ["mais"]}, r"labels \['maize'\] not in"),
        ([("a", "2021-03-01", 0.1, 0.2, "m", "p")] * 2, {}, "sample 'a' has two rows for the same date"),
        ([("a", "2021-03-01", 0.1, 0.2, "m", "p"), ("b", "2021-03-01", None, None, "m", "q")], {}, "no valid date"),
    ],
    ids=["unparsable date", "unknown label", "duplicate date", "NaN-only series"],
)
def test_table_errors_name_file_and_field(tmp_path, rows, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        read_table(long_table(tmp_path, rows), ["B4", "B8"], **kwargs)
    assert "samples.csv" in str(error.value)


def test_table_missing_band_is_named(tmp_path):
    path = long_table(tmp_path, [("a", "2021-03-01", 0.1, 0.2, "m", "p")])
    with pytest.raises(ValueError, match=r"samples.csv: columns \['B11'\] are missing"):
        read_table(path, ["B4", "B11"])


def test_store_rejects_wrong_shapes_and_truncation(tmp_path):
    converted = read_table(long_table(tmp_path, [("a", "2021-03-01", 0.1, 0.2, "m", "p")]), ["B4", "B8"])
    with pytest.raises(ValueError, match=r"1 band names \['B4'\]"):
        write_store(tmp_path / "bad", converted.series, ["B4"], converted.class_names)
    store = write_store(tmp_path / "store", converted.series, converted.band_names, converted.class_names)
    (store / "days.npy").write_bytes((store / "days.npy").read_bytes()[:40])
    with pytest.raises(ValueError, match="days.npy: unreadable"):
        open_store(store)
    with pytest.raises(FileExistsError):
        write_store(store, converted.series, converted.band_names, converted.class_names)


def test_class_map_to_the_seeds_french_classes(ucr_root):
    mapping = {"mais": "mais", "mais_ensilage": "mais", "ble": "ble_tendre", "orge": "orge", "colza": "colza"}
    data = UCRCrop(root=str(ucr_root), class_map={**mapping, "tournesol": "tournesol", "*": "other"})
    assert data.class_names == ["mais", "ble_tendre", "orge", "colza", "tournesol", "other"]
    data.setup("fit")
    train_val = data.class_counts("train") + data.class_counts("val")
    assert train_val.tolist() == [600, 300, 300, 300, 300, 300 * 18]
    with pytest.raises(ValueError, match=r"unknown source classes \['maize'\]"):
        _ = UCRCrop(root=str(ucr_root), class_map={"maize": "mais", "*": "other"}).class_names
