"""Contrastive pretraining: views never reveal padding, the loss finds twins, the encoder transfers."""

import pytest
import torch

from cmap.data.perturbations import SeriesViews
from cmap.ml.contrastive import ContrastivePretraining, nt_xent
from cmap.ml.decoders import ProjectionHead

from .conftest import padded_batch, quiet_trainer, synthetic_sits, tiny_classifier, tiny_encoder, tiny_encoder_config


def test_views_keep_a_run_of_valid_dates_and_never_reveal_padding():
    values, mask = padded_batch(b=256)
    torch.manual_seed(0)
    view_values, visible = SeriesViews(min_crop=0.5, date_dropout=0.0, band_noise=0.0)(values, mask)
    assert not (visible & ~mask).any()
    assert visible.any(dim=1).all()
    assert (view_values[~visible] == 0).all() and torch.equal(view_values[visible], values[visible])
    # No dropout: the visible dates are one run of consecutive valid dates, at least half of them.
    rank = mask.cumsum(dim=1) - 1
    for row in range(len(mask)):
        ranks = rank[row][visible[row]]
        assert torch.equal(ranks, torch.arange(int(ranks[0]), int(ranks[0]) + len(ranks)))
        assert len(ranks) >= round(0.5 * int(mask[row].sum()))
    assert (visible.sum(dim=1) < mask.sum(dim=1)).any()  # some series are cropped


def test_views_drop_dates_and_add_noise_to_visible_values_only():
    values, mask = padded_batch(b=256)
    view_values, visible = SeriesViews(min_crop=1.0, date_dropout=0.5, band_noise=0.1)(values, mask)
    assert visible.any(dim=1).all()
    assert 0.35 < visible.sum() / mask.sum() < 0.65
    difference = (view_values - values)[visible]
    assert 0.05 < difference.std() < 0.15


@pytest.mark.parametrize("arguments", [(0.0, 0.2, 0.0), (0.5, 1.0, 0.0), (0.5, 0.2, -1.0)])
def test_views_reject_bad_arguments(arguments):
    with pytest.raises(ValueError, match="SeriesViews needs"):
        SeriesViews(*arguments)


def test_nt_xent_is_low_for_matching_views_and_finds_their_twins():
    torch.manual_seed(0)
    first = torch.randn(64, 16)
    matched, found = nt_xent(first, first + 0.01 * torch.randn(64, 16), temperature=0.1)
    shuffled, _ = nt_xent(first, torch.randn(64, 16), temperature=0.1)
    assert found.all() and len(found) == 128
    assert matched < 0.1 < torch.log(torch.tensor(127.0)) < shuffled


def test_contrastive_pretraining_learns_and_its_encoder_fine_tunes(tmp_path):
    torch.manual_seed(0)
    model = ContrastivePretraining(tiny_encoder(d_model=32), ProjectionHead([32, 32, 16]), max_lr=3e-3)
    data = synthetic_sits()
    fit = quiet_trainer(max_epochs=10, limit_val_batches=2, default_root_dir=tmp_path)
    first = fit.validate(model, data, verbose=False)[0]
    fit.fit(model, data)
    assert fit.callback_metrics["val/loss"] < 0.8 * first["val/loss"]
    assert fit.callback_metrics["val/twin_accuracy"] > first["val/twin_accuracy"]
    checkpoint = tmp_path / "contrastive.ckpt"
    fit.save_checkpoint(checkpoint)
    classifier = tiny_classifier(3, tiny_encoder_config(d_model=32), init_encoder_from=str(checkpoint))
    quiet_trainer(max_steps=1, limit_val_batches=0).fit(classifier, synthetic_sits())
    # Loaded at setup, then one step at the starting (minimum) LR: still the pretrained weights.
    for name, weight in model.encoder.state_dict().items():
        torch.testing.assert_close(classifier.encoder.state_dict()[name], weight, atol=1e-3, rtol=0)


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ContrastivePretraining(tiny_encoder(), ProjectionHead([16, 8]), temperature=0.0)
