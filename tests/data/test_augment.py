"""Each augmentation op changes the image as documented.

Pixel-exact ops are checked against PIL (the authors' `randaugment` package
is PIL-based) on integer images; PIL's enhance ops round to integers, so
those agree within 1.5 grey levels.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import augment

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402
from PIL import ImageEnhance  # noqa: E402
from PIL import ImageOps  # noqa: E402

# Ops without a level: strength does not matter.
NO_LEVEL = ("invert", "auto_contrast", "equalize")


def _natural_image(height=32, width=40, seed=0):
    """A mid-range uint8 image with gradients and noise, like a photo patch."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [
            60 + 3 * x + rng.integers(0, 20, x.shape),
            40 + 4 * y + rng.integers(0, 20, x.shape),
            100 + (2 * (x + y)) % 80,
        ],
        axis=-1,
    )
    return np.clip(image, 0, 255).astype(np.uint8)


def _op(image, name, strength, seed=(0, 0)):
    return augment.apply_op(
        tf.constant(image, tf.float32), name, strength, seed
    ).numpy()


def _max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


@pytest.mark.parametrize("name", augment.RANDAUGMENT_OPS)
def test_every_op_keeps_shape_dtype_and_range(name):
    rng = np.random.default_rng(1)
    image = tf.constant(rng.uniform(0, 255, (20, 28, 3)), tf.float32)
    for strength in (-1.0, -0.3, 0.6, 1.0):
        out = augment.apply_op(image, name, strength, seed=(3, 4))
        assert out.shape == image.shape
        assert out.dtype == tf.float32
        assert float(tf.reduce_min(out)) >= 0.0
        assert float(tf.reduce_max(out)) <= 255.0


@pytest.mark.parametrize(
    "name", [n for n in augment.RANDAUGMENT_OPS if n not in NO_LEVEL]
)
def test_strength_zero_is_identity(name):
    image = _natural_image().astype(np.float32) + 0.25  # not only integers
    np.testing.assert_array_equal(_op(image, name, 0.0), image)


def test_invert_posterize_solarize_equalize_match_pil_exactly():
    image = _natural_image()
    pil = Image.fromarray(image)
    np.testing.assert_array_equal(_op(image, "invert", 0.0), ImageOps.invert(pil))
    # Strength 1 keeps 4 bits, 0.5 keeps 6: the package's posterize range.
    np.testing.assert_array_equal(
        _op(image, "posterize", 1.0), ImageOps.posterize(pil, 4)
    )
    np.testing.assert_array_equal(
        _op(image, "posterize", -0.5), ImageOps.posterize(pil, 6)
    )
    # Strength 0.5: threshold 128; strength 1: threshold 0, everything inverted.
    np.testing.assert_array_equal(
        _op(image, "solarize", 0.5), ImageOps.solarize(pil, 128)
    )
    np.testing.assert_array_equal(
        _op(image, "solarize", 1.0), 255 - image.astype(np.float32)
    )
    np.testing.assert_array_equal(_op(image, "equalize", 0.0), ImageOps.equalize(pil))


def test_auto_contrast_stretches_each_channel_like_pil():
    image = _natural_image()
    out = _op(image, "auto_contrast", 0.0)
    np.testing.assert_allclose(out.min(axis=(0, 1)), 0.0, atol=1e-3)
    np.testing.assert_allclose(out.max(axis=(0, 1)), 255.0, atol=1e-3)
    assert _max_diff(out, ImageOps.autocontrast(Image.fromarray(image))) <= 1.0
    # A flat channel is left as it is.
    flat = np.full((4, 4, 3), 77.0, np.float32)
    np.testing.assert_array_equal(_op(flat, "auto_contrast", 0.0), flat)


@pytest.mark.parametrize("strength", [-1.0, 0.5, 1.0])
@pytest.mark.parametrize(
    "name, enhancer",
    [
        ("brightness", ImageEnhance.Brightness),
        ("color", ImageEnhance.Color),
        ("contrast", ImageEnhance.Contrast),
        ("sharpness", ImageEnhance.Sharpness),
    ],
)
def test_enhance_ops_match_pil_factor(name, enhancer, strength):
    image = _natural_image()
    expected = enhancer(Image.fromarray(image)).enhance(1.0 + 0.9 * strength)
    assert _max_diff(_op(image, name, strength), expected) <= 1.5


