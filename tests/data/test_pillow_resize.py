"""`resize_method="pillow_bicubic"` against Pillow itself.

The reference is Pillow's own `Image.open(...).convert("RGB").resize((W, H))`
(default filter: antialiased bicubic), never keras-csl code: on the real
photos of `../shared/data/coco-sample` (skipped without the shared data)
and on synthetic pictures made here (PNG, exact pixels, and JPEG).

Bounds, per image, as measured with Pillow 13.0 and TensorFlow 2.21
(`benchmarks/resize_fidelity.py` prints the same figures), with margin:

- the 53 photos at 224 px: mean absolute difference at most 0.01 grey
  levels (measured: at most 0.00095), largest difference at most 3
  (measured: 2), at most 0.5% of the values differ (measured: 0.09%);
- synthetic pictures (smooth and noise, shrunk, enlarged, tall and wide):
  mean at most 0.01 (measured: at most 0.0053), largest difference 1;
- checkerboards shrunk by whole factors: largest difference 1, mean at
  most 1 (measured: up to 0.93). Their exact results often end in .5 of a
  grey level, where TensorFlow's float32 and Pillow's fixed point round
  differently.

Pillow 13 runs the vertical pass first for images whose height shrinks
much more than their width; earlier Pillow did not, so these bounds hold
for Pillow >= 13 only (the module is skipped on older Pillow, saying so).
"""

import io

import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import preprocessing

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

if int(PIL.__version__.split(".")[0]) < 13:
    pytest.skip(
        f"Pillow {PIL.__version__} < 13 orders its resize passes differently "
        "for tall images; the bounds here are for Pillow >= 13.",
        allow_module_level=True,
    )

# Smooth and noise pictures: (height, width) shrunk, enlarged, mixed; the
# tall ones (400 x 90, 300 x 200 at 32 px) take Pillow's vertical-first path.
SIZES = ((300, 200), (200, 300), (400, 90), (90, 400), (40, 30), (30, 100), (64, 64))


def _smooth(height, width, rng):
    small = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def _noise(height, width, rng):
    return rng.integers(0, 256, (height, width, 3), np.uint8)


def _checkerboard(height, width, cell=3):
    y, x = np.mgrid[0:height, 0:width]
    value = ((y // cell + x // cell) % 2 * 255).astype(np.uint8)
    return np.stack([value, 255 - value, value // 2], -1)


def _pillow(encoded, width, height):
    image = Image.open(io.BytesIO(encoded)).convert("RGB")
    return np.asarray(image.resize((width, height)), np.float32)


def _ours(encoded, size, mode="squash"):
    return preprocessing.preprocess_encoded(
        encoded, size, mode, jpeg_downscale=False, method="pillow_bicubic"
    ).numpy()


def _difference(ours, reference):
    return np.abs(ours.astype(np.float64) - reference)


@pytest.mark.parametrize("size", [32, 64])
def test_squash_matches_pillow_on_synthetic_pictures(size):
    rng = np.random.default_rng(size)
    for make in (_smooth, _noise):
        for height, width in SIZES:
            picture = make(height, width, rng)
            for encoded in (
                tf.io.encode_png(picture).numpy(),
                tf.io.encode_jpeg(picture, quality=90).numpy(),
            ):
                difference = _difference(
                    _ours(encoded, size), _pillow(encoded, size, size)
                )
                where = (make.__name__, height, width, encoded[:4])
                assert difference.max() <= 1.0, (where, difference.max())
                assert difference.mean() <= 0.01, (where, difference.mean())


def test_any_output_shape_matches_pillow_and_ties_stay_within_one_level():
    rng = np.random.default_rng(7)
    for height, width in SIZES:
        for out_height, out_width in ((20, 50), (50, 20), (37, 37), (100, 13)):
            for picture, mean_bound in (
                (_smooth(height, width, rng), 0.01),
                (_noise(height, width, rng), 0.01),
                (_checkerboard(height, width), 1.0),
            ):
                reference = np.asarray(
                    Image.fromarray(picture).resize((out_width, out_height)), np.float32
                )
                ours = preprocessing.pillow_bicubic_resize(
                    picture, [out_height, out_width]
                ).numpy()
                assert ours.shape == reference.shape
                difference = _difference(ours, reference)
                where = (height, width, out_height, out_width)
                assert difference.max() <= 1.0, (where, difference.max())
                assert difference.mean() <= mean_bound, (where, difference.mean())


def test_pad_and_crop_resize_like_pillow():
    # A 90 x 120 picture at 48 px. Pad: 90 x 120 -> 36 x 48 at rows 6..41.
    # Crop: 90 x 120 -> 48 x 64, the centre columns 8..55.
    rng = np.random.default_rng(3)
    picture = _smooth(90, 120, rng)
    encoded = tf.io.encode_png(picture).numpy()
    padded = _ours(encoded, 48, "pad")
    difference = _difference(padded[6:42], _pillow(encoded, 48, 36))
    assert difference.max() <= 1.0 and difference.mean() <= 0.01
    np.testing.assert_array_equal(padded[:6], 0.0)
    np.testing.assert_array_equal(padded[42:], 0.0)
    cropped = _ours(encoded, 48, "crop")
    difference = _difference(cropped, _pillow(encoded, 64, 48)[:, 8:56])
    assert difference.max() <= 1.0 and difference.mean() <= 0.01
    # The same, tall: pad fills columns 6..41, crop keeps rows 8..55.
    encoded = tf.io.encode_png(np.ascontiguousarray(picture.transpose(1, 0, 2))).numpy()
    padded = _ours(encoded, 48, "pad")
    difference = _difference(padded[:, 6:42], _pillow(encoded, 36, 48))
    assert difference.max() <= 1.0 and difference.mean() <= 0.01
    cropped = _ours(encoded, 48, "crop")
    difference = _difference(cropped, _pillow(encoded, 48, 64)[8:56])
    assert difference.max() <= 1.0 and difference.mean() <= 0.01


def test_real_photos_match_pillow(shared_data):
    paths = sorted((shared_data / "coco-sample" / "images").glob("*.jpg"))
    assert len(paths) >= 50, "expected the 53 COCO photos"
    worst_mean, worst_max, worst_fraction = 0.0, 0.0, 0.0
    fast_idct_means = []
    for path in paths:
        encoded = path.read_bytes()
        reference = _pillow(encoded, 224, 224)
        difference = _difference(_ours(encoded, 224), reference)
        worst_mean = max(worst_mean, difference.mean())
        worst_max = max(worst_max, difference.max())
        worst_fraction = max(worst_fraction, (difference > 0).mean())
        # The same resize after TensorFlow's default (fast) IDCT: the bound
        # below is tight enough to see that decoding difference.
        fast = preprocessing.resize_image(
            preprocessing.decode_image(encoded), 224, method="pillow_bicubic"
        ).numpy()
        fast_idct_means.append(_difference(fast, reference).mean())
    assert worst_mean <= 0.01, worst_mean
    assert worst_max <= 3.0, worst_max
    assert worst_fraction <= 0.005, worst_fraction
    assert min(fast_idct_means) > 0.1, min(fast_idct_means)
