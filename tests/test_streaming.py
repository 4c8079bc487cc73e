"""StreamingSeriesStore: splits, shuffling and labels without per-series memory."""

from types import SimpleNamespace

import numpy as np
import pytest

from cmap.data import SeriesStore, StreamingSeriesStore, write_store
from cmap.data.convert import read_mato_grosso
from cmap.data.sampling import RowPermutation, unit_hash
from cmap.data.series import PixelSeries
from cmap.ml.autoencoders import AutoEncoder
from cmap.ml.decoders import BandReconstruction

from .conftest import SHARED_DATA, quiet_trainer, require, tiny_classifier, tiny_encoder, tiny_encoder_config


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 65_537])
def test_row_permutation_is_a_permutation_that_depends_on_the_seed(n):
    order = RowPermutation(n, seed=3)(np.arange(n))
    assert sorted(order.tolist()) == list(range(n))
    if n >= 1000:
        assert not np.array_equal(order, np.arange(n))
        assert not np.array_equal(order, RowPermutation(n, seed=4)(np.arange(n)))
        # Shuffled: neighbours in the order are not neighbours in the store.
        assert np.median(np.abs(np.diff(order))) > n / 10


def test_unit_hash_is_uniform_and_fixed_by_its_seed():
    values = unit_hash(np.arange(200_000), seed=0)
    assert values.min() >= 0 and values.max() < 1
    assert np.abs(np.histogram(values, bins=10, range=(0, 1))[0] / 20_000 - 1).max() < 0.03
    assert np.array_equal(values, unit_hash(np.arange(200_000), seed=0))
    assert not np.array_equal(values, unit_hash(np.arange(200_000), seed=1))


@pytest.fixture(scope="module")
def mato_grosso(tmp_path_factory: pytest.TempPathFactory):
    source = require(SHARED_DATA / "sits_matogrosso_mod13q1") / "br_mt_1_8K_9classes_6bands.rda"
    converted = read_mato_grosso(source)
    folder = tmp_path_factory.mktemp("stores") / "mato_grosso"
    write_store(folder, converted.series, converted.band_names, converted.class_names)
    return folder, converted


def rows_of(loader) -> list[int]:
    return [row for row in loader.sampler]


