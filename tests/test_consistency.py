"""Consistency training on unlabelled series (issue 18): the views, the loss, the EMA teacher, the
store's unlabelled batches, and a Classifier trained with them (Python and ``cmap fit``)."""

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from cmap.data import SeriesStore, write_store
from cmap.data.convert import read_mato_grosso
from cmap.ml.consistency import Consistency, Teacher, concat_batches

from .conftest import (
    SHARED_DATA,
    padded_batch,
    quiet_trainer,
    require,
    tiny_classifier,
    tiny_classifier_config,
    tiny_encoder_config,
)

BANDS = 6  # Mato Grosso's


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory):
    """Mato Grosso as a labelled store, and its inputs again as an unlabelled store (no labels.npy)."""
    converted = read_mato_grosso(require(SHARED_DATA / "sits_matogrosso_mod13q1") / "br_mt_1_8K_9classes_6bands.rda")
    folder = tmp_path_factory.mktemp("stores")
    write_store(folder / "labelled", converted.series, converted.band_names, converted.class_names)
    inputs = dataclasses.replace(converted.series, labels=None)
    write_store(folder / "area", inputs, converted.band_names, [])
    return folder / "labelled", folder / "area", converted.class_names


def few_labels(labelled, area, **options) -> SeriesStore:
    return SeriesStore(str(labelled), fold=0, labels_per_class=4, batch_size=8, unlabelled=str(area), **options)


def test_views_keep_invalid_dates_hidden_and_the_loss_counts_confident_pseudo_labels():
    values, mask = padded_batch(64)
    values = values.masked_fill(~mask.unsqueeze(-1), 0.0)
    batch = {"values": values, "days": torch.arange(10).expand(64, 10) * 16, "mask": mask}
    consistency = Consistency(threshold=0.6, min_crop=0.5, date_dropout=0.3)
    weak, strong = consistency.weak(batch), consistency.strong(batch)
    assert torch.equal(weak["mask"], mask) and not torch.equal(weak["values"], values)
    assert torch.equal(weak["values"][~mask], values[~mask])  # no noise on padding or clouds
    assert not (strong["mask"] & ~mask).any() and strong["mask"].any(dim=1).all()
    assert (strong["values"][~strong["mask"]] == 0).all() and strong["mask"].sum() < mask.sum()

    confident = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # p = 0.99 and 1/3
    student = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 9.0]], requires_grad=True)
    loss, kept = consistency.loss(confident, student)
    expected = torch.nn.functional.cross_entropy(student[:1], torch.tensor([0])) / 2  # the mean over both
    assert kept.item() == 0.5 and torch.allclose(loss, expected)
    loss.backward()
    assert student.grad[1].abs().sum() == 0  # the unconfident series teaches nothing
    with pytest.raises(ValueError, match="threshold"):
        Consistency(threshold=1.0)


def test_distribution_alignment_takes_confidence_from_the_class_the_model_always_predicts():
    always_first = torch.tensor([[3.0, 0.0, 0.0]]).repeat(8, 1)  # p = 0.91 for class 0, every series
    plain, aligned = Consistency(threshold=0.6), Consistency(threshold=0.6, distribution_alignment=True)
    assert plain.loss(always_first, torch.zeros(8, 3))[1].item() == 1.0
    assert aligned.loss(always_first, torch.zeros(8, 3))[1].item() == 0.0  # divided by its mean: uniform
    mixed = torch.tensor([[3.0, 0.0, 0.0]] * 6 + [[0.0, 3.0, 0.0]] * 2)
    _, kept = aligned.loss(mixed, torch.zeros(8, 3))  # class 1, rarer than class 0 so far, keeps its confidence
    assert 0 < kept.item() < 1


def test_adaptive_thresholds_start_low_and_follow_the_confidence_per_class():
    adaptive = Consistency(adaptive_threshold=True, adaptive_momentum=0.5)
    unsure = torch.zeros(4, 4)  # p = 1/4 everywhere: the first level is 1/4, reached
    assert adaptive.loss(unsure, torch.zeros(4, 4))[1].item() == 1.0
    first_confident = torch.tensor([[4.0, 0.0, 0.0, 0.0]]).repeat(8, 1)
    for _ in range(10):  # the level rises towards class 0's confidence (0.95), other classes' stay low
        adaptive.loss(first_confident, torch.zeros(8, 4))
    thresholds = adaptive.adaptive_thresholds(torch.softmax(first_confident, dim=-1))
    assert 0.9 < thresholds[0] < 0.95 and (thresholds[1:] < 0.1).all()
    second_mild = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # p = 0.48 for class 1: over its low threshold
    assert adaptive.loss(second_mild, torch.zeros(1, 4))[1].item() == 1.0
    assert Consistency(threshold=0.6).loss(second_mild, torch.zeros(1, 4))[1].item() == 0.0


