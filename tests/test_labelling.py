"""cmap cv, cmap audit and cmap suggest on a real subset of the Mato Grosso samples (300 labelled
series with ids, 200 unlabelled ones, their coordinates), through the ``cmap`` command."""

import hashlib

import fiona
import numpy as np
import pandas as pd
import pytest
import yaml

from cmap.cli import main as cmap_main
from cmap.data.convert import _read_rda_tibble, read_mato_grosso
from cmap.data.series import PixelSeries
from cmap.data.splits import kfold_split
from cmap.data.store import open_store, store_time_axis, write_store
from cmap.labelling.audit import find_issues
from cmap.labelling.peer import out_of_fold
from cmap.labelling.selection import cluster_select, gradient_select, select, uncertainty
from cmap.labelling.som import som_issues

from .conftest import SHARED_DATA, fit_tiny_classifier, require, tiny_classifier_config, tiny_encoder_config

MATO_GROSSO = SHARED_DATA / "sits_matogrosso_mod13q1" / "br_mt_1_8K_9classes_6bands.rda"


@pytest.fixture(scope="module")
def mato(tmp_path_factory):
    """Stores ``labelled`` (300 series) and ``unlabelled`` (200, label -1), ids ``mg-<row of the
    .rda>``, and ``coordinates.csv`` (sample_id, longitude, latitude) of both."""
    source = require(MATO_GROSSO)
    converted = read_mato_grosso(source)
    table = _read_rda_tibble(source, "br_mt_1_8K_9classes_6bands")
    root = tmp_path_factory.mktemp("mato")
    rows = np.random.default_rng(0).permutation(len(converted.series))[:500]
    ids = np.array([f"mg-{row}" for row in rows])
    series = converted.series
    for name, part, labels in (("labelled", slice(0, 300), None), ("unlabelled", slice(300, 500), -1)):
        chosen = rows[part]
        labels = series.labels[chosen] if labels is None else np.full(len(chosen), -1)
        subset = PixelSeries(series.values[chosen], series.days[chosen], labels, str(source), None, ids[part])
        converted.__class__(subset, converted.band_names, converted.class_names, converted.time_axis).write(root / name)
    coordinates = pd.DataFrame(
        {
            "sample_id": ids,
            "longitude": table["longitude"].to_numpy()[rows],
            "latitude": table["latitude"].to_numpy()[rows],
        }
    )
    coordinates.to_csv(root / "coordinates.csv", index=False)
    return root


