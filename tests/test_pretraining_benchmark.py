"""benchmarks/pretraining.py (issue 18): the budget rule, the label draws, pseudo-labels, and one
pretrain -> fine-tune -> self-train pass on a tiny synthetic area."""

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import pretraining  # noqa: E402

from cmap.data.series import PixelSeries  # noqa: E402

NUM_CLASSES, PER_CLASS, DATES, BANDS = 3, 12, 8, 2


def script_options(options: str) -> argparse.Namespace:
    """The script's options, its defaults but for ``options``: a test sees every option it adds."""
    return pretraining.argument_parser().parse_args(shlex.split(options))


@pytest.fixture
def area() -> pretraining.Area:
    """36 series of 3 classes (a class is a level on every date, plus noise): 24 training, 12 test."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
    values = (labels[:, None, None] + 0.3 * rng.standard_normal((len(labels), DATES, BANDS))).astype(np.float32)
    days = np.broadcast_to(np.arange(DATES) * 10, (len(labels), DATES)).copy()
    series = PixelSeries(values, days, labels, "synthetic")
    train_rows = np.flatnonzero(np.arange(len(labels)) % PER_CLASS < 8)
    test_rows = np.setdiff1d(np.arange(len(labels)), train_rows)
    class_names = [f"c{i}" for i in range(NUM_CLASSES)]
    contract = pretraining.contract_of(series, train_rows, ["b0", "b1"], class_names)
    return pretraining.Area("synthetic", ["b0", "b1"], class_names, series, [(train_rows, test_rows)], train_rows,
                            contract)  # fmt: skip


def test_budget_grows_with_the_label_count():
    assert pretraining.budget_steps(240, 32, 500, 20) == 500  # 8 steps per epoch: the step floor
    assert pretraining.budget_steps(2400, 32, 500, 20) == 1500  # 75 steps per epoch: 20 epochs
    assert pretraining.budget_steps(33, 32, 1, 3) == 6  # a last, partial batch is a step


def test_label_draws_are_per_class_from_the_training_rows_and_differ_by_draw(area):
    first, second = (pretraining.labelled_rows(area, 3, draw) for draw in (0, 1))
    train_rows, test_rows = area.split(0)
    for rows in (first, second):
        assert np.isin(rows, train_rows).all() and not np.isin(rows, test_rows).any()
        assert np.bincount(area.series.labels[rows]).tolist() == [3] * NUM_CLASSES
    assert not np.array_equal(first, second)


def test_pseudo_labels_are_the_most_confident_of_each_predicted_class(area):
    torch.manual_seed(0)
    model = pretraining.build_classifier(area, "tempcnn", 8)
    rows = np.arange(20, 36)
    chosen, predicted = pretraining.pseudo_labels(model, area, rows, per_class=2)
    model.eval()
    with torch.inference_mode():
        batch = pretraining.SeriesDataset(area.series, rows, area.contract).__getitems__(list(range(len(rows))))
        confidence, classes = model(batch["values"], batch["days"], batch["mask"]).softmax(-1).max(-1)
    assert np.isin(chosen, rows).all() and len(set(chosen.tolist())) == len(chosen)
    for label in range(NUM_CLASSES):
        members = rows[classes.numpy() == label]
        expected = members[np.argsort(-confidence.numpy()[classes.numpy() == label], kind="stable")[:2]]
        assert sorted(chosen[predicted == label].tolist()) == sorted(expected.tolist())
    assert (predicted == classes.numpy()[np.searchsorted(rows, chosen)]).all()


def test_pretrain_then_fine_tune_and_self_train(area, tmp_path):
    checkpoint = pretraining.pretrain(area, np.arange(len(area.series)), "tempcnn", 8, "random_dates", 1,
                                      tmp_path / "area.ckpt")  # fmt: skip
    content = torch.load(checkpoint, weights_only=False)
    assert content["global_step"] == 1 and any(key.startswith("encoder.blocks.") for key in content["state_dict"])
    args = script_options("--batch_size 8 --min_steps 30 --min_epochs 1 --band_noise 0 --freeze_fraction 0.25 "
                          "--pseudo_labels 2")  # fmt: skip
    accuracy = pretraining.finetune(area, 3, 0, "tempcnn", 8, checkpoint, args, self_training=True)
    assert accuracy > 0.8  # three well-separated classes


def test_consistency_arm_trains_on_the_area_without_reading_its_labels(area):
    args = script_options("--batch_size 8 --min_steps 30 --min_epochs 1 --band_noise 0 --freeze_fraction 0 --mu 2")
    loader = pretraining.unlabelled_loader(area, 9, args)
    batches = list(loader)
    assert len(batches) == 2 and "label" not in batches[0] and len(batches[0]["values"]) == 16  # 18 series: 16 + 2
    accuracy = pretraining.finetune(area, 3, 0, "tempcnn", 8, None, args, consistency=True)
    assert accuracy > 0.8  # three well-separated classes


def test_bottleneck_pretraining_initialises_the_flatten_head_too(area, tmp_path):
    checkpoint = pretraining.pretrain(area, np.arange(len(area.series)), "tempcnn", 8, "bottleneck", 1,
                                      tmp_path / "bottleneck.ckpt")  # fmt: skip
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    assert state["decoder.linear.weight"].shape == (DATES * BANDS, 256)  # every date's bands from the code
    model = pretraining.build_classifier(area, "tempcnn", 8)
    assert not torch.equal(model.decoder.dense.weight, state["decoder.dense.weight"])
    assert pretraining.load_head(model, checkpoint)
    assert torch.equal(model.decoder.dense.weight, state["decoder.dense.weight"])
    assert torch.equal(model.decoder.norm.running_var, state["decoder.norm.running_var"])
    assert model.decoder.linear.weight.shape == (NUM_CLASSES, 256)  # the class layer stays the classifier's
    per_date = pretraining.pretrain(area, np.arange(len(area.series)), "tempcnn", 8, "random_dates", 1,
                                    tmp_path / "per_date.ckpt")  # fmt: skip
    assert not pretraining.load_head(model, per_date)


def test_scores_resume_and_report(tmp_path):
    scores = tmp_path / "scores.jsonl"
    for draw, (scratch, pretrained, peer) in enumerate([(0.50, 0.56, 0.52), (0.52, 0.58, 0.54)]):
        for arm, accuracy in (("scratch", scratch), ("area", pretrained), ("minirocket", peer)):
            pretraining.append_record(scores, {"labels_per_class": 10, "draw": draw, "arm": arm,
                                               "accuracy": accuracy, "seconds": 1.0})  # fmt: skip
    records = pretraining.read_records(scores)
    assert {pretraining.record_key(r) for r in records} >= {(10, 1, "area"), (10, 0, "minirocket")}
    table = pretraining.report(records, "settings")
    assert "| 10 | 0.5100 ± 0.0100 (2) | 0.5700 ± 0.0100 (2) | 0.5300 ± 0.0100 (2) | +6.0 | +4.0 |" in table


def test_every_pixel_of_a_stack_becomes_a_store_that_pretrains(tmp_path):
    """The user path of the mapping setting: scripts/area_pixels.py -> cmap extract -> AutoEncoder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import area_pixels

    from cmap.cli import main as cmap_main
    from cmap.data import SeriesStore, open_store
    from cmap.data.raster import RasterStack
    from cmap.ml.autoencoders import AutoEncoder
    from cmap.ml.decoders import BandReconstruction

    from .conftest import quiet_trainer, tiny_encoder
    from .test_map import SINOP_PATTERN, synthetic_stack

    rasters = synthetic_stack(tmp_path / "rasters", shape=(6, 5))  # EPSG:32631, 10 m pixels
    points = tmp_path / "pixels.csv"
    area_pixels.pixel_centres(next(rasters.iterdir())).to_csv(points, index=False, float_format="%.8f")
    cmap_main(["extract", str(rasters), str(points), str(tmp_path / "store"), "--pattern", SINOP_PATTERN])
    series, metadata = open_store(tmp_path / "store")
    cube = RasterStack.from_folder(rasters, SINOP_PATTERN).read()  # (dates, bands, rows, cols)
    # Every pixel once, row by row: the reprojection to longitude / latitude and back lands in the pixel.
    np.testing.assert_array_equal(np.asarray(series.values[:])[:, :, 0], cube[:, 0].reshape(len(cube), -1).T)
    assert metadata["class_names"] == ["area"]
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1)
    data = SeriesStore(str(tmp_path / "store"), batch_size=8)
    trainer.fit(AutoEncoder(tiny_encoder(1), BandReconstruction([16, 1])), data)
    assert trainer.global_step == 2


