"""Pretraining corruptions: targets are valid elements only, nothing leaks, padding never counts."""

import pytest
import torch

from cmap.data.perturbations import BandGroups, ContiguousDates, NoiseContamination, RandomDates
from cmap.ml.autoencoders import AutoEncoder
from cmap.ml.decoders import BandReconstruction

from .conftest import padded_batch, tiny_encoder

STRATEGIES = [RandomDates(0.5), ContiguousDates(0.4), BandGroups([[0, 1], [2, 3]], 0.5), NoiseContamination(0.3)]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: type(s).__name__)
def test_targets_are_valid_elements_and_something_stays_visible(strategy):
    values, mask = padded_batch()
    corruption = strategy(values, mask)
    assert corruption.target.any()
    assert not (corruption.target & ~mask.unsqueeze(-1)).any()  # never padding or clouds
    assert not (corruption.visible & ~mask).any()
    assert corruption.visible.any(dim=1).all()


@pytest.mark.parametrize("strategy", STRATEGIES[:3], ids=lambda s: type(s).__name__)
def test_hidden_values_do_not_reach_the_encoder(strategy):
    values, mask = padded_batch()
    corruption = strategy(values, mask)
    assert (corruption.values[corruption.target] == 0).all()


def test_contiguous_dates_hide_one_run_of_valid_dates():
    values, mask = padded_batch()
    corruption = ContiguousDates(0.5)(values, mask)
    for row_mask, row_target in zip(mask, corruption.target[..., 0], strict=True):
        ranks = torch.nonzero(row_target[row_mask]).squeeze(1)
        assert len(ranks) == round(0.5 * int(row_mask.sum()))
        assert torch.equal(ranks, torch.arange(ranks[0], ranks[0] + len(ranks)))


def test_noise_contamination_keeps_every_date_visible():
    values, mask = padded_batch()
    corruption = NoiseContamination(0.3)(values, mask)
    assert torch.equal(corruption.visible, mask)
    changed = (corruption.values != values).any(dim=-1)
    assert torch.equal(changed, corruption.target[..., 0])


def test_band_groups_need_two_groups():
    with pytest.raises(ValueError, match="at least 2 band groups"):
        BandGroups()(torch.randn(2, 3, 1), torch.ones(2, 3, dtype=torch.bool))


@torch.no_grad()
def test_loss_counts_targets_only_never_padding():
    model = AutoEncoder(tiny_encoder(), BandReconstruction([16, 4])).eval()
    values, mask = padded_batch(b=4)
    days = torch.arange(10).repeat(4, 1) * 10
    corruption = RandomDates(0.5)(values, mask)
    loss, reconstruction = model.reconstruction_loss({"values": values, "days": days, "mask": mask}, corruption)
    expected = (reconstruction - values)[corruption.target].pow(2).mean()
    torch.testing.assert_close(loss, expected)
    garbage = values.clone()
    garbage[~mask] = 1e3  # padding and clouds: neither input nor target
    corrupted = RandomDates(0.5)
    torch.manual_seed(1)
    first = model.reconstruction_loss({"values": values, "days": days, "mask": mask}, corrupted(values, mask))[0]
    torch.manual_seed(1)
    second = model.reconstruction_loss({"values": garbage, "days": days, "mask": mask}, corrupted(garbage, mask))[0]
    torch.testing.assert_close(first, second)
