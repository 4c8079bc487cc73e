"""TrainingBudget: batch size and epochs follow the training set's size (the default recipe's)."""

import pytest

from cmap.data import SyntheticSITS
from cmap.ml.budget import TrainingBudget

from .conftest import CLASSES, quiet_trainer, tiny_classifier, tiny_encoder_config


def fit_with_budget(num_train: int, budget: TrainingBudget, max_epochs: int = 2, max_steps: int = -1):
    """(batch size, epochs, optimizer steps) of a fit on ``num_train`` synthetic series."""
    data = SyntheticSITS(class_names=CLASSES, num_bands=2, num_dates=6, num_train=num_train, batch_size=128)
    model = tiny_classifier(len(CLASSES), tiny_encoder_config(2), max_lr=1e-3)
    trainer = quiet_trainer(max_epochs=max_epochs, max_steps=max_steps, callbacks=[budget], limit_val_batches=0)
    trainer.fit(model, data)
    return data.batch_size, trainer.current_epoch, trainer.global_step


def test_a_small_training_set_gets_smaller_batches_and_enough_steps(capsys):
    # 90 % of 70 series train: 63 series; 4 batches per epoch at least -> batches of 15, 4 steps per epoch.
    batch_size, epochs, steps = fit_with_budget(70, TrainingBudget(min_steps=30, min_batches_per_epoch=4))
    assert (batch_size, epochs, steps) == (15, 8, 32)  # ceil(30 / 4) epochs of 4 full batches
    out = capsys.readouterr().out
    assert "63 training series, batches of 15, 8 epochs (32 optimizer steps)" in out
    # the configured max_epochs (2) is a minimum, and the line says it was raised and how to train less
    assert "trainer.max_epochs 2 raised to reach min_steps 30 (train less: lower the TrainingBudget" in out
    assert "; date grid: " in out  # the data's calendar, as the DateGrid head sees it


def test_max_steps_still_stops_a_budgeted_run(capsys):
    batch_size, epochs, steps = fit_with_budget(70, TrainingBudget(min_steps=30, min_batches_per_epoch=4), max_steps=5)
    assert (batch_size, steps) == (15, 5)
    assert "stopped at trainer.max_steps 5" in capsys.readouterr().out


def test_a_large_training_set_keeps_its_batches_and_the_configured_epochs():
    batch_size, epochs, steps = fit_with_budget(600, TrainingBudget(min_steps=4, min_batches_per_epoch=2))
    assert (batch_size, epochs, steps) == (128, 2, 8)  # 540 series: 4 full batches of 128, 2 epochs


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="must all be >= 1"):
        TrainingBudget(min_steps=0)