def test_enhance_ops_move_in_the_documented_direction():
    image = _natural_image().astype(np.float32)
    # Brightness scales the mean by 1 + 0.9 s (no clipping at 0.1x).
    np.testing.assert_allclose(
        _op(image, "brightness", -1.0).mean(), 0.1 * image.mean(), rtol=1e-5
    )
    # Contrast scales the spread around the mean grey level.
    assert _op(image, "contrast", -1.0).std() < 0.2 * image.std()
    assert _op(image, "contrast", 0.5).std() > 1.2 * image.std()
    # Colour scales the distance to grey (the spread across channels).
    spread = lambda x: np.std(x, axis=-1).mean()  # noqa: E731
    assert spread(_op(image, "color", -1.0)) < 0.2 * spread(image)
    assert spread(_op(image, "color", 0.5)) > 1.2 * spread(image)
    # Sharpness raises or lowers the high frequencies.
    detail = lambda x: np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
    assert detail(_op(image, "sharpness", 1.0)) > 1.2 * detail(image)
    assert detail(_op(image, "sharpness", -1.0)) < 0.9 * detail(image)


def test_translate_moves_by_the_documented_number_of_pixels():
    image = _natural_image(32, 40).astype(np.float32)
    shift_x = round(0.5 * augment.MAX_TRANSLATE * 40)
    out = _op(image, "translate_x", 0.5)
    np.testing.assert_array_equal(out[:, shift_x:], image[:, :-shift_x])
    np.testing.assert_array_equal(out[:, :shift_x], augment.GEOMETRIC_FILL)
    out = _op(image, "translate_x", -0.5)
    np.testing.assert_array_equal(out[:, :-shift_x], image[:, shift_x:])
    shift_y = round(1.0 * augment.MAX_TRANSLATE * 32)
    out = _op(image, "translate_y", 1.0)
    np.testing.assert_array_equal(out[shift_y:], image[:-shift_y])
    np.testing.assert_array_equal(out[:shift_y], augment.GEOMETRIC_FILL)


def _spot(height, width, row, col):
    image = np.zeros((height, width, 3), np.float32)
    image[row - 1 : row + 2, col - 1 : col + 2] = 255.0
    return image


def _centroid(image):
    rows, cols = np.nonzero(image[..., 0] > 200)
    return rows.mean(), cols.mean()


def test_rotate_turns_counter_clockwise_by_30_degrees():
    size = 41  # centre at pixel 20
    image = _spot(size, size, 20, 35)  # 15 px right of the centre
    out = _op(image, "rotate", 1.0)
    row, col = _centroid(out)
    angle = math.radians(augment.MAX_ROTATE_DEGREES)
    # Counter-clockwise on screen: up (smaller row) and still right.
    assert row == pytest.approx(20 - 15 * math.sin(angle), abs=1.0)
    assert col == pytest.approx(20 + 15 * math.cos(angle), abs=1.0)
    row, col = _centroid(_op(image, "rotate", -1.0))
    assert row == pytest.approx(20 + 15 * math.sin(angle), abs=1.0)
    # Corners come from outside the image: grey fill.
    np.testing.assert_array_equal(out[0, 0], augment.GEOMETRIC_FILL)


def test_shear_moves_rows_and_columns_about_the_centre():
    size = 41
    # 10 rows below the centre: moves right by 0.3 * 10 = 3 px at strength 1.
    row, col = _centroid(_op(_spot(size, size, 30, 20), "shear_x", 1.0))
    assert (row, col) == (pytest.approx(30), pytest.approx(23))
    # The centre row does not move.
    row, col = _centroid(_op(_spot(size, size, 20, 10), "shear_x", 1.0))
    assert (row, col) == (pytest.approx(20), pytest.approx(10))
    # 10 columns right of the centre: moves down by 3 px.
    row, col = _centroid(_op(_spot(size, size, 20, 30), "shear_y", 1.0))
    assert (row, col) == (pytest.approx(23), pytest.approx(30))
    row, col = _centroid(_op(_spot(size, size, 20, 30), "shear_y", -1.0))
    assert (row, col) == (pytest.approx(17), pytest.approx(30))


def test_small_cutout_is_a_grey_box_of_the_documented_side():
    image = np.zeros((112, 112, 3), np.float32)
    out = _op(image, "cutout", 1.0, seed=(5, 6))
    filled = np.all(out == augment.SMALL_CUTOUT_FILL, axis=-1)
    rows, cols = np.nonzero(filled)
    side = round(augment.MAX_SMALL_CUTOUT * 112)  # 10 px
    assert filled.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # one box
    assert np.ptp(rows) + 1 <= side and np.ptp(cols) + 1 <= side
    assert np.all(out[~filled] == 0.0)


