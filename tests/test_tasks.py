"""Classifier and AutoEncoder: training, LR schedule, input checks, learning on real data."""

import lightning as L
import pytest
import torch

from cmap.data import UCRCrop
from cmap.data.perturbations import RandomDates
from cmap.ml.autoencoders import AutoEncoder
from cmap.ml.decoders import BandReconstruction

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