def test_splits_partition_the_store_and_each_epoch_visits_every_training_series_once(mato_grosso):
    folder, converted = mato_grosso
    data = StreamingSeriesStore(str(folder), fold=0, num_folds=5, val_fraction=0.1, batch_size=64)
    data.setup("fit")
    train_loader = data.train_dataloader()
    train, val, test = rows_of(train_loader), rows_of(data.val_dataloader()), rows_of(data.test_dataloader())
    assert len(set(train)) == len(train) == len(data.datasets["train"])
    assert set(train) | set(val) | set(test) == set(range(1892)) and not set(train) & set(val)
    assert not (set(train) | set(val)) & set(test)
    assert abs(len(test) / 1892 - 0.2) < 0.04 and abs(len(val) / (1892 - len(test)) - 0.1) < 0.03
    again = rows_of(train_loader)
    assert sorted(again) == sorted(train) and again != train  # a new order each epoch
    assert val == sorted(val)  # evaluation in store order
    counts = np.bincount(converted.series.labels[train], minlength=9)
    assert np.array_equal(data.class_counts("train"), counts)
    # Batches hold the series of their rows, normalised, with their labels.
    batch = next(iter(data.val_dataloader()))
    expected = (converted.series.values[val[:64]] - data.input_contract.mean) / data.input_contract.std
    np.testing.assert_allclose(batch["values"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert batch["label"].tolist() == converted.series.labels[val[:64]].tolist()


def test_normalisation_is_close_to_the_exact_statistics(mato_grosso):
    folder, _ = mato_grosso
    streaming, exact = StreamingSeriesStore(str(folder), fold=0), SeriesStore(str(folder), fold=0)
    streaming.setup("fit")
    exact.setup("fit")
    np.testing.assert_allclose(streaming.input_contract.mean, exact.input_contract.mean, rtol=0.03, atol=0.01)
    np.testing.assert_allclose(streaming.input_contract.std, exact.input_contract.std, rtol=0.05)


def test_groups_are_never_split_and_a_model_trains(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    series = PixelSeries(rng.standard_normal((n, 5, 2)).astype(np.float32), np.tile(np.arange(5) * 10, (n, 1)),
                         rng.integers(0, 3, n), "synthetic", groups=np.arange(n) // 4)  # fmt: skip
    write_store(tmp_path / "store", series, ["b1", "b2"], ["a", "b", "c"])
    data = StreamingSeriesStore(str(tmp_path / "store"), fold=1, num_folds=4, val_fraction=0.2, batch_size=32)
    data.setup("fit")
    splits = [set(series.groups[rows_of(loader)]) for loader in
              (data.train_dataloader(), data.val_dataloader(), data.test_dataloader())]  # fmt: skip
    assert not splits[0] & splits[1] and not splits[0] & splits[2] and not splits[1] & splits[2]
    assert set().union(*splits) == set(range(n // 4))
    encoder = tiny_encoder_config(2, d_model=8, dropout=0.0, dim_feedforward=16, tau=100, max_len=100)
    model = tiny_classifier(3, encoder)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == len(data.datasets["train"]) // 32


def test_bad_labels_and_unsupported_options_are_named(tmp_path):
    rng = np.random.default_rng(0)
    series = PixelSeries(rng.standard_normal((100, 3, 1)).astype(np.float32), np.tile([0, 5, 9], (100, 1)),
                         np.zeros(100, dtype=np.int64), "synthetic")  # fmt: skip
    write_store(tmp_path / "store", series, ["b"], ["a", "b"])
    labels = np.load(tmp_path / "store" / "labels.npy")
    labels[70] = 5
    np.save(tmp_path / "store" / "labels.npy", labels)
    with pytest.raises(
        ValueError,
        match=r"store/labels.npy: row 70 holds label 5, expected -1 \(unlabelled\) or a class "
        r"index in \[0, 2\)",
    ):
        StreamingSeriesStore(str(tmp_path / "store"), fold=0).setup("fit")
    with pytest.raises(TypeError, match="class_map"):  # not an argument: it needs every label in memory
        StreamingSeriesStore(str(tmp_path / "store"), fold=0, class_map={"a": "x", "b": "x"})


def test_a_test_store_with_some_of_the_training_classes_is_read_by_name(tmp_path):
    """A test store holding two of the three training classes, in another order: its labels index
    the training classes (as SeriesStore reads them), in the class counts and in every batch; a
    label outside the test store's own classes is named with its row, as it is read."""
    rng = np.random.default_rng(0)

    def store(name, n, labels, class_names):
        series = PixelSeries(rng.standard_normal((n, 3, 1)).astype(np.float32), np.tile([0, 5, 9], (n, 1)),
                             labels, "synthetic")  # fmt: skip
        write_store(tmp_path / name, series, ["b"], class_names)

    store("train", 90, np.arange(90) % 3, ["a", "b", "c"])
    test_labels = np.array([0, 1, 1, 0, 1, 1, 1, 0, 1, 0])  # "c", "a": c 4 times, a 6 times, b never
    store("test", 10, test_labels, ["c", "a"])
    expected = [("c", "a")[label] for label in test_labels]
    for kind in (SeriesStore, StreamingSeriesStore):
        data = kind(str(tmp_path / "train"), test_path=str(tmp_path / "test"), batch_size=4)
        data.setup("fit")
        data.setup("test")
        assert data.class_names == ["a", "b", "c"]
        assert data.class_counts("test").tolist() == [6, 0, 4]
        labels = [label for batch in data.test_dataloader() for label in batch["label"].tolist()]
        assert [data.class_names[label] for label in labels] == expected, kind.__name__
    bad = test_labels.copy()
    bad[7] = 2  # a training class index, but not one of the test store's two classes
    np.save(tmp_path / "test" / "labels.npy", bad)
    with pytest.raises(ValueError, match=r"test/labels.npy: row 7 holds label 2, expected -1 \(unlabelled\) or a "
                       r"class index in \[0, 2\)"):  # fmt: skip
        StreamingSeriesStore(str(tmp_path / "train"), test_path=str(tmp_path / "test")).setup("test")


def test_unlabelled_series_are_taken_as_series_store_takes_them(tmp_path):
    """A store with unlabelled series (-1) mixed in: a Classifier's fit and testing name the first
    one as an error (SeriesStore too); pretraining (needs_labels False) splits every series, labels
    dropped, and predicting reads a test store with unlabelled series; -2 stays an error."""
    rng = np.random.default_rng(0)
    n = 600
    labels = rng.integers(0, 3, n)
    labels[rng.random(n) < 0.4] = -1
    series = PixelSeries(rng.standard_normal((n, 3, 1)).astype(np.float32), np.tile([0, 5, 9], (n, 1)), labels,
                         "synthetic")  # fmt: skip
    write_store(tmp_path / "mixed", series, ["b"], ["a", "b", "c"])
    write_store(tmp_path / "labelled", PixelSeries(series.values, series.days, np.arange(n) % 3, "s"), ["b"],
                ["a", "b", "c"])  # fmt: skip
    first = int(np.flatnonzero(labels == -1)[0])
    for kind, message in ((StreamingSeriesStore, rf"mixed/labels.npy: row {first} holds label -1 \(unlabelled\)"),
                          (SeriesStore, r"mixed: label index -1 is outside the 3 classes")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            kind(str(tmp_path / "mixed"), fold=0).setup("fit")
    # Pretraining: every series in exactly one split, each training series once an epoch, no labels.
    pretraining = SimpleNamespace(lightning_module=SimpleNamespace(needs_labels=False))
    data = StreamingSeriesStore(str(tmp_path / "mixed"), fold=0, val_fraction=0.2, batch_size=32)
    data.trainer = pretraining
    data.setup("fit")
    train, val, test = rows_of(data.train_dataloader()), rows_of(data.val_dataloader()), rows_of(data.test_dataloader())
    assert len(set(train)) == len(train) == len(data.datasets["train"]) == data.sizes["train"]
    assert sorted(train + val + test) == list(range(n))
    assert (labels[train] == -1).any() and data.class_counts("train").sum() == 0
    assert "label" not in next(iter(data.train_dataloader()))
    exact = SeriesStore(str(tmp_path / "mixed"), fold=0)
    exact.trainer = pretraining
    exact.setup("fit")
    assert exact.datasets["train"].labels is None and data.datasets["train"].labels is None
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1)  # an AutoEncoder pretrains on it
    trainer.fit(
        AutoEncoder(tiny_encoder(1), BandReconstruction([16, 1])),
        StreamingSeriesStore(str(tmp_path / "mixed"), fold=0, batch_size=32),
    )
    assert trainer.global_step == 2
    # A test store with unlabelled series: predicted (labels dropped), not tested.
    for kind in (StreamingSeriesStore, SeriesStore):
        data = kind(str(tmp_path / "labelled"), test_path=str(tmp_path / "mixed"), batch_size=50)
        data.setup("fit")
        assert data.class_counts("train").sum() == len(data.datasets["train"])  # the training store is labelled
        data.setup("predict")
        batches = list(data.predict_dataloader())
        assert sum(len(batch["values"]) for batch in batches) == n and "label" not in batches[0], kind.__name__
        data = kind(str(tmp_path / "labelled"), test_path=str(tmp_path / "mixed"))
        data.setup("fit")  # the test store's labels are not needed yet
        with pytest.raises(ValueError, match="label -1|label index -1"):
            data.setup("test")
    labels[first] = -2
    np.save(tmp_path / "mixed" / "labels.npy", labels)
    data = StreamingSeriesStore(str(tmp_path / "mixed"), fold=0)
    data.trainer = pretraining
    with pytest.raises(ValueError, match=rf"mixed/labels.npy: row {first} holds label -2, expected -1 \(unlabelled\) "
                       r"or a class index in \[0, 3\)"):  # fmt: skip
        data.setup("fit")
