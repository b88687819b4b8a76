"""Decoding and resizing shared by the pipeline and the serving export."""

import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import preprocessing


def _gradient(height, width):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1
    ).astype(np.uint8)


def test_decodes_jpeg_png_and_grayscale_to_three_channels():
    rgb = _gradient(12, 20)
    gray = rgb[..., :1]
    rgba = np.concatenate([rgb, np.full((12, 20, 1), 9, np.uint8)], -1)
    cases = {
        "png": (tf.io.encode_png(rgb), rgb),
        "gray png": (tf.io.encode_png(gray), np.repeat(gray, 3, -1)),
        "rgba png": (tf.io.encode_png(rgba), rgb),
        "jpeg": (tf.io.encode_jpeg(rgb, quality=100), None),
        "gray jpeg": (tf.io.encode_jpeg(gray, quality=100), None),
    }
    for name, (encoded, exact) in cases.items():
        image = preprocessing.decode_image(encoded)
        assert image.dtype == tf.uint8, name
        assert image.shape == (12, 20, 3), name
        if exact is not None:  # PNG is lossless
            np.testing.assert_array_equal(image.numpy(), exact, err_msg=name)
    gray_rgb = preprocessing.decode_image(cases["gray jpeg"][0]).numpy()
    np.testing.assert_array_equal(gray_rgb[..., 0], gray_rgb[..., 1])
    np.testing.assert_array_equal(gray_rgb[..., 0], gray_rgb[..., 2])


def test_jpeg_is_decoded_at_the_largest_scale_keeping_three_quarters_of_the_size():
    jpeg = tf.io.encode_jpeg(_gradient(64, 96))
    assert preprocessing.decode_image(jpeg).shape == (64, 96, 3)
    # Shorter side 64: 1/2 gives 32 >= 3/4 * 40 = 30; 1/4 gives 16 < 30.
    assert preprocessing.decode_image(jpeg, downscale_to=40).shape == (32, 48, 3)
    # 1/4 gives 16 >= 3/4 * 16 = 12; 1/8 gives 8 < 12.
    assert preprocessing.decode_image(jpeg, downscale_to=16).shape == (16, 24, 3)
    # Too small to scale down: full size.
    assert preprocessing.decode_image(jpeg, downscale_to=64).shape == (64, 96, 3)
    # Other formats always decode at full size.
    png = tf.io.encode_png(_gradient(64, 96))
    assert preprocessing.decode_image(png, downscale_to=16).shape == (64, 96, 3)


def test_squash_resizes_to_a_float_square_in_range():
    image = tf.constant(_gradient(30, 50))
    out = preprocessing.resize_image(image, 16)
    assert out.shape == (16, 16, 3) and out.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
    constant = preprocessing.resize_image(
        tf.fill([30, 50, 3], tf.constant(200, tf.uint8)), 16
    )
    np.testing.assert_array_equal(constant.numpy(), 200.0)


def test_pad_keeps_the_aspect_ratio_and_pads_with_black_around_the_centre():
    wide = preprocessing.resize_image(
        tf.fill([100, 200, 3], tf.constant(200, tf.uint8)), 50, "pad"
    )
    # 100 x 200 -> 25 x 50, placed at rows (50 - 25) // 2 = 12 .. 36.
    np.testing.assert_array_equal(wide[12:37].numpy(), 200.0)
    np.testing.assert_array_equal(wide[:12].numpy(), 0.0)
    np.testing.assert_array_equal(wide[37:].numpy(), 0.0)
    tall = preprocessing.resize_image(tf.fill([200, 100, 3], 200.0), 50, "pad")
    np.testing.assert_array_equal(tall[:, 12:37].numpy(), 200.0)
    np.testing.assert_array_equal(tall[:, :12].numpy(), 0.0)
    np.testing.assert_array_equal(tall[:, 37:].numpy(), 0.0)


def test_crop_keeps_the_aspect_ratio_and_cuts_the_centre():
    # Left quarter black, the rest white: 100 x 200 -> 50 x 100, columns
    # 25 .. 74 kept, so the black quarter (columns 0 .. 24) is cut away.
    image = np.full((100, 200, 3), 255, np.uint8)
    image[:, :50] = 0
    out = preprocessing.resize_image(tf.constant(image), 50, "crop").numpy()
    assert out.shape == (50, 50, 3)
    np.testing.assert_array_equal(out[:, 1:], 255.0)
    # Rows are kept whole: a top band stays at the top.
    image = np.full((200, 100, 3), 255, np.uint8)
    image[:100] = 0
    out = preprocessing.resize_image(tf.constant(image), 50, "crop").numpy()
    np.testing.assert_array_equal(out[:24], 0.0)
    np.testing.assert_array_equal(out[26:], 255.0)


