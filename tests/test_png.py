"""hfmed's batch PNG encoder: lossless, standard, deterministic, and as small as Pillow's."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hfmed import png


def decode(b: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(b))
    im.load()
    return im


@pytest.mark.parametrize("shape", [(5, 1, 1), (4, 28, 28), (3, 7, 13), (2, 64, 64, 3), (3, 5, 9, 3), (2, 224, 224, 3)])
def test_every_image_decodes_to_the_same_pixels(shape):
    rng = np.random.default_rng(sum(shape))
    batch = rng.integers(0, 256, shape, dtype=np.uint8)
    batch[0] = 0  # a flat image, where every filter ties
    encoded = png.encode_batch(batch)
    assert len(encoded) == shape[0]
    for b, a in zip(encoded, batch):
        im = decode(b)
        assert im.mode == ("RGB" if len(shape) == 4 else "L")
        assert np.array_equal(np.asarray(im), a)


def test_a_single_channel_axis_gives_mode_l():
    batch = np.arange(2 * 6 * 6, dtype=np.uint8).reshape(2, 6, 6, 1)
    assert decode(png.encode_batch(batch)[0]).mode == "L"


def test_encoding_is_deterministic_and_independent_of_batching():
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    whole = png.encode_batch(batch)
    assert whole == png.encode_batch(batch.copy())
    assert whole == [png.encode_batch(batch[i : i + 1])[0] for i in range(9)]


def test_smooth_images_compress_about_as_well_as_pillow():
    yy, xx = np.mgrid[0:224, 0:224] / 224
    rng = np.random.default_rng(2)
    fields = [
        100
        + 50 * (a * xx + b * yy)
        + 80 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.01)
        + rng.normal(0, 4, xx.shape)
        for a, b, cx, cy in rng.uniform(0, 1, (8, 4))
    ]
    batch = np.clip(np.stack(fields), 0, 255).astype(np.uint8)  # smooth scans with sensor noise
    ours = sum(map(len, png.encode_batch(batch)))
    pillow = 0
    for a in batch:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        pillow += len(buf.getvalue())
    assert ours < batch.nbytes
    assert ours <= 1.1 * pillow


def test_non_uint8_input_is_a_programming_error():
    with pytest.raises(TypeError):
        png.encode_batch(np.zeros((1, 4, 4), dtype=np.uint16))