def test_soft_targets_are_the_sharpened_weak_probabilities():
    weak = torch.tensor([[2.0, 1.0, 0.0]])
    student = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    loss, _ = Consistency(threshold=0.5, temperature=0.5).loss(weak, student)
    sharpened = torch.softmax(weak * 2, dim=-1)  # p ** (1 / 0.5), renormalised
    assert torch.allclose(loss, -(sharpened * torch.log_softmax(student, dim=-1)).sum())
    hard, _ = Consistency(threshold=0.5).loss(weak, student)
    assert not torch.allclose(loss, hard)


def test_the_shifted_view_moves_values_and_masks_what_comes_in():
    values, mask = torch.arange(1.0, 13.0).reshape(2, 6, 1), torch.ones(2, 6, dtype=torch.bool)
    mask[1, 5] = False  # a cloudy date stays hidden wherever it goes
    batch = {"values": values, "days": torch.arange(6).expand(2, 6), "mask": mask}
    moved = 0
    for _ in range(20):
        view = Consistency(max_shift=2, date_dropout=0.0, band_noise=0.0, scale=0.0).strong(batch)
        moved += not torch.equal(view["values"], values.masked_fill(~mask.unsqueeze(-1), 0.0))
        for series in range(2):
            visible = view["values"][series, view["mask"][series], 0]
            assert len(visible) >= mask[series].sum() - 2 and (visible.diff() == 1).all()  # a run, in order
            assert set(visible.tolist()) <= set(values[series, mask[series], 0].tolist())
            assert (view["values"][series, ~view["mask"][series]] == 0).all()
        assert torch.equal(view["days"], batch["days"])  # the season moves, the calendar does not
    assert moved >= 10  # 24 in 25 draws of two series move at least one


def test_concatenated_batches_pad_the_shorter_with_masked_dates():
    def batch(size, dates):
        return {"values": torch.ones(size, dates, 1), "days": torch.ones(size, dates).long(),
                "mask": torch.ones(size, dates).bool()}  # fmt: skip

    both = concat_batches(batch(2, 3), batch(4, 5))
    assert both["values"].shape == (6, 5, 1) and both["mask"][:2, 3:].sum() == 0 and both["mask"][2:].all()
    assert both["values"][:2, 3:].sum() == 0 and both["days"][:2, 3:].sum() == 0


def test_the_teacher_is_a_moving_average_of_the_model():
    model = tiny_classifier(num_classes=3)
    teacher = Teacher(model.encoder, model.decoder, decay=0.9)
    start = teacher.modules["decoder"].state_dict()
    first = {k: v.clone() for k, v in start.items()}
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.add_(1.0)
    teacher.update(model.encoder, model.decoder)
    for name, value in teacher.modules["decoder"].state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, first[name] + 0.1 * (model.decoder.state_dict()[name] - first[name]))
    assert not any(p.requires_grad for p in teacher.modules.parameters())


def test_the_store_gives_unlabelled_batches_alongside_the_labelled_ones(stores):
    labelled, area, class_names = stores
    data = few_labels(labelled, area, unlabelled_ratio=3)
    data.setup("fit")
    loader = data.train_dataloader()
    steps = [step for step, _, _ in loader]  # a CombinedLoader yields (batch, batch index, loader index)
    assert len(steps) == len(data.train_dataloader().flattened[0])  # one unlabelled batch per labelled one
    for step in steps:
        assert set(step) == {"labelled", "unlabelled"} and "label" not in step["unlabelled"]
        assert len(step["unlabelled"]["values"]) == 3 * len(step["labelled"]["values"])
    assert data.datasets["unlabelled"].contract is data.input_contract  # normalised as the labelled series
    with pytest.raises(ValueError, match="bands"):
        SeriesStore(str(labelled), fold=0, unlabelled=str(wrong_bands(area.parent, class_names)))


def wrong_bands(folder, class_names):
    from cmap.data.datamodule import PixelSeries

    path = folder / "two_bands"
    if not path.exists():
        series = PixelSeries(np.zeros((4, 3, 2), np.float32), np.tile(np.arange(3) * 16, (4, 1)), None, "two bands")
        write_store(path, series, ["a", "b"], [])
    return path


