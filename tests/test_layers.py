"""Encoders, group-propagation block and decoders: shapes and masks. Layers (cmap.ml.layers) and heads
(cmap.ml.decoders) in their homes; checkpoints that name the former module, ``cmap.ml.tempcnn``, still
load (its names are aliases of the moved classes)."""

import pytest
import torch
import yaml

import cmap.ml.decoders as decoders
import cmap.ml.layers as layers
import cmap.ml.tempcnn as former
from cmap.cli import main as cmap_main
from cmap.ml.decoders import BandReconstruction, MultiClassClassification, masked_mean
from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.encoders import ExchangerEncoder, TransformerEncoder
from cmap.ml.gp_block import GroupPropagationBlock
from cmap.predictions import load_classifier

from .conftest import CONFIGS

D, C = 32, 3


def embeddings():
    return PositionalEncoding(D, max_len=400), PixelEncoding([C, 16, D])


def transformer():
    position, bands = embeddings()
    return TransformerEncoder(
        position_encoder=position, bands_encoder=bands, d_model=D, n_att_head=4, n_att_layers=2, dropout_p=0.1
    ).eval()


def exchanger():
    position, bands = embeddings()
    return ExchangerEncoder(
        position_encoder=position, bands_encoder=bands, d_model=D, n_groups=4, n_att_head=4, n_blocks=2, dropout_p=0.1
    ).eval()


def irregular_batch(batch=3, dates=7):
    values = torch.randn(batch, dates, C)
    days = torch.sort(torch.randint(0, 365, (batch, dates)), dim=1).values
    mask = torch.ones(batch, dates, dtype=torch.bool)
    mask[1, 4:] = False  # a shorter series
    mask[2, 2] = False  # a clouded date
    return values, days, mask


def pad(values, days, mask, extra):
    """Append ``extra`` padded dates holding garbage values."""
    b = values.shape[0]
    return (
        torch.cat([values, 1e3 * torch.randn(b, extra, C)], 1),
        torch.cat([days, torch.randint(0, 365, (b, extra))], 1),
        torch.cat([mask, torch.zeros(b, extra, dtype=torch.bool)], 1),
    )


@pytest.mark.parametrize("make_encoder", [transformer, exchanger], ids=["transformer", "exchanger"])
def test_encoder_shapes_and_padding_invariance(make_encoder):
    encoder = make_encoder()
    values, days, mask = irregular_batch()
    features = encoder(values, days, mask)
    assert features.shape == (3, 7, D)
    padded = encoder(*pad(values, days, mask, extra=5))
    # Valid dates see neither padding nor masked (clouded) dates.
    torch.testing.assert_close(padded[:, :7][mask], features[mask], atol=1e-5, rtol=1e-4)
    # Garbage values on a masked date do not leak either.
    values[2, 2] = 1e3
    torch.testing.assert_close(encoder(values, days, mask)[mask], features[mask], atol=1e-5, rtol=1e-4)


def test_transformer_attention_weights_match_fast_path():
    encoder = transformer()
    values, days, mask = irregular_batch()
    features, attention = encoder.forward_with_attention(values, days, mask)
    torch.testing.assert_close(features[mask], encoder(values, days, mask)[mask], atol=1e-5, rtol=1e-4)
    assert len(attention) == 2 and attention[0].shape == (3, 4, 7, 7)
    torch.testing.assert_close(attention[0].sum(-1), torch.ones(3, 4, 7))
    assert attention[1][1, :, :, 4:].abs().max() == 0  # no attention to padded keys


def test_encoder_rejects_embedding_width_mismatch():
    with pytest.raises(ValueError, match="bands_encoder produces width 16, expected d_model=32"):
        TransformerEncoder(position_encoder=PositionalEncoding(D), bands_encoder=PixelEncoding([C, 16]), d_model=D)


