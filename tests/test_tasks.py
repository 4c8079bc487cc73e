"""Classifier and AutoEncoder: training, LR schedule, input checks, learning on real data."""

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score

from cmap.data import SeriesStore, UCRCrop, write_store
from cmap.data.perturbations import RandomDates
from cmap.data.series import PixelSeries
from cmap.ml.autoencoders import AutoEncoder
from cmap.ml.decoders import BandReconstruction
from cmap.ml.metrics import ClassScores

from .conftest import (
    CLASSES,
    LearningRates,
    quiet_trainer,
    synthetic_sits,
    tiny_classifier,
    tiny_encoder,
    tiny_encoder_config,
)


def test_one_cycle_schedule_runs_from_min_to_max_and_back():
    model = tiny_classifier(3, min_lr=1e-4, max_lr=1e-2, warmup_fraction=0.25)
    rates = LearningRates()
    quiet_trainer(max_steps=20, limit_val_batches=0, callbacks=[rates]).fit(model, synthetic_sits())
    assert len(rates.rates) == 20
    assert rates.rates[0] == pytest.approx(1e-4)
    assert max(rates.rates) == pytest.approx(1e-2, rel=0.05) and rates.rates.index(max(rates.rates)) == 4
    assert rates.rates[-1] == pytest.approx(1e-4, rel=0.1)


@pytest.mark.parametrize("steps, warmup_fraction", [(2, 0.1), (10, 0.1), (10, 0.0), (10, 1.0)])
def test_one_cycle_schedule_survives_short_runs_and_extreme_warmups(steps, warmup_fraction):
    model = tiny_classifier(3, min_lr=1e-4, max_lr=1e-2, warmup_fraction=warmup_fraction)
    rates = LearningRates()
    quiet_trainer(max_steps=steps, limit_val_batches=0, callbacks=[rates]).fit(model, synthetic_sits())
    assert len(rates.rates) == steps and rates.rates[0] == pytest.approx(1e-4)
    assert max(rates.rates) > 2e-3 or steps == 2  # two steps: the peak falls between them


@pytest.mark.parametrize("exchanger", [False, True], ids=["transformer", "exchanger"])
def test_classifier_trains_and_predicts(exchanger):
    model = tiny_classifier(3, tiny_encoder_config(exchanger=exchanger), max_lr=1e-3)
    data = synthetic_sits()
    fit = quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    before = [p.detach().clone() for p in model.parameters()]
    fit.fit(model, data)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert model.class_names == CLASSES and model.input_contract.class_names == tuple(CLASSES)
    predictions = fit.predict(model, datamodule=data)
    assert predictions[0]["probabilities"].shape == (16, 3)
    torch.testing.assert_close(predictions[0]["probabilities"].sum(-1), torch.ones(16))
    assert torch.equal(predictions[0]["prediction"], predictions[0]["probabilities"].argmax(-1))


def test_unknown_class_weight_name_fails_at_setup():
    model = tiny_classifier(3, classes_weights={"other": 1, "mais": 1, "rape": 2})
    with pytest.raises(ValueError, match=r"unknown class names \['rape'\].*no weight for classes \['colza'\]"):
        quiet_trainer(fast_dev_run=True).fit(model, synthetic_sits())


def test_band_count_mismatch_is_explained():
    model = tiny_classifier(3, tiny_encoder_config(9))
    with pytest.raises(ValueError, match="expects 9 bands.*SyntheticSITS provides 4"):
        quiet_trainer(fast_dev_run=True).fit(model, synthetic_sits(4))


def test_class_count_mismatch_is_explained():
    model = tiny_classifier(7)
    with pytest.raises(ValueError, match="num_classes=7 outputs but the data has 3 classes"):
        quiet_trainer(fast_dev_run=True).fit(model, synthetic_sits())


def test_classes_the_evaluated_series_lack_neither_count_in_the_macro_f1_nor_log_zeros():
    """Five classes, test series of three: 'colza' neither true nor predicted logs nothing and is out
    of the macro F1; 'riz' predicted without true series and 'soja' true but never predicted have F1 0
    and count, as in scikit-learn; a per-class score that is 0/0 is not logged (recall of 'riz',
    precision of 'soja')."""
    names = ["other", "mais", "colza", "soja", "riz"]
    model = tiny_classifier(5, class_names=names)
    target = torch.tensor([0, 0, 1, 1, 1, 3, 3])
    predicted = torch.tensor([0, 1, 1, 1, 4, 0, 0])
    model.test_metrics.update(torch.nn.functional.one_hot(predicted, 5).float(), target)
    logged = {key: float(value) for key, value in model.test_metrics.compute().items()}

    def per_class(score):
        return {key.rsplit("/", 1)[1]: value for key, value in logged.items() if key.startswith(f"test/{score}/")}

    assert per_class("f1").keys() == {"other", "mais", "soja", "riz"}
    assert per_class("recall").keys() == {"other", "mais", "soja"}
    assert per_class("precision").keys() == {"other", "mais", "riz"}
    assert per_class("f1")["soja"] == per_class("f1")["riz"] == 0.0
    assert logged["test/macro_f1"] == pytest.approx(f1_score(target, predicted, average="macro"))
    assert logged["test/macro_f1"] == pytest.approx(np.mean(list(per_class("f1").values())))
    for score, sklearn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        expected = sklearn(target, predicted, labels=range(5), average=None, zero_division=np.nan)
        assert per_class(score) == {
            names[k]: pytest.approx(value) for k, value in enumerate(expected) if not np.isnan(value)
        }, score