def digest(folder) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def one_line_error(capsys, arguments: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cmap_main(arguments)
    assert stop.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_cv_reports_the_data_modules_folds_and_every_samples_out_of_fold_probabilities(mato, tmp_path, capsys):
    config = {
        "trainer": {"max_steps": 4, "limit_val_batches": 1, "enable_checkpointing": False},
        "model": tiny_classifier_config(9, tiny_encoder_config(6, dim_feedforward=32), max_lr=0.001),
        "data": {"class_path": "cmap.data.SeriesStore", "init_args": {"path": "elsewhere", "fold": 0}},
        "attention_maps": {"first_epoch": 1000},
        "embeddings": {"first_epoch": 1000},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    store, output = mato / "labelled", tmp_path / "cv"
    arguments = [
        "cv",
        str(store),
        str(output),
        "--config",
        str(tmp_path / "tiny.yaml"),
        "--folds",
        "3",
        "--threads",
        "1",
    ]
    before = digest(store)
    cmap_main(arguments)
    series = open_store(store)[0]
    oof = pd.read_csv(output / "oof_probabilities.csv", dtype={"sample_id": str})
    assert sorted(oof["row"]) == list(range(len(series)))  # every series held out once
    assert (oof["sample_id"].to_numpy() == np.asarray(series.sample_ids[:])[oof["row"]]).all()
    for fold in range(3):  # the folds of SeriesStore(fold=k, num_folds=3, seed=0)
        assert set(oof[oof["fold"] == fold]["row"]) == set(kfold_split(series, 3, fold, 0)[1])
    probabilities = oof.filter(like="probability/").to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    pooled = pd.read_csv(output / "cv_pooled.csv")
    names = [column.split("/", 1)[1] for column in oof.filter(like="probability/").columns]
    hits = np.array(names)[probabilities.argmax(axis=1)] == oof["label"].to_numpy()
    assert pooled["overall_accuracy"].iloc[0] == pytest.approx(hits.mean())
    scores = pd.read_csv(output / "cv_scores.csv")
    assert set(scores[scores["class"] == "all"]["fold"]) == {0, 1, 2}
    assert "Confusion matrix" in (output / "cv_report.md").read_text()
    assert (output / "cv_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert digest(store) == before
    capsys.readouterr()
    cmap_main(arguments)  # done before: read back, nothing trained again
    assert capsys.readouterr().out.count("done before") == 3


def noisy_store(mato, tmp_path, flips: int = 25) -> tuple:
    """A copy of the labelled store with ``flips`` labels changed; the changed rows."""
    series, metadata = open_store(mato / "labelled")
    rng = np.random.default_rng(3)
    flipped = rng.choice(len(series), flips, replace=False)
    labels = series.labels.copy()
    labels[flipped] = (labels[flipped] + rng.integers(1, 9, flips)) % 9
    noisy = PixelSeries(series.values[:], series.days[:], labels, "noisy", None, np.asarray(series.sample_ids[:]))
    write_store(tmp_path / "noisy", noisy, metadata["band_names"], metadata["class_names"], store_time_axis(metadata))
    return tmp_path / "noisy", flipped


@pytest.mark.parametrize("method", ["som", "confident_learning"])
def test_audit_flags_flipped_labels_and_writes_a_cleaned_store(mato, tmp_path, method):
    store, flipped = noisy_store(mato, tmp_path)
    before = digest(store)
    output = tmp_path / "audit.csv"
    cmap_main(
        [
            "audit",
            str(store),
            str(output),
            "--coordinates",
            str(mato / "coordinates.csv"),
            "--clean_store",
            str(tmp_path / "clean"),
            "--method",
            method,
        ]
    )
    table = pd.read_csv(output, dtype={"sample_id": str})
    series = open_store(store)[0]
    assert (table["sample_id"].to_numpy() == np.asarray(series.sample_ids[:])[table["row"]]).all()
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    precision = np.isin(table["row"], flipped).mean()
    assert len(table) >= 10 and precision >= 0.5, (len(table), precision)
    assert (table["label"] != table["suggested_label"]).all()
    with fiona.open(output.with_suffix(".gpkg")) as layer:
        features = list(layer)
    coordinates = pd.read_csv(mato / "coordinates.csv").set_index("sample_id")
    assert [f["properties"]["sample_id"] for f in features] == list(table["sample_id"])
    for feature in features:
        expected = coordinates.loc[feature["properties"]["sample_id"]]
        assert feature["geometry"]["coordinates"] == pytest.approx((expected["longitude"], expected["latitude"]))
    clean = open_store(tmp_path / "clean")[0]
    assert len(clean) == len(series) - len(table)
    assert not set(np.asarray(clean.sample_ids[:])) & set(table["sample_id"])
    classes = pd.read_csv(tmp_path / "audit_classes.csv")
    assert classes["flagged"].sum() == len(table) and (classes["estimated_noise"].between(0, 1)).all()
    assert digest(store) == before  # the original store only read


def test_audit_reads_cv_probabilities_and_checks_they_are_this_stores(mato, tmp_path, capsys):
    store, _ = noisy_store(mato, tmp_path)
    series, metadata = open_store(store)
    probabilities, agreement, folds = out_of_fold(series, 9, 3, 0)
    names = metadata["class_names"]
    oof = pd.DataFrame(
        {
            "row": np.arange(len(series)),
            "sample_id": np.asarray(series.sample_ids[:]),
            "label": [names[k] for k in series.labels],
            "agreement": agreement,
        }
    )
    for k, name in enumerate(names):
        oof[f"probability/{name}"] = probabilities[:, k]
    oof.to_csv(tmp_path / "oof.csv", index=False)
    cmap_main(["audit", str(store), str(tmp_path / "audit.csv"), "--probabilities", str(tmp_path / "oof.csv")])
    table = pd.read_csv(tmp_path / "audit.csv")
    assert list(table["row"]) == list(find_issues(series.labels, probabilities)[0])
    oof.loc[5, "label"] = names[(series.labels[5] + 1) % 9]
    oof.to_csv(tmp_path / "oof.csv", index=False)
    message = one_line_error(
        capsys, ["audit", str(store), str(tmp_path / "again.csv"), "--probabilities", str(tmp_path / "oof.csv")]
    )
    assert "oof.csv: row 5" in message and "label" in message


def test_audit_of_a_store_without_labels_is_one_line(mato, tmp_path, capsys):
    message = one_line_error(capsys, ["audit", str(mato / "unlabelled"), str(tmp_path / "audit.csv")])
    assert "labels.npy" in message and "labels" in message
    assert not (tmp_path / "audit.csv").exists()
    arguments = ["audit", str(mato / "labelled"), str(tmp_path / "audit.csv"), "--method", "som"]
    message = one_line_error(capsys, [*arguments, "--probabilities", str(tmp_path / "oof.csv")])
    assert "--probabilities" in message and "--method confident_learning" in message


@pytest.fixture(scope="module")
def checkpoint(mato, tmp_path_factory):
    data = {"class_path": "cmap.data.SeriesStore", "init_args": {"path": str(mato / "labelled"), "fold": 0}}
    return fit_tiny_classifier(tmp_path_factory.mktemp("fit"), data, num_bands=6, num_classes=9)


def test_suggest_picks_uncertain_diverse_unlabelled_series_with_coordinates(mato, checkpoint, tmp_path):
    store, output = mato / "unlabelled", tmp_path / "next.csv"
    before = digest(store)
    cmap_main(
        [
            "suggest",
            str(checkpoint),
            str(store),
            str(output),
            "--n",
            "18",
            "--diversity",
            "distance",
            "--balanced",
            "--coordinates",
            str(mato / "coordinates.csv"),
        ]
    )
    table = pd.read_csv(output, dtype={"sample_id": str})
    series = open_store(store)[0]
    assert len(table) == 18 and table["row"].is_unique
    assert (table["sample_id"].to_numpy() == np.asarray(series.sample_ids[:])[table["row"]]).all()
    assert table["uncertainty"].is_monotonic_decreasing or table["predicted"].nunique() > 1
    coordinates = pd.read_csv(mato / "coordinates.csv").set_index("sample_id").loc[table["sample_id"]]
    assert np.allclose(table[["longitude", "latitude"]].to_numpy(), coordinates.to_numpy())
    with fiona.open(output.with_suffix(".gpkg")) as layer:
        assert [f["properties"]["sample_id"] for f in layer] == list(table["sample_id"])
    spread = tmp_path / "spread.csv"
    cmap_main(
        [
            "suggest",
            str(checkpoint),
            str(store),
            str(spread),
            "--n",
            "10",
            "--space",
            "coordinates",
            "--diversity",
            "distance",
            "--min_distance",
            "0.5",
            "--coordinates",
            str(mato / "coordinates.csv"),
        ]
    )
    points = pd.read_csv(spread)[["longitude", "latitude"]].to_numpy()
    distances = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)) + np.eye(len(points)) * 99
    assert distances.min() >= 0.5  # no two suggestions within 0.5 degrees: not one field
    clustered = tmp_path / "clustered.csv"
    cmap_main(["suggest", str(checkpoint), str(store), str(clustered), "--n", "12", "--diversity", "clusters"])
    table = pd.read_csv(clustered)
    assert len(table) == 12 and table["row"].is_unique and table["uncertainty"].is_monotonic_decreasing
    gradients = tmp_path / "gradients.csv"
    cmap_main(["suggest", str(checkpoint), str(store), str(gradients), "--n", "12"])  # the default: gradients
    table = pd.read_csv(gradients)
    assert len(table) == 12 and table["row"].is_unique and (table["rank"] == np.arange(1, 13)).all()
    probabilities = table.filter(like="probability/").to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5) and table["row"].isin(np.arange(200)).all()
    assert digest(store) == before


