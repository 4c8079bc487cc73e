import pytest
import torch

from cmap.ml.embeddings import PixelEncoding, PositionalEncoding


def test_pixel_encoding_maps_bands_to_d_model():
    encoding = PixelEncoding([9, 32, 64, 128, 256])
    assert encoding(torch.randn(2, 5, 9)).shape == (2, 5, 256)
    assert [m.out_features for m in encoding.modules() if isinstance(m, torch.nn.Linear)] == [32, 64, 128, 256]


def test_positional_encoding_encodes_days_not_indices():
    encoding = PositionalEncoding(d_model=16, tau=10000, max_len=400)
    irregular = encoding(torch.tensor([[0, 10, 37, 200]]))
    alone = encoding(torch.tensor([[37]]))
    # The same day has the same encoding whatever its index and the other dates.
    torch.testing.assert_close(irregular[0, 2], alone[0, 0])
    # Day 0 is sin(0)=0 / cos(0)=1.
    torch.testing.assert_close(irregular[0, 0], torch.cat([torch.zeros(8), torch.ones(8)]))
    # Different days differ.
    assert not torch.allclose(irregular[0, 1], irregular[0, 2])


def test_positional_encoding_rejects_days_past_max_len():
    encoding = PositionalEncoding(d_model=8, max_len=100)
    with pytest.raises(ValueError, match="max_len=100"):
        encoding(torch.tensor([[5, 100]]))


def test_positional_encoding_needs_even_width():
    with pytest.raises(ValueError, match="even"):
        PositionalEncoding(d_model=7)