def test_gp_block_is_permutation_equivariant_over_dates():
    block = GroupPropagationBlock(D, n_groups=4, n_heads=4).eval()
    x = torch.randn(2, 9, D)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    out = block(x, mask)
    assert out.shape == (2, 9, D)
    perm = torch.randperm(9)
    torch.testing.assert_close(block(x[:, perm], mask[:, perm]), out[:, perm], atol=1e-5, rtol=1e-4)
    # Padded dates are not collected: changing them leaves valid outputs unchanged.
    x2 = x.clone()
    x2[0, 6:] = 100.0
    torch.testing.assert_close(block(x2, mask)[mask], out[mask], atol=1e-5, rtol=1e-4)


def test_masked_mean_ignores_padding():
    features = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(masked_mean(features, mask), torch.tensor([[2.0]]))


def test_decoders_shapes():
    features, mask = torch.randn(4, 6, D), torch.ones(4, 6, dtype=torch.bool)
    assert MultiClassClassification(5, hidden=D)(features, mask).shape == (4, 5)
    assert BandReconstruction([D, 16, C])(features, mask).shape == (4, 6, C)


def test_band_count_and_classes_left_to_the_data_are_bound_once_and_checked():
    bands = PixelEncoding([None, 16])
    with pytest.raises(RuntimeError, match="band count is not known yet"):
        bands(torch.zeros(2, 3, 4))
    bands.bind_bands(4)
    assert bands(torch.zeros(2, 3, 4)).shape == (2, 3, 16) and bands.num_bands == 4
    with pytest.raises(ValueError, match="expects 4 bands per date .* the data has 5"):
        bands.bind_bands(5)
    head = MultiClassClassification(dropout_p=0.1)
    head.bind(16)
    head.bind_classes(["a", "b", "c"])
    assert head(torch.zeros(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"num_classes=3 outputs but the data has 2 classes: \['a', 'b'\]"):
        head.bind_classes(["a", "b"])


# ---------------------------------------------------------------------------------------------
# Layers and heads moved out of cmap.ml.tempcnn
# ---------------------------------------------------------------------------------------------

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def test_the_former_module_names_the_moved_classes_themselves():
    for name in ("DateGridClassification", "FlattenClassification", "DenseTail"):
        assert getattr(former, name) is getattr(decoders, name)
    for name in ("BatchNorm1dAnyBatch", "MaskedBatchNorm1d", "MaskedConvBlock", "zero_masked"):
        assert getattr(former, name) is getattr(layers, name)
    for path in CONFIGS.glob("*.yaml"):  # the shipped configs name the new homes
        assert "cmap.ml.tempcnn" not in path.read_text(), path.name


def test_a_checkpoint_naming_cmap_ml_tempcnn_loads_and_tests(tmp_path, capsys):
    """A run configured as before the move (its checkpoint's hyper-parameters say
    ``cmap.ml.tempcnn.DateGridClassification``) loads for ``cmap map`` and ``cmap test``."""
    init_args = {"class_names": ["a", "b"], "num_bands": 2, "num_dates": 8, "num_train": 48, "batch_size": 16}
    config = {
        "trainer": {"max_steps": 2, "default_root_dir": str(tmp_path), "limit_val_batches": 1},
        "model": {
            "class_path": "cmap.ml.classifiers.Classifier",
            "init_args": {
                "encoder": {"class_path": "cmap.ml.encoders.TempCNNEncoder", "init_args": {"d_model": 8}},
                "decoder": {"class_path": "cmap.ml.tempcnn.DateGridClassification", "init_args": {"hidden": 8}},
            },
        },
        "data": {"class_path": "cmap.data.SyntheticSITS", "init_args": init_args},
    }
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(config))
    cmap_main(["fit", "--config", str(tmp_path / "old.yaml"), *QUIET])
    checkpoint = next(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert "cmap.ml.tempcnn.DateGridClassification" in yaml.safe_dump(hparams)  # an old-style checkpoint
    model = load_classifier(checkpoint)
    assert type(model.decoder) is decoders.DateGridClassification
    capsys.readouterr()
    cmap_main(["test", "--config", str(tmp_path / "old.yaml"), "--ckpt_path", str(checkpoint), *QUIET])
    assert "test/overall_accuracy" in capsys.readouterr().out