def test_class_scores_match_scikit_learn_on_random_draws():
    """ClassScores against scikit-learn (zero_division NaN) on draws that leave classes out, in
    updates of several batches; the macro F1 also against scikit-learn's default (classes seen)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 8))
        present = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
        target, predicted = rng.choice(present, 40), rng.choice(present, 40)
        for score, sklearn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
            per_class, macro = ClassScores(k, score), ClassScores(k, score, average="macro")
            for part in np.array_split(np.arange(40), 3):
                per_class.update(torch.from_numpy(predicted[part]), torch.from_numpy(target[part]))
                macro.update(torch.from_numpy(predicted[part]), torch.from_numpy(target[part]))
            kwargs = {"labels": range(k), "zero_division": np.nan}
            expected = sklearn(target, predicted, average=None, **kwargs)
            np.testing.assert_allclose(per_class.compute().numpy(), expected, rtol=1e-6)
            assert float(macro.compute()) == pytest.approx(sklearn(target, predicted, average="macro", **kwargs))
        assert float(macro.compute()) == pytest.approx(f1_score(target, predicted, average="macro"))
    with pytest.raises(ValueError, match="score must be one of"):
        ClassScores(3, "accuracy")


def test_testing_on_a_store_without_a_class_logs_no_score_of_it(tmp_path):
    """cmap test's figures on a test store holding two of the three training classes: no recall and
    no zero F1 of the third unless predicted, the macro F1 scikit-learn's on the predictions."""
    rng = np.random.default_rng(0)
    for name, labels, classes in (("train", np.arange(60) % 3, CLASSES), ("test", np.arange(20) % 2, CLASSES[:2])):
        series = PixelSeries(rng.standard_normal((len(labels), 5, 4)).astype(np.float32),
                             np.tile(np.arange(5) * 10, (len(labels), 1)), labels, "synthetic")  # fmt: skip
        write_store(tmp_path / name, series, ["b1", "b2", "b3", "b4"], classes)
    data = SeriesStore(str(tmp_path / "train"), test_path=str(tmp_path / "test"), batch_size=8)
    model = tiny_classifier(3)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, datamodule=data)
    logged = trainer.test(model, datamodule=data, verbose=False)[0]
    predicted = torch.cat([out["prediction"] for out in trainer.predict(model, datamodule=data)]).numpy()
    target = data.datasets["test"].labels
    assert target.tolist() == (np.arange(20) % 2).tolist()
    absent = CLASSES[2]
    assert f"test/recall/{absent}" not in logged and f"test/recall/{CLASSES[0]}" in logged
    assert (f"test/f1/{absent}" in logged) == (predicted == 2).any()
    assert logged["test/macro_f1"] == pytest.approx(f1_score(target, predicted, average="macro"), abs=1e-6)


def test_autoencoder_reduces_reconstruction_error():
    model = AutoEncoder(tiny_encoder(d_model=32), BandReconstruction([32, 4]), RandomDates(0.3), max_lr=3e-3)
    data = synthetic_sits()
    fit = quiet_trainer(max_epochs=20, limit_val_batches=2)
    first = fit.validate(model, data, verbose=False)[0]["val/loss"]
    fit.fit(model, data)
    assert fit.callback_metrics["val/loss"] < 0.7 * first


@pytest.mark.slow
def test_small_transformer_learns_ucr_crop(ucr_root):
    """Real data: two epochs of a tiny model are far above chance (1/24) on held-out series."""
    L.seed_everything(0)
    model = tiny_classifier(
        24, tiny_encoder_config(1, d_model=32, dropout=0.0), min_lr=1e-4, max_lr=3e-3, focal_gamma=0.0
    )
    quiet_trainer(max_epochs=2, limit_val_batches=0).fit(model, UCRCrop(root=str(ucr_root), batch_size=64))
    accuracy = quiet_trainer().validate(model, UCRCrop(root=str(ucr_root), batch_size=256), verbose=False)[0]
    assert accuracy["val/overall_accuracy"] > 0.35