def _box_of_changed_pixels(before, after):
    changed = np.any(before != after, axis=-1)
    rows, cols = np.nonzero(changed)
    return changed, rows, cols


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_random_cutout_fills_a_half_size_box_with_one_colour(dtype):
    size = 32
    image = np.full((size, size, 3), 7, dtype)
    sides = []
    for seed in range(12):
        out = augment.random_cutout(tf.constant(image), seed=(seed, 1)).numpy()
        assert out.dtype == dtype and out.shape == image.shape
        changed, rows, cols = _box_of_changed_pixels(image, out)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert changed.sum() == height * width  # a solid rectangle
        assert height <= size // 2 and width <= size // 2
        colours = out[changed]
        assert np.all(colours == colours[0])  # one colour
        sides.append((height, width))
    # A box away from the border is exactly half the image.
    assert (size // 2, size // 2) in sides
    # Near the border the box is cut, as in the authors' CutoutPIL.
    assert any(side != (size // 2, size // 2) for side in sides)


def test_random_cutout_colours_vary_with_the_seed():
    image = tf.zeros([16, 16, 3])
    colours = set()
    for seed in range(5):
        out = augment.random_cutout(image, seed=(seed, 9)).numpy()
        colours.add(tuple(out[np.any(out > 0, -1)][0]))
    assert len(colours) == 5


def test_flip_mirrors_pixels_exactly():
    image = tf.random.uniform([5, 7, 3], 0, 255)
    flipped = augment.random_flip_left_right(image, (0, 0), probability=1.0)
    np.testing.assert_array_equal(flipped.numpy(), image.numpy()[:, ::-1])
    kept = augment.random_flip_left_right(image, (0, 0), probability=0.0)
    np.testing.assert_array_equal(kept.numpy(), image.numpy())
    flips = sum(
        bool(
            np.any(
                augment.random_flip_left_right(image, (s, 2)).numpy() != image.numpy()
            )
        )
        for s in range(40)
    )
    assert 10 <= flips <= 30


def test_rand_augment_magnitude_zero_is_identity_for_ops_with_a_level():
    image = tf.constant(_natural_image(), tf.float32)
    ops = [n for n in augment.RANDAUGMENT_OPS if n not in NO_LEVEL]
    for seed in range(6):
        out = augment.rand_augment(
            image, (seed, 0), num_ops=2, magnitude=0.0, probability=1.0, ops=ops
        )
        np.testing.assert_array_equal(out.numpy(), image.numpy())


def test_rand_augment_applies_num_ops_ops():
    image = tf.constant(_natural_image(), tf.float32)
    once = augment.rand_augment(
        image, (1, 1), num_ops=1, probability=1.0, ops=["invert"]
    )
    twice = augment.rand_augment(
        image, (1, 1), num_ops=2, probability=1.0, ops=["invert"]
    )
    np.testing.assert_array_equal(once.numpy(), 255.0 - image.numpy())
    np.testing.assert_array_equal(twice.numpy(), image.numpy())
    never = augment.rand_augment(image, (1, 1), probability=0.0)
    np.testing.assert_array_equal(never.numpy(), image.numpy())
    none = augment.rand_augment(image, (1, 1), num_ops=0)
    np.testing.assert_array_equal(none.numpy(), image.numpy())


def test_rand_augment_is_reproducible_and_varies_with_the_seed():
    image = tf.constant(_natural_image(), tf.float32)
    outputs = [
        augment.rand_augment(image, (s, 7), probability=1.0).numpy() for s in range(4)
    ]
    again = augment.rand_augment(image, (0, 7), probability=1.0).numpy()
    np.testing.assert_array_equal(outputs[0], again)
    assert len({o.tobytes() for o in outputs}) == 4
    for out in outputs:
        assert out.shape == image.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 255.0


def test_augment_image_without_ops_is_identity_and_keeps_range():
    image = tf.constant(_natural_image(), tf.float32)
    same = augment.augment_image(
        image, (1, 2), randaugment_num_ops=0, cutout=False, flip=False
    )
    np.testing.assert_array_equal(same.numpy(), image.numpy())
    out = augment.augment_image(image, (1, 2))
    assert out.shape == image.shape and out.dtype == tf.float32
    np.testing.assert_array_equal(
        out.numpy(), augment.augment_image(image, (1, 2)).numpy()
    )
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0


def test_invalid_arguments_raise():
    image = tf.zeros([4, 4, 3])
    with pytest.raises(ValueError, match="name"):
        augment.apply_op(image, "blur", 0.5)
    with pytest.raises(ValueError, match="magnitude"):
        augment.rand_augment(image, (0, 0), magnitude=11)
    with pytest.raises(ValueError, match="ops"):
        augment.rand_augment(image, (0, 0), ops=["rotate", "blur"])
    with pytest.raises(ValueError, match="size_fraction"):
        augment.random_cutout(image, (0, 0), size_fraction=1.5)
    with pytest.raises(ValueError, match="image"):
        augment.apply_op(tf.zeros([2, 4, 4, 3]), "invert", 0.0)