def test_a_classifier_trains_on_labelled_and_unlabelled_series_and_needs_them(stores):
    labelled, area, class_names = stores
    encoder = tiny_encoder_config(BANDS, max_len=400, dim_feedforward=32)
    model = tiny_classifier(len(class_names), encoder, consistency=Consistency(threshold=0.0, teacher_decay=0.5))
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(max_steps=4, limit_val_batches=1)
    trainer.fit(model, few_labels(labelled, area))
    metrics = trainer.callback_metrics
    assert np.isfinite(metrics["train/loss"].item()) and metrics["train/pseudo_label_fraction"].item() == 1.0
    assert metrics["train/consistency_loss"].item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert "teacher" not in "".join(model.state_dict())  # the teacher is not saved with the model
    data = few_labels(labelled, area)
    data.setup("fit")
    step, _, _ = next(iter(data.train_dataloader()))
    step["unlabelled"]["days"][0, 0] = 10_000  # beyond the date encoding: checked on the CPU, as a plain batch
    with pytest.raises(ValueError, match="day offsets"):
        model.on_before_batch_transfer(step, 0)

    plain = SeriesStore(str(labelled), fold=0, labels_per_class=4, batch_size=8)
    with pytest.raises(ValueError, match="unlabelled"):
        quiet_trainer(max_steps=1, limit_val_batches=0).fit(
            tiny_classifier(len(class_names), encoder, consistency=Consistency()), plain
        )
    with pytest.raises(ValueError, match="mixing and consistency"):
        from cmap.data.perturbations import SeriesMixing

        tiny_classifier(len(class_names), encoder, consistency=Consistency(), mixing=SeriesMixing())


def test_cmap_fit_reads_consistency_and_the_unlabelled_store_from_a_config(stores, tmp_path):
    from cmap.cli import main as cmap_main

    labelled, area, class_names = stores
    model = tiny_classifier_config(
        len(class_names), tiny_encoder_config(BANDS, max_len=400, dim_feedforward=32), max_lr=0.001,
        consistency={"threshold": 0.5, "date_dropout": 0.1},
    )  # fmt: skip
    data = {
        "class_path": "cmap.data.SeriesStore",
        "init_args": {"path": str(labelled), "fold": 0, "labels_per_class": 4, "batch_size": 8,
                      "unlabelled": str(area), "unlabelled_ratio": 2},
    }  # fmt: skip
    config = {
        "trainer": {"max_steps": 2, "default_root_dir": str(tmp_path), "enable_progress_bar": False,
                    "limit_val_batches": 1},
        "model": model, "data": data,
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmap_main(["fit", "--config", str(tmp_path / "config.yaml")])
    checkpoint = next(tmp_path.glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    # the config's block, saved as given; the run's steps used it as a Consistency (a dict has no views)
    assert hparams["consistency"]["threshold"] == 0.5 and hparams["consistency"]["date_dropout"] == 0.1


def test_the_few_labels_config_trains_on_ucr_crop_stores(ucr_root, tmp_path):
    """configs/few_labels_ucr_crop.yaml as written, on small stores of UCR Crop's training and test series."""
    from cmap.cli import CMapCLI
    from cmap.data.convert import read_ucr

    from .conftest import CONFIGS

    stores = {}
    for split, size in (("TRAIN", 24 * 20), ("TEST", 300)):
        converted = read_ucr(ucr_root / f"Crop_{split}.tsv")
        rows = np.random.default_rng(0).choice(len(converted.series), size, replace=False)
        stores[split] = tmp_path / split
        write_store(stores[split], converted.series.subset(np.sort(rows)), converted.band_names, converted.class_names)
    cli = CMapCLI(
        args=["fit", "--config", str(CONFIGS / "few_labels_ucr_crop.yaml"), "--trainer.fast_dev_run", "2",
              "--data.init_args.path", str(stores["TRAIN"]), "--data.init_args.test_path", str(stores["TEST"]),
              "--data.init_args.unlabelled", str(stores["TEST"]), "--trainer.default_root_dir", str(tmp_path),
              "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    assert cli.trainer.global_step == 2
    assert cli.model.consistency.threshold == 0.6 and cli.datamodule.hparams.labels_per_class == 10
    assert "train/pseudo_label_fraction" in cli.trainer.callback_metrics