def test_suggest_refuses_other_bands_and_too_many(mato, checkpoint, tmp_path, capsys):
    series, metadata = open_store(mato / "unlabelled")
    renamed = [f"b{k}" for k in range(6)]
    write_store(tmp_path / "other", series, renamed, metadata["class_names"], store_time_axis(metadata))
    message = one_line_error(capsys, ["suggest", str(checkpoint), str(tmp_path / "other"), str(tmp_path / "s.csv")])
    assert "band_names" in message and "b0" in message and "NDVI" in message
    message = one_line_error(
        capsys, ["suggest", str(checkpoint), str(mato / "unlabelled"), str(tmp_path / "s.csv"), "--n", "201"]
    )
    assert "--n 201" in message and "200 candidate" in message
    message = one_line_error(
        capsys, ["suggest", str(checkpoint), str(mato / "unlabelled"), str(tmp_path / "s.csv"), "--balanced"]
    )
    assert "--balanced" in message and "--diversity distance" in message
    message = one_line_error(
        capsys,
        ["suggest", str(checkpoint), str(mato / "unlabelled"), str(tmp_path / "s.csv"), "--space", "coordinates"],
    )
    assert "--space coordinates" in message and "gradients" in message
    for components in (["--components", "-1"], ["--components", "8", "--diversity", "clusters"]):
        message = one_line_error(capsys, ["suggest", str(checkpoint), str(mato / "unlabelled"), str(tmp_path / "s.csv"),
                                          *components])  # fmt: skip
        assert f"--components must be >= 0 and applies to --diversity gradients, got {components[1]}" in message
    gpkg = tmp_path / "next.gpkg"  # the CSV would replace the GeoPackage written under that name
    message = one_line_error(capsys, ["suggest", str(checkpoint), str(mato / "unlabelled"), str(gpkg)])
    assert "OUTPUT is the CSV table" in message and not gpkg.exists()
    message = one_line_error(capsys, ["audit", str(mato / "labelled"), str(gpkg)])
    assert "OUTPUT is the CSV table" in message and not gpkg.exists()
    assert not (tmp_path / "s.csv").exists()