def test_preprocess_encoded_handles_a_scalar_a_batch_and_an_empty_batch():
    jpeg = tf.io.encode_jpeg(_gradient(40, 60))
    png = tf.io.encode_png(_gradient(30, 20))
    one = preprocessing.preprocess_encoded(jpeg, 24)
    assert one.shape == (24, 24, 3) and one.dtype == tf.float32
    batch = preprocessing.preprocess_encoded(tf.stack([jpeg, png]), 24)
    assert batch.shape == (2, 24, 24, 3)
    np.testing.assert_allclose(batch[0].numpy(), one.numpy())
    np.testing.assert_allclose(
        batch[1].numpy(),
        preprocessing.resize_image(preprocessing.decode_image(png), 24).numpy(),
    )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(encoded):
        return preprocessing.preprocess_encoded(encoded, 24, "pad")

    assert serve(tf.zeros([0], tf.string)).shape == (0, 24, 24, 3)
    assert serve(tf.stack([jpeg, png, jpeg])).shape == (3, 24, 24, 3)


def test_preprocess_encoded_works_in_a_saved_model(tmp_path):
    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, encoded):
            return preprocessing.preprocess_encoded(encoded, 16)

    tf.saved_model.save(Module(), str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    jpeg = tf.io.encode_jpeg(_gradient(40, 60))
    np.testing.assert_allclose(
        loaded.serve(tf.stack([jpeg]))[0].numpy(),
        preprocessing.preprocess_encoded(jpeg, 16).numpy(),
    )
    assert loaded.serve(tf.zeros([0], tf.string)).shape == (0, 16, 16, 3)


def _smooth(height, width, seed=0):
    """A smooth random picture (a few random colours, bilinearly enlarged)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), np.uint8)
    return tf.image.resize(small, [height, width]).numpy().round().astype(np.uint8)


def test_default_method_is_the_bilinear_resize_of_before_bit_for_bit():
    """The default path is unchanged: the plain TF ops it always ran.

    The references are written out with the sizes worked out by hand: a
    200 x 300 JPEG at S = 32 is decoded at 1/8 scale (25 x 38: 200 >= 8 x
    ceil(0.75 x 32) = 192) with `jpeg_downscale`, and resized bilinearly;
    "pad" fits the longer side (25 x 38 -> 21 x 32, 5 rows of padding
    above), "crop" the shorter one (25 x 38 -> 32 x 49, 8 columns cut
    on the left).
    """
    jpeg = tf.io.encode_jpeg(_smooth(200, 300), quality=90)
    scaled = tf.io.decode_jpeg(jpeg, channels=3, ratio=8)
    full = tf.io.decode_jpeg(jpeg, channels=3)
    assert scaled.shape == (25, 38, 3)

    def clip(image):
        return tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0).numpy()

    expected = {
        ("squash", True): clip(tf.image.resize(scaled, [32, 32])),
        ("pad", True): clip(tf.image.pad_to_bounding_box(
            tf.image.resize(scaled, [21, 32]), 5, 0, 32, 32)),
        ("crop", True): clip(tf.image.crop_to_bounding_box(
            tf.image.resize(scaled, [32, 49]), 0, 8, 32, 32)),
        # Full decode: 200 x 300 -> 21 x 32 (pad), 32 x 48 (crop).
        ("squash", False): clip(tf.image.resize(full, [32, 32])),
        ("pad", False): clip(tf.image.pad_to_bounding_box(
            tf.image.resize(full, [21, 32]), 5, 0, 32, 32)),
        ("crop", False): clip(tf.image.crop_to_bounding_box(
            tf.image.resize(full, [32, 48]), 0, 8, 32, 32)),
    }
    for (mode, downscale), reference in expected.items():
        for kwargs in ({}, {"method": "bilinear"}):
            out = preprocessing.preprocess_encoded(
                jpeg, 32, mode, jpeg_downscale=downscale, **kwargs
            )
            np.testing.assert_array_equal(out.numpy(), reference, err_msg=str(
                (mode, downscale, kwargs)))
        batch = preprocessing.preprocess_encoded(
            tf.stack([jpeg]), 32, mode, jpeg_downscale=downscale
        )
        np.testing.assert_array_equal(batch[0].numpy(), reference)


def test_pillow_bicubic_decodes_jpegs_with_the_accurate_idct():
    jpeg = tf.io.encode_jpeg(_smooth(48, 64), quality=75)
    default = preprocessing.decode_image(jpeg)
    accurate = preprocessing.decode_image(jpeg, dct_method="INTEGER_ACCURATE")
    np.testing.assert_array_equal(
        accurate.numpy(),
        tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE").numpy(),
    )
    # The two IDCTs differ: the method's choice is visible.
    assert np.abs(default.numpy().astype(int) - accurate.numpy()).max() > 0
    # At 48 px the picture is not resized: the decode alone shows.
    out = preprocessing.preprocess_encoded(
        jpeg, 48, jpeg_downscale=False, method="pillow_bicubic"
    )
    assert out.shape == (48, 48, 3)
    squashed = preprocessing.resize_image(accurate, 48, method="pillow_bicubic")
    np.testing.assert_array_equal(out.numpy(), squashed.numpy())


def test_pillow_bicubic_gives_whole_numbers_and_keeps_constant_images():
    image = tf.constant(_smooth(50, 70))
    for mode in preprocessing.RESIZE_MODES:
        out = preprocessing.resize_image(image, 24, mode, method="pillow_bicubic")
        assert out.shape == (24, 24, 3) and out.dtype == tf.float32
        np.testing.assert_array_equal(out.numpy(), np.round(out.numpy()))
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
    constant = tf.fill([50, 70, 3], tf.constant(200, tf.uint8))
    out = preprocessing.resize_image(constant, 24, "pad", method="pillow_bicubic")
    # 50 x 70 -> 17 x 24 at rows (24 - 17) // 2 = 3 .. 19.
    np.testing.assert_array_equal(out[3:20].numpy(), 200.0)
    np.testing.assert_array_equal(out[:3].numpy(), 0.0)
    np.testing.assert_array_equal(out[20:].numpy(), 0.0)


def test_pillow_bicubic_works_in_a_saved_model_with_an_empty_batch(tmp_path):
    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, encoded):
            return preprocessing.preprocess_encoded(
                encoded, 16, "crop", jpeg_downscale=False, method="pillow_bicubic"
            )

    tf.saved_model.save(Module(), str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    jpeg = tf.io.encode_jpeg(_smooth(40, 60))
    png = tf.io.encode_png(_smooth(60, 30))
    np.testing.assert_array_equal(
        loaded.serve(tf.stack([jpeg, png])).numpy(),
        preprocessing.preprocess_encoded(
            tf.stack([jpeg, png]), 16, "crop", jpeg_downscale=False,
            method="pillow_bicubic",
        ).numpy(),
    )
    assert loaded.serve(tf.zeros([0], tf.string)).shape == (0, 16, 16, 3)


def test_invalid_arguments_raise():
    image = tf.zeros([4, 4, 3], tf.uint8)
    with pytest.raises(ValueError, match="mode"):
        preprocessing.resize_image(image, 8, mode="stretch")
    with pytest.raises(ValueError, match="image_size"):
        preprocessing.resize_image(image, 0)
    with pytest.raises(ValueError, match="Received: image_size=True"):
        preprocessing.preprocess_encoded(tf.io.encode_png(image), True)
    with pytest.raises(ValueError, match="encoded"):
        preprocessing.preprocess_encoded(tf.zeros([1, 1], tf.string), 8)
    with pytest.raises(ValueError, match="Received: method='bicubic'"):
        preprocessing.resize_image(image, 8, method="bicubic")
    with pytest.raises(ValueError, match=r"Expected one of \('bilinear', 'pillow_bicubic'\)"):
        preprocessing.preprocess_encoded(tf.io.encode_png(image), 8, method="area")


def test_numpy_integer_sizes_work_like_python_ints():
    image = tf.io.encode_png(_gradient(10, 14))
    for mode in preprocessing.RESIZE_MODES:
        np.testing.assert_array_equal(
            preprocessing.preprocess_encoded(tf.stack([image]), np.int64(8), mode),
            preprocessing.preprocess_encoded(tf.stack([image]), 8, mode),
        )
    assert preprocessing.check_positive_int("n", np.uint8(3)) == 3
    for bad in (0, -2, 2.0, "3", True, np.bool_(True), None):
        with pytest.raises(ValueError, match="Expected a positive integer"):
            preprocessing.check_positive_int("n", bad)
    assert preprocessing.check_positive_int("n", None, allow_none=True) is None
