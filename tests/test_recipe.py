"""The training recipe's parts: series mixing (mixup, CutMix), day shift, class-balanced sampling."""

import numpy as np
import pytest
import torch

from cmap.data.perturbations import Augmentation, SeriesMixing
from cmap.ml.losses import FocalLoss

from .conftest import padded_batch, quiet_trainer, synthetic_sits, tiny_classifier


def batch_of(b: int = 32) -> dict[str, torch.Tensor]:
    values, mask = padded_batch(b)
    values = values.masked_fill(~mask.unsqueeze(-1), 0.0)  # the batch contract: masked values are 0
    days = torch.arange(10).expand(b, 10) * 16
    return {"values": values, "days": days, "mask": mask, "label": torch.arange(b) % 4}


def test_mixup_mixes_valid_dates_and_keeps_the_other_series_where_only_it_is_valid():
    torch.manual_seed(0)
    batch = batch_of()
    mixed, partner, lam = SeriesMixing("mixup", alpha=0.4)(batch)
    values, mask = batch["values"], batch["mask"]
    assert torch.equal(mixed["mask"], mask | mask[partner])
    assert ((lam > 0) & (lam < 1)).all()
    both = mask & mask[partner]
    weight = lam.view(-1, 1, 1)
    expected = weight * values + (1 - weight) * values[partner]
    assert torch.allclose(mixed["values"][both], expected[both])
    only_partner = ~mask & mask[partner]
    assert only_partner.any()  # clouds of date 2 meet clear partners
    assert torch.equal(mixed["values"][only_partner], values[partner][only_partner])
    assert (mixed["values"][~mixed["mask"]] == 0).all()
    assert torch.equal(mixed["days"], batch["days"])


def test_cutmix_takes_one_run_of_dates_from_the_partner_and_weights_by_its_length():
    torch.manual_seed(1)
    batch = batch_of()
    mixed, partner, lam = SeriesMixing("cutmix", alpha=1.0)(batch)
    from_partner = (mixed["values"] != batch["values"]).any(dim=-1)
    for row in range(len(lam)):
        taken = torch.nonzero(from_partner[row]).squeeze(1)
        if len(taken):  # one contiguous run (dates equal in both series could hide inside it)
            assert taken.max() - taken.min() + 1 <= round((1 - lam[row].item()) * 10)
        kept = round(lam[row].item() * 10)
        assert (~from_partner[row]).sum() >= kept
    assert ((lam >= 0) & (lam <= 1)).all()


def test_soft_targets_of_one_class_equal_the_class_index():
    logits = torch.randn(8, 5)
    target = torch.arange(8) % 5
    loss = FocalLoss(gamma=0.0, alpha=torch.rand(5) + 0.1, label_smoothing=0.1)
    one_hot = torch.nn.functional.one_hot(target, 5).float()
    assert torch.allclose(loss(logits, target), loss(logits, one_hot))


def test_day_shift_moves_each_series_by_one_number_of_days():
    torch.manual_seed(0)
    batch = batch_of()
    shifted = Augmentation(day_shift=10)(batch)
    shift = shifted["days"] - batch["days"]
    # Day 0 may be clamped; from the second date on, one shift per series in [-10, 10].
    assert (shift[:, 1:] == shift[:, 1:2]).all()
    assert shift.abs().max() <= 10 and shift.abs().max() > 0
    assert (shifted["days"] >= 0).all()
    with pytest.raises(ValueError, match="day_shift"):
        Augmentation(day_shift=-1)


def test_balanced_sampling_draws_classes_about_equally():
    from cmap.data import SyntheticSITS

    data = SyntheticSITS(
        class_names=["a", "b", "c"], num_bands=2, num_dates=6, num_train=600, batch_size=50, balanced_sampling=True
    )
    data.setup("fit")
    labels = data.datasets["train"].labels
    # Make the training split imbalanced: keep every "a", a fifth of the others.
    keep = np.flatnonzero((labels == 0) | (np.arange(len(labels)) % 5 == 0))
    data.datasets["train"].index = data.datasets["train"].index[keep]
    counts = np.bincount(data.datasets["train"].labels, minlength=3)
    assert counts[0] > 3 * counts[1]
    drawn = np.concatenate([batch["label"].numpy() for batch in data.train_dataloader()])
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.all(np.abs(shares - 1 / 3) < 0.08), shares


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_a_classifier_trains_with_mixing(mode):
    torch.manual_seed(0)
    data = synthetic_sits()
    model = tiny_classifier(num_classes=3, mixing=SeriesMixing(mode, alpha=0.4))
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(max_steps=4, limit_val_batches=1)
    trainer.fit(model, data)
    assert np.isfinite(trainer.callback_metrics["train/loss"].item())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
