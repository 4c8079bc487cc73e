import pytest
import torch
import torch.nn.functional as F

from cmap.ml.losses import FocalLoss, resolve_class_weights


def test_focal_loss_with_gamma_zero_is_weighted_cross_entropy():
    logits, target = torch.randn(32, 5), torch.randint(0, 5, (32,))
    alpha = torch.tensor([0.5, 1.0, 2.0, 3.0, 13.0])
    torch.testing.assert_close(FocalLoss(0.0, alpha)(logits, target), F.cross_entropy(logits, target, weight=alpha))
    torch.testing.assert_close(FocalLoss(0.0)(logits, target), F.cross_entropy(logits, target))
    torch.testing.assert_close(
        FocalLoss(0.0, alpha, label_smoothing=0.1)(logits, target),
        F.cross_entropy(logits, target, weight=alpha, label_smoothing=0.1),
    )


def test_focal_loss_down_weights_easy_samples():
    target = torch.tensor([0, 1])
    easy = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    ce = F.cross_entropy(easy, target)
    focal = FocalLoss(2.0)(easy, target)
    p = torch.softmax(torch.tensor([5.0, 0.0]), 0)[0]
    torch.testing.assert_close(focal, (1 - p) ** 2 * ce)


def test_class_weights_resolve_by_name_in_data_order():
    weights = resolve_class_weights({"mais": 0.66, "other": 0.52, "ble_dur": 13.0}, ["other", "ble_dur", "mais"])
    torch.testing.assert_close(weights, torch.tensor([0.52, 13.0, 0.66]))


def test_class_weights_unknown_and_missing_names_are_named():
    with pytest.raises(ValueError, match=r"unknown class names \['maize'\].*no weight for classes \['mais'\]"):
        resolve_class_weights({"other": 1.0, "maize": 2.0}, ["other", "mais"])
