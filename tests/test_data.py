import numpy as np
import pytest
import torch

from cmap.data import PixelSeries, SyntheticSITS, UCRCrop
from cmap.data.splits import stratified_split
from cmap.data.ucr import UCR_CROP_CLASSES, read_ucr_crop


def test_ucr_crop_matches_its_readme(ucr_root):
    """README facts: 7,200 / 16,800 series, 300 / 700 per class, 24 classes, 46 NDVI dates."""
    train = read_ucr_crop(ucr_root / "Crop_TRAIN.tsv")
    test = read_ucr_crop(ucr_root / "Crop_TEST.tsv")
    assert train.values.shape == (7200, 46, 1) and test.values.shape == (16800, 46, 1)
    assert np.bincount(train.labels).tolist() == [300] * 24
    assert np.bincount(test.labels).tolist() == [700] * 24
    assert len(UCR_CROP_CLASSES) == 24 and UCR_CROP_CLASSES[0] == "mais" and UCR_CROP_CLASSES[23] == "lac"
    assert -1.02 < train.values.min() and train.values.max() < 1.06
    assert train.days[0].tolist() == list(range(0, 46 * 8, 8))


def test_ucr_datamodule_normalises_with_training_split_only(ucr_root):
    data = UCRCrop(root=str(ucr_root), batch_size=256, val_fraction=0.1)
    data.setup("test")
    assert [len(data.datasets[s]) for s in ("train", "val", "test")] == [6480, 720, 16800]
    assert data.class_counts("val").tolist() == [30] * 24
    train = data.datasets["train"]
    train_values = train.__getitems__(list(range(len(train))))["values"]
    # Normalised training values have zero mean / unit std; the other splits do not define them.
    assert abs(train_values.mean().item()) < 1e-4 and abs(train_values.std().item() - 1) < 1e-3
    raw = read_ucr_crop(ucr_root / "Crop_TRAIN.tsv")
    train_index, _ = stratified_split(raw.labels, 0.1, seed=0)
    np.testing.assert_allclose(data.input_contract.mean, raw.values[train_index].mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(data.input_contract.std, raw.values[train_index].std(axis=(0, 1)), rtol=1e-4)
    batch = next(iter(data.train_dataloader()))
    assert batch["values"].shape == (256, 46, 1) and batch["values"].dtype == torch.float32
    assert batch["days"].dtype == torch.int64 and batch["mask"].all() and batch["label"].dtype == torch.int64


def test_ucr_missing_file_is_named(tmp_path):
    data = UCRCrop(root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Crop_TRAIN.tsv"):
        data.setup("fit")


def test_ucr_bad_label_is_named(tmp_path):
    (tmp_path / "Crop_TRAIN.tsv").write_text("25\t" + "\t".join(["0.1"] * 46) + "\n")
    with pytest.raises(ValueError, match=r"Crop_TRAIN.tsv: column 0 \(label\) holds 25.0, expected integers 1..24"):
        read_ucr_crop(tmp_path / "Crop_TRAIN.tsv")


def test_nan_dates_become_masked_zeros():
    data = SyntheticSITS(class_names=["a", "b"], num_bands=2, num_dates=10, num_train=40, cloud_fraction=0.3)
    data.setup("fit")
    batch = data.datasets["train"].__getitems__(list(range(len(data.datasets["train"]))))
    assert (~batch["mask"]).any()
    assert (batch["values"][~batch["mask"]] == 0).all() and torch.isfinite(batch["values"]).all()


def test_all_nan_series_is_rejected():
    values = np.ones((3, 4, 2), np.float32)
    values[1] = np.nan
    with pytest.raises(ValueError, match="no valid date.*sample index 1"):
        PixelSeries(values, np.zeros((3, 4), np.int64), np.zeros(3, np.int64), "file.csv")


def test_adopted_contract_replaces_the_data_statistics():
    data = SyntheticSITS(class_names=["a", "b"], num_bands=3)
    data.setup("fit")
    restored = SyntheticSITS(class_names=["a", "b"], num_bands=3, seed=5)
    restored.setup("fit")
    assert not np.array_equal(restored.input_contract.mean, data.input_contract.mean)
    restored.adopt(data.input_contract, "model.ckpt")
    np.testing.assert_array_equal(restored.input_contract.mean, data.input_contract.mean)
    rows = list(range(4))
    raw = restored.datasets["val"].series.values[restored.datasets["val"].index[rows]]
    valid = np.isfinite(raw).all(axis=-1, keepdims=True)
    expected = np.where(valid, (raw - data.input_contract.mean) / data.input_contract.std, 0.0)
    np.testing.assert_allclose(restored.datasets["val"].__getitems__(rows)["values"].numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"model.ckpt.*class_names \['a', 'c'\]"):
        SyntheticSITS(class_names=["a", "c"], num_bands=3).adopt(data.input_contract, "model.ckpt")


def test_labels_per_class_keeps_few_labels_but_full_statistics():
    full = SyntheticSITS(class_names=["a", "b", "c"], num_bands=2, num_train=300)
    few = SyntheticSITS(class_names=["a", "b", "c"], num_bands=2, num_train=300, labels_per_class=5)
    full.setup("fit")
    few.setup("fit")
    assert few.class_counts("train").tolist() == [5, 5, 5]
    assert few.class_counts("val").tolist() == full.class_counts("val").tolist()
    np.testing.assert_array_equal(few.input_contract.mean, full.input_contract.mean)


@pytest.mark.parametrize("module", ["SeriesStore", "StreamingSeriesStore"])
def test_cmap_test_takes_the_checkpoint_contract_before_setup_and_reads_the_checkpoint_once(
    tmp_path, monkeypatch, module
):
    """`cmap test --ckpt_path`: the data module normalises with the checkpoint's contract from the
    start (no training statistics or date grid computed to be thrown away) and the checkpoint file is
    loaded once (its hyper-parameters, contract and weights from one torch.load)."""
    import cmap.data.datamodule as datamodule
    from cmap.cli import main as cmap_main
    from cmap.data import write_store
    from cmap.data.contract import InputContract

    from .conftest import fit_tiny_classifier

    rng = np.random.default_rng(0)
    series = PixelSeries(
        rng.normal(size=(96, 6, 2)).astype(np.float32), np.tile(np.arange(6) * 10, (96, 1)), np.arange(96) % 2, "s"
    )
    store = write_store(tmp_path / "store", series, ["b1", "b2"], ["a", "b"])
    data = {"class_path": f"cmap.data.{module}", "init_args": {"path": str(store), "fold": 0, "batch_size": 16}}
    checkpoint = fit_tiny_classifier(tmp_path / "run", data, num_bands=2, num_classes=2, steps=2)

    calls = {"statistics": 0, "date_grid": 0, "loads": 0}
    adopted = []

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        datamodule, "normalisation_statistics", counted("statistics", datamodule.normalisation_statistics)
    )
    monkeypatch.setattr(datamodule, "training_date_grid", counted("date_grid", datamodule.training_date_grid))
    original_load = torch.load

    def load(source, *args, **kwargs):  # a path (cmap) or an open file (Lightning's restore): every load counts
        calls["loads"] += 1
        return original_load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    original_adopt = datamodule.SeriesDataModule.adopt

    def adopt(self, contract, source):
        adopted.append((contract, "train" in self.datasets))  # (contract, after setup)
        return original_adopt(self, contract, source)

    monkeypatch.setattr(datamodule.SeriesDataModule, "adopt", adopt)
    cmap_main(["test", "--config", str(tmp_path / "run" / "config.yaml"), "--ckpt_path", str(checkpoint)])

    assert calls == {"statistics": 0, "date_grid": 0, "loads": 1}
    expected = InputContract.from_checkpoint(original_load(checkpoint, weights_only=True), str(checkpoint))
    assert adopted[0] == (expected, False)  # the checkpoint's contract, given before setup
    # The counters see a data module's own statistics when there is no checkpoint to take them from.
    getattr(__import__("cmap.data", fromlist=[module]), module)(str(store), fold=0).setup("fit")
    assert calls["statistics"] == 1 and calls["date_grid"] == 1


def test_input_settings_resolve_explicit_then_checkpoint_then_default():
    """One rule for every input setting (timm's resolve_data_config): an explicit option, else the
    checkpoint's, else the default; a default function runs only when it is needed."""
    from cmap.data.contract import InputContract, RawValues, contract_from_settings, resolve_input_settings
    from cmap.data.time_axis import TimeAxis

    checkpoint = InputContract(["b1"], [1.0], [2.0], TimeAxis.from_season_start("09-01"), ["a"], RawValues(1e-4))
    called = []

    def statistics():
        called.append("statistics")
        return np.array([9.0])

    defaults = {"band_names": ["b1"], "mean": statistics, "std": statistics, "scale": 1.0, "offset": 0.0}
    settings = resolve_input_settings({"time_axis": TimeAxis(), "offset": 0.5}, checkpoint, defaults)
    assert settings["time_axis"] == TimeAxis() and settings["offset"] == 0.5  # explicit
    assert settings["scale"] == 1e-4 and settings["mean"].tolist() == [1.0] and called == []  # the checkpoint's
    contract = contract_from_settings(settings)
    assert contract.raw_values == RawValues(1e-4, 0.5) and contract.class_names == ("a",)
    settings = resolve_input_settings(defaults=defaults)  # no checkpoint: the defaults, computed
    assert settings["mean"].tolist() == [9.0] and called == ["statistics", "statistics"] and settings["offset"] == 0.0
    with pytest.raises(ValueError, match=r"unknown input settings \['scales'\]"):
        resolve_input_settings({"scales": 1.0})