def test_suggest_without_a_final_linear_layer_refuses_gradients_only(mato, checkpoint, tmp_path, capsys, monkeypatch):
    import torch

    import cmap.predictions

    load = cmap.predictions.load_classifier

    def wrapped_head(path):  # the same head, its last layer no longer an nn.Linear
        model = load(path)
        model.decoder.linear = torch.nn.Sequential(model.decoder.linear)
        return model

    monkeypatch.setattr(cmap.predictions, "load_classifier", wrapped_head)
    arguments = ["suggest", str(checkpoint), str(mato / "unlabelled"), str(tmp_path / "s.csv"), "--n", "5"]
    assert "no final linear layer" in one_line_error(capsys, arguments)
    cmap_main([*arguments, "--diversity", "clusters"])
    assert len(pd.read_csv(tmp_path / "s.csv")) == 5


def test_selection_keeps_its_distance_and_balance_and_relaxes_only_when_it_must():
    probabilities = np.array([[0.34, 0.33, 0.33], [0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.6, 0.4, 0.0]])
    entropy = uncertainty(probabilities, "entropy")
    assert entropy.argmax() == 0 and entropy.argmin() == 2
    assert uncertainty(probabilities, "margin")[1] == pytest.approx(1.0)
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    points = np.array([[0.0], [0.1], [5.0], [5.1], [10.0]])
    assert list(select(scores, 3, points, 1.0)) == [0, 2, 4]  # 1 and 3 too close to 0 and 2
    predicted = np.array([0, 0, 0, 1, 1])
    assert list(select(scores, 2, None, 0.0, predicted, 2)) == [0, 3]
    assert list(select(scores, 5, points, 100.0)) == [0, 1, 2, 3, 4]  # impossible distance: relaxed
    with pytest.raises(ValueError, match="only 5 candidates"):
        select(scores, 6)