def test_probe_warps_keep_the_shape_and_mask_every_date_read_from_a_hidden_one():
    import few_labels_probes as probes

    values = torch.randn(4, 12, 2)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[:, 5] = False  # a cloud
    batch = {"values": values.masked_fill(~mask.unsqueeze(-1), 0.0), "days": torch.arange(12).expand(4, 12),
             "mask": mask}  # fmt: skip
    plain = {"date_dropout": 0.0, "band_noise": 0.0, "scale": 0.0}
    unwarped = probes.WarpedConsistency(**plain).strong(batch)
    assert torch.equal(unwarped["values"], batch["values"]) and torch.equal(unwarped["mask"], mask)
    torch.manual_seed(0)
    warped = probes.WarpedConsistency(**plain, magnitude=0.2, time_warp=0.3).strong(batch)
    assert warped["values"].shape == values.shape and warped["mask"].shape == mask.shape
    assert not torch.allclose(warped["values"], batch["values"])
    assert (warped["values"][~warped["mask"]] == 0).all()
    assert (~warped["mask"]).sum(1).ge(1).all()  # the hidden date, read by at least one position of each series
    assert warped["mask"][:, 0].all() and warped["mask"][:, -1].all()  # the warp keeps both ends in place


def test_probe_anchor_readout_is_a_distribution_that_follows_the_nearest_anchor():
    import few_labels_probes as probes

    similarity = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.3, 0.95]])
    anchor_labels = torch.tensor([2, 0, 1])
    sharp = probes.anchor_readout(similarity, anchor_labels, 3, temperature=0.01)
    assert torch.allclose(sharp.sum(-1), torch.ones(2))
    assert sharp.argmax(-1).tolist() == [2, 1]
    flat = probes.anchor_readout(similarity, anchor_labels, 3, temperature=100.0)
    assert torch.allclose(flat, torch.full((2, 3), 1 / 3), atol=0.01)


def test_probe_simmatch_trains_with_the_labelled_series_as_anchors(area):
    import few_labels_probes as probes

    args = script_options("--batch_size 8 --min_steps 20 --min_epochs 1 --band_noise 0 --mu 2")
    args.instance_weight, args.propagate, args.similarity_temperature = 1.0, True, 0.1
    rows = pretraining.labelled_rows(area, 3, 0)
    model = pretraining.train_classifier(area, rows, area.series.labels[rows], "tempcnn", 8, None, args,
                                         consistency=True, classifier_type=probes.simmatch_type(args))  # fmt: skip
    # 20 steps over 9 labelled series in batches of 8 and 1: 90 embeddings, under the queue's 256
    assert model.bank.shape == (90, 64) and np.bincount(model.bank_labels.numpy()).tolist() == [30] * NUM_CLASSES
    assert torch.allclose(model.bank.norm(dim=1), torch.ones(90))
    assert pretraining.overall_accuracy(model, area, area.split(0)[1]) > 0.8  # three well-separated classes
