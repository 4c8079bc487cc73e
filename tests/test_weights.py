"""Pretraining -> fine-tuning: encoder weights exported, loaded (not re-initialised), checked."""

import lightning as L
import pytest
import torch

from cmap.ml.autoencoders import AutoEncoder
from cmap.ml.classifiers import Classifier
from cmap.ml.decoders import BandReconstruction, MultiClassClassification
from cmap.ml.weights import export_encoder, load_encoder_weights

from .conftest import CLASSES, LearningRates, quiet_trainer, synthetic_sits, tiny_classifier, tiny_encoder


@pytest.fixture
def pretrained(tmp_path):
    model = AutoEncoder(tiny_encoder(), BandReconstruction([16, 4]), max_lr=1e-3)
    fit = L.Trainer(max_steps=3, limit_val_batches=1, default_root_dir=tmp_path, enable_progress_bar=False)
    fit.fit(model, synthetic_sits())
    checkpoint = next(tmp_path.rglob("last.ckpt"), None) or next(tmp_path.rglob("*.ckpt"))
    return model, checkpoint


def test_classifier_starts_from_pretrained_encoder(pretrained, tmp_path):
    autoencoder, checkpoint = pretrained
    exported = export_encoder(checkpoint, tmp_path / "encoder.pt")
    for source in (checkpoint, exported):
        model = tiny_classifier(3, init_encoder_from=str(source))
        fresh = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        no_step = quiet_trainer(max_steps=1, limit_val_batches=0, max_epochs=1, limit_train_batches=0)
        no_step.fit(model, synthetic_sits())
        for key, value in autoencoder.encoder.state_dict().items():
            assert torch.equal(model.encoder.state_dict()[key], value), key
        assert any(not torch.equal(fresh[k], v) for k, v in model.encoder.state_dict().items())


def test_encoder_shape_mismatch_is_named(pretrained):
    _, checkpoint = pretrained
    with pytest.raises(ValueError, match=r"do not fit.*bands_encoder.mlp.0.weight: file \(16, 4\) vs model \(32, 4\)"):
        load_encoder_weights(tiny_encoder(d_model=32), checkpoint)


def test_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "weights.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights.ckpt: not a readable PyTorch checkpoint"):
        load_encoder_weights(tiny_encoder(), bad)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_encoder_weights(tiny_encoder(), tmp_path / "missing.ckpt")


def test_class_names_come_with_the_classifier_checkpoint(tmp_path):
    model = tiny_classifier(3)
    L.Trainer(max_steps=2, limit_val_batches=1, default_root_dir=tmp_path, enable_progress_bar=False).fit(
        model, synthetic_sits()
    )
    decoder = MultiClassClassification(hidden=16, num_classes=3)
    loaded = Classifier.load_from_checkpoint(next(tmp_path.rglob("*.ckpt")), encoder=tiny_encoder(), decoder=decoder)
    assert loaded.class_names == CLASSES


def test_frozen_encoder_stays_put_then_trains_at_its_own_rate():
    model = tiny_classifier(3, max_lr=1e-2, freeze_encoder_epochs=1, encoder_lr_factor=0.1)
    start = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head = model.decoder.linear.weight.detach().clone()
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, synthetic_sits())
    assert all(torch.equal(start[k], v) for k, v in model.encoder.state_dict().items())
    assert not torch.equal(head, model.decoder.linear.weight)
    rates = LearningRates()
    quiet_trainer(max_epochs=2, limit_val_batches=0, callbacks=[rates]).fit(model, synthetic_sits())
    assert any(not torch.equal(start[k], v) for k, v in model.encoder.state_dict().items())
    assert rates.groups[-1][0] == pytest.approx(0.1 * rates.groups[-1][1])