def test_cluster_selection_takes_the_most_uncertain_of_each_group():
    points = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [20.0], [20.2], [20.1]])
    scores = np.array([0.2, 0.9, 0.5, 0.3, 0.4, 0.1, 0.8, 0.6])
    assert list(cluster_select(scores, 3, points)) == [1, 6, 4]  # one per group, the most uncertain first
    with pytest.warns(UserWarning, match="distinct clusters"):  # scikit-learn's ConvergenceWarning
        identical = cluster_select(scores, 8, np.zeros((8, 1)))
    assert sorted(identical) == list(range(8))  # one cluster: the rest fills in
    with pytest.raises(ValueError, match="only 8 candidates"):
        cluster_select(scores, 9, points)


def test_gradient_selection_is_k_means_plus_plus_in_the_explicit_gradient_embedding():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4) * 0.5, size=60)
    features = rng.normal(size=(60, 5))
    chosen = gradient_select(probabilities, features, 10, seed=3)
    # The same seeding on the (60, 4 x 5) outer products, built explicitly.
    a = probabilities.copy()
    a[np.arange(60), a.argmax(axis=1)] -= 1
    embedding = (a[:, :, None] * features[:, None, :]).reshape(60, -1)
    explicit, draw = [int(np.argmax((embedding**2).sum(axis=1)))], np.random.default_rng(3)
    nearest = ((embedding - embedding[explicit[0]]) ** 2).sum(axis=1)
    while len(explicit) < 10:
        explicit.append(int(draw.choice(60, p=nearest / nearest.sum())))
        nearest = np.minimum(nearest, ((embedding - embedding[explicit[-1]]) ** 2).sum(axis=1))
    assert list(chosen) == explicit and len(set(chosen)) == 10


def test_gradient_selection_never_takes_a_duplicate_of_a_chosen_series_while_others_are_left():
    features = np.repeat(np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), 5, axis=0)  # 3 groups of 5 duplicates
    probabilities = np.tile([[0.6, 0.4]], (15, 1))
    probabilities[10:] = [0.9, 0.1]  # the third group is surer: a smaller gradient, never the first
    for seed in range(5):
        chosen = gradient_select(probabilities, features, 3, seed)
        assert chosen[0] < 10 and sorted(chosen // 5) == [0, 1, 2]  # one of each group
    assert sorted(gradient_select(probabilities, features, 15)) == list(range(15))  # duplicates fill in, once each
    with pytest.raises(ValueError, match="only 15 candidates"):
        gradient_select(probabilities, features, 16)


def test_suggest_counts_gradients_in_64_components_by_default_and_only_gradients():
    from cmap.labelling.suggest import parse

    positional = ["last.ckpt", "store", "next.csv"]
    assert parse(positional, "cmap suggest").components == 64
    assert parse([*positional, "--components", "0"], "cmap suggest").components == 0
    assert parse([*positional, "--diversity", "clusters"], "cmap suggest").components == 0


def test_gradient_selection_in_principal_components_is_selection_on_the_projected_features():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(3), size=80)
    features = np.abs(rng.normal(size=(80, 12)))  # non-negative, as after an activation: centring counts too
    projected = PCA(4, random_state=0).fit_transform(features)
    reduced = gradient_select(probabilities, features, 9, seed=2, components=4)
    assert list(reduced) == list(gradient_select(probabilities, projected, 9, seed=2))
    assert list(reduced) != list(gradient_select(probabilities, features, 9, seed=2))  # the reduction counts
    # As many components as features, or more: the features as they are.
    assert list(gradient_select(probabilities, features, 9, seed=2, components=12)) == list(
        gradient_select(probabilities, features, 9, seed=2)
    )


def test_som_flags_the_labels_that_differ_from_their_neighbourhood():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 5.0]])
    labels = np.repeat([0, 1, 2], 60)
    points = centres[labels] + rng.normal(0, 0.3, (len(labels), 2))
    noisy = labels.copy()
    flipped = np.array([3, 70, 150])
    noisy[flipped] = (labels[flipped] + 1) % 3
    flagged, shares, own = som_issues(points, noisy, 3)
    found = np.intersect1d(flipped, flagged)
    assert len(found) >= 2 and len(found) / len(flagged) >= 2 / 3  # a flip alone on its neuron may escape
    assert (shares[found].argmax(axis=1) == labels[found]).all()  # the suggestion: the true label
    assert np.allclose(shares.sum(axis=1), 1) and np.allclose(own.sum(axis=1), 1)
