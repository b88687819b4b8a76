"""make_dataset on tiny TFRecords written here with features.encode_example."""

import csv
import logging

import numpy as np
import pytest
import tensorflow as tf

from keras_csl.data import features
from keras_csl.data import make_dataset
from keras_csl.data import pipeline

NUM_CLASSES = 6
SIZE = 16


def _image(seed, height=20, width=28, channels=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def _labels(k):
    """Deterministic positives and negatives of example k."""
    rng = np.random.default_rng(1000 + k)
    order = rng.permutation(NUM_CLASSES)
    return sorted(order[: k % 3].tolist()), sorted(order[3 : 3 + k % 4].tolist())


def _write(folder, num_files, per_file, encode=None, prefix="train"):
    """Writes `num_files` shards; returns {image_id: (positive, negative)}."""
    encode = encode or (lambda k: tf.io.encode_jpeg(_image(k)).numpy())
    written = {}
    k = 0
    for f in range(num_files):
        path = folder / f"{prefix}-{f:05d}-of-{num_files:05d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for _ in range(per_file):
                image_id = f"img{k:03d}"
                positive, negative = _labels(k)
                writer.write(
                    features.encode_example(encode(k), image_id, positive, negative)
                )
                written[image_id] = (positive, negative)
                k += 1
    return written, str(folder / f"{prefix}-*.tfrecord")


def _dense(positive, negative):
    targets = np.full(NUM_CLASSES, -1.0, np.float32)
    targets[list(negative)] = 0.0
    targets[list(positive)] = 1.0
    return targets


def _collect(ds):
    images, targets, ids = [], [], []
    for batch_images, batch_targets, batch_ids in ds:
        images.append(batch_images.numpy())
        targets.append(batch_targets.numpy())
        ids.extend(i.decode() for i in batch_ids.numpy())
    return images, targets, ids


@pytest.fixture
def records(tmp_path):
    return _write(tmp_path, num_files=4, per_file=5)


def test_evaluation_yields_float_images_and_the_written_targets(records):
    written, pattern = records
    ds = make_dataset(pattern, NUM_CLASSES, SIZE, 8, training=False, return_ids=True)
    images, targets, ids = _collect(ds)
    assert sorted(ids) == sorted(written)
    for batch in images:
        assert batch.dtype == np.float32 and batch.shape[1:] == (SIZE, SIZE, 3)
        assert batch.min() >= 0.0 and batch.max() <= 255.0
    targets = np.concatenate(targets)
    assert targets.dtype == np.float32
    for image_id, row in zip(ids, targets):
        np.testing.assert_array_equal(row, _dense(*written[image_id]), err_msg=image_id)


def test_evaluation_keeps_the_last_partial_batch_and_is_deterministic(records):
    _, pattern = records
    ds = make_dataset(pattern, NUM_CLASSES, SIZE, 8, training=False, return_ids=True)
    first, second = _collect(ds), _collect(ds)
    assert [len(b) for b in first[0]] == [8, 8, 4]
    assert first[2] == second[2]
    for a, b in zip(first[0], second[0]):
        np.testing.assert_array_equal(a, b)
    # The images are the preprocessed originals: no augmentation.
    again = _collect(
        make_dataset(pattern, NUM_CLASSES, SIZE, 8, training=False, return_ids=True)
    )
    np.testing.assert_array_equal(np.concatenate(again[0]), np.concatenate(first[0]))


@pytest.mark.parametrize("num_files", [4, 1])
def test_two_input_pipelines_cover_every_example_exactly_once(
    tmp_path, caplog, num_files
):
    written, pattern = _write(tmp_path, num_files=num_files, per_file=20 // num_files)
    seen = []
    with caplog.at_level(logging.WARNING, logger=pipeline.__name__):
        for pipeline_id in range(2):
            context = tf.distribute.InputContext(
                num_input_pipelines=2,
                input_pipeline_id=pipeline_id,
                num_replicas_in_sync=2,
            )
            ds = make_dataset(
                pattern,
                NUM_CLASSES,
                SIZE,
                6,
                training=False,
                input_context=context,
                return_ids=True,
            )
            images, _, ids = _collect(ds)
            assert max(len(b) for b in images) == 3  # per-replica batch
            seen.extend(ids)
    assert sorted(seen) == sorted(written)  # every example, exactly once
    fell_back = "example-level sharding" in caplog.text
    assert fell_back == (num_files == 1)


def test_training_drops_the_remainder_and_is_reproducible_with_a_seed(records):
    _, pattern = records

    def first_epoch(seed):
        ds = make_dataset(
            pattern,
            NUM_CLASSES,
            SIZE,
            6,
            training=True,
            deterministic=True,
            seed=seed,
            return_ids=True,
        )
        return _collect(ds)

    a, b, c = first_epoch(1), first_epoch(1), first_epoch(2)
    assert [len(x) for x in a[0]] == [6, 6, 6]  # 20 examples, 2 dropped
    assert a[2] == b[2]
    np.testing.assert_array_equal(np.concatenate(a[0]), np.concatenate(b[0]))
    assert a[2] != c[2]


def test_training_augments_and_reshuffles_each_epoch(records):
    written, pattern = records
    ds = make_dataset(
        pattern,
        NUM_CLASSES,
        SIZE,
        20,
        training=True,
        seed=3,
        deterministic=True,
        return_ids=True,
        repeat=True,
    )
    iterator = iter(ds)
    (images_1, targets_1, ids_1), (images_2, _, ids_2) = next(iterator), next(iterator)
    ids_1 = [i.decode() for i in ids_1.numpy()]
    assert sorted(ids_1) == sorted(written)  # whole epochs
    assert ids_1 != [i.decode() for i in ids_2.numpy()]
    for image_id, row in zip(ids_1, targets_1.numpy()):
        np.testing.assert_array_equal(row, _dense(*written[image_id]))
    plain = make_dataset(
        pattern, NUM_CLASSES, SIZE, 20, training=False, return_ids=True
    )
    plain_images, _, plain_ids = _collect(plain)
    plain_by_id = dict(zip(plain_ids, np.concatenate(plain_images)))
    changed = [
        not np.array_equal(image, plain_by_id[image_id])
        for image_id, image in zip(ids_1, images_1.numpy())
    ]
    assert sum(changed) >= 15  # cutout alone touches nearly every image
    assert images_1.dtype == tf.float32
    assert (
        0.0 <= float(tf.reduce_min(images_1))
        and float(tf.reduce_max(images_1)) <= 255.0
    )


def test_training_without_augmentation_yields_the_evaluation_images(records):
    _, pattern = records
    ds = make_dataset(
        pattern, NUM_CLASSES, SIZE, 4, training=True, augment=False, return_ids=True
    )
    images, _, ids = _collect(ds)
    plain_images, _, plain_ids = _collect(
        make_dataset(pattern, NUM_CLASSES, SIZE, 4, training=False, return_ids=True)
    )
    plain_by_id = dict(zip(plain_ids, np.concatenate(plain_images)))
    for image_id, image in zip(ids, np.concatenate(images)):
        np.testing.assert_array_equal(image, plain_by_id[image_id])


def test_grayscale_and_png_records_decode_to_three_channels(tmp_path):
    encoders = [
        lambda k: tf.io.encode_jpeg(_image(k, channels=1)).numpy(),
        lambda k: tf.io.encode_png(_image(k)).numpy(),
        lambda k: tf.io.encode_png(_image(k, channels=1)).numpy(),
        lambda k: tf.io.encode_jpeg(_image(k, height=40, width=24)).numpy(),
    ]
    _, pattern = _write(tmp_path, 1, 4, encode=lambda k: encoders[k](k))
    for mode in ("squash", "pad", "crop"):
        ds = make_dataset(
            pattern, NUM_CLASSES, SIZE, 4, training=False, resize_mode=mode
        )
        images, _ = next(iter(ds))
        assert images.shape == (4, SIZE, SIZE, 3)
    images = images.numpy()
    for gray in (0, 2):
        np.testing.assert_array_equal(images[gray, ..., 0], images[gray, ..., 1])
        np.testing.assert_array_equal(images[gray, ..., 0], images[gray, ..., 2])


def test_pillow_bicubic_records_match_pillow_in_every_mode(tmp_path):
    """`resize_method` reaches the decoding: Pillow's pixels, per mode."""
    import io

    from PIL import Image

    # Smooth 45 x 60 and 60 x 45 pictures, as JPEGs.
    def encode(k):
        small = _image(k, height=6, width=8) if k % 2 else _image(k, height=8, width=6)
        size = (60, 45) if k % 2 else (45, 60)  # (width, height)
        smooth = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR))
        return tf.io.encode_jpeg(smooth, quality=90).numpy()

    written, pattern = _write(tmp_path, 1, 4, encode=encode)
    encoded = {f"img{k:03d}": encode(k) for k in range(4)}
    for mode in ("squash", "pad", "crop"):
        images, _, ids = _collect(make_dataset(
            pattern, NUM_CLASSES, SIZE, 4, training=False, resize_mode=mode,
            resize_method="pillow_bicubic", jpeg_downscale=False, return_ids=True,
        ))
        for image_id, image in zip(ids, np.concatenate(images)):
            picture = Image.open(io.BytesIO(encoded[image_id])).convert("RGB")
            wide = picture.width > picture.height
            if mode == "squash":
                expected, region = picture.resize((SIZE, SIZE)), np.s_[:, :]
            elif mode == "pad":  # 60 x 45 -> 16 x 12 at rows (or columns) 2..13
                expected = picture.resize((16, 12) if wide else (12, 16))
                region = np.s_[2:14, :] if wide else np.s_[:, 2:14]
            else:  # 60 x 45 -> 21 x 16, the centre 16 columns (or rows) from 2
                resized = np.asarray(picture.resize((21, 16) if wide else (16, 21)))
                expected = resized[:, 2:18] if wide else resized[2:18]
                region = np.s_[:, :]
            difference = np.abs(image[region] - np.asarray(expected, np.float32))
            assert difference.max() <= 1.0, (mode, image_id, difference.max())
            assert difference.mean() <= 0.02, (mode, image_id, difference.mean())


def test_label_overlay_replaces_the_labels_by_image_id(records, tmp_path, caplog):
    written, pattern = records
    overlay = {"img001": ([0], [1, 2]), "img007": ([], [5]), "not-in-data": ([3], [])}
    path = str(tmp_path / "overlay.csv")
    features.write_label_overlay(path, [(k, *v) for k, v in overlay.items()])
    with caplog.at_level(logging.WARNING, logger=pipeline.__name__):
        ds = make_dataset(
            pattern,
            NUM_CLASSES,
            SIZE,
            32,
            training=False,
            label_overlay=path,
            return_ids=True,
        )
        _, targets, ids = _collect(ds)
    for image_id, row in zip(ids, np.concatenate(targets)):
        expected = overlay.get(image_id, written[image_id])
        np.testing.assert_array_equal(row, _dense(*expected), err_msg=image_id)
    assert "18 of the first 20 images" in caplog.text


def test_label_overlay_with_a_class_out_of_range_raises(tmp_path):
    path = str(tmp_path / "overlay.csv")
    features.write_label_overlay(path, [("a", [NUM_CLASSES], [])])
    with pytest.raises(ValueError, match="outside"):
        pipeline.LabelOverlay(path, NUM_CLASSES)


def test_an_empty_label_overlay_raises_clearly(tmp_path):
    path = str(tmp_path / "overlay.csv")
    features.write_label_overlay(path, [])
    with pytest.raises(ValueError, match="holds no image"):
        pipeline.LabelOverlay(path, NUM_CLASSES)


def test_a_class_index_out_of_range_in_the_records_raises_naming_the_images(
    tmp_path,
):
    path = str(tmp_path / "train.tfrecord")
    jpeg = tf.io.encode_jpeg(_image(0)).numpy()
    with tf.io.TFRecordWriter(path) as writer:
        for image_id, positive, negative in (
            ("ok", [1], [0]),
            ("too-large", [0], [5]),
            ("negative", [-1], []),
        ):
            writer.write(features.encode_example(jpeg, image_id, positive, negative))
    ds = make_dataset(path, 2, SIZE, 8, training=False, check_shards=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        for _ in ds:
            pass
    message = error.value.message
    assert "outside [0, num_classes=2)" in message
    assert "too-large" in message and "negative" in message
    assert '"ok"' not in message and "'ok'" not in message


def test_distribute_datasets_from_function_with_two_replicas(records, two_cpu_strategy):
    _, pattern = records
    strategy = two_cpu_strategy
    dist = strategy.distribute_datasets_from_function(
        lambda context: make_dataset(
            pattern, NUM_CLASSES, SIZE, 8, training=True, input_context=context
        )
    )
    images, targets = next(iter(dist))
    for replica_images, replica_targets in zip(
        strategy.experimental_local_results(images),
        strategy.experimental_local_results(targets),
    ):
        assert replica_images.shape == (4, SIZE, SIZE, 3)
        assert replica_targets.shape == (4, NUM_CLASSES)


def test_invalid_arguments_raise(records, tmp_path):
    _, pattern = records
    with pytest.raises(ValueError, match="file_pattern"):
        make_dataset(
            str(tmp_path / "none-*.tfrecord"), NUM_CLASSES, SIZE, 4, training=False
        )
    with pytest.raises(ValueError, match="resize_mode"):
        make_dataset(pattern, NUM_CLASSES, SIZE, 4, training=False, resize_mode="fit")
    with pytest.raises(ValueError, match="Received: resize_method='bicubic'"):
        make_dataset(
            pattern, NUM_CLASSES, SIZE, 4, training=False, resize_method="bicubic"
        )
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(pattern, NUM_CLASSES, SIZE, 0, training=False)
    for name in ("num_classes", "image_size", "batch_size"):
        kwargs = dict(num_classes=NUM_CLASSES, image_size=SIZE, batch_size=4)
        kwargs[name] = True
        with pytest.raises(ValueError, match=f"Received: {name}=True"):
            make_dataset(pattern, training=False, **kwargs)


def test_numpy_integer_arguments_work(records):
    # They used to pass the check, then fail inside the tf.data trace.
    _, pattern = records
    ds = make_dataset(
        pattern, np.int64(NUM_CLASSES), np.int64(SIZE), np.int32(4), training=False
    )
    images, targets = next(iter(ds))
    assert images.shape == (4, SIZE, SIZE, 3) and targets.shape == (4, NUM_CLASSES)


def test_cache_in_training_warns_and_keeps_whole_epochs(records, caplog):
    written, pattern = records
    with caplog.at_level(logging.WARNING, logger=pipeline.__name__):
        ds = make_dataset(
            pattern,
            NUM_CLASSES,
            SIZE,
            4,
            training=True,
            augment=False,
            cache=True,
            return_ids=True,
        )
    assert "later epochs replay the file order" in caplog.text
    for _ in range(2):
        assert sorted(_collect(ds)[2]) == sorted(written)  # 20 = 5 batches of 4


def test_make_targets_is_one_example_of_targets_from_lists():
    assert pipeline.targets_from_lists is features.targets_from_lists
    positive, negative = [[2, 0], [], [1]], [[0, 3], [1, 2], []]
    batched = features.targets_from_lists(
        tf.ragged.constant(positive, tf.int64),
        tf.ragged.constant(negative, tf.int64),
        4,
    ).numpy()
    np.testing.assert_array_equal(
        batched, [[1, -1, 1, 0], [-1, 0, 0, -1], [-1, 1, -1, -1]]
    )
    for row, pos, neg in zip(batched, positive, negative):
        padded = tf.constant(pos + [-1, -1], tf.int64)  # -1 entries are padding
        np.testing.assert_array_equal(features.make_targets(padded, neg, 4), row)


def test_read_label_overlay_refuses_an_image_on_two_rows(tmp_path):
    path = tmp_path / "overlay.csv"
    path.write_text("image_id,positive,negative\na,1,\nb,,2\na,0,\n")
    with pytest.raises(
        ValueError, match=r"overlay\.csv: image 'a' is on line 2 and again on line 4"
    ):
        features.read_label_overlay(str(path))


def test_real_coco_photos_decode_with_their_labels(shared_data, tmp_path):
    sample = shared_data / "coco-sample"
    with open(sample / "class-descriptions.csv", newline="") as f:
        class_index = {row[0]: i for i, row in enumerate(csv.reader(f))}
    paths = sorted((sample / "images").glob("*.jpg"))[:6]
    labels = {p.stem: ([], []) for p in paths}
    with open(sample / "image-labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["ImageID"] in labels:
                labels[row["ImageID"]][row["Confidence"] != "1"].append(
                    class_index[row["LabelName"]]
                )
    with tf.io.TFRecordWriter(str(tmp_path / "coco.tfrecord")) as writer:
        for p in paths:
            writer.write(
                features.encode_example(p.read_bytes(), p.stem, *labels[p.stem])
            )
    ds = make_dataset(
        str(tmp_path / "coco.tfrecord"),
        len(class_index),
        224,
        6,
        training=False,
        return_ids=True,
        check_shards=False,  # one hand-named file
    )
    images, targets, ids = next(iter(ds))
    assert images.shape == (6, 224, 224, 3)
    assert float(tf.reduce_max(images)) > 200.0  # real photos, [0, 255] range
    for image_id, row in zip(ids.numpy(), targets.numpy()):
        positive, negative = labels[image_id.decode()]
        np.testing.assert_array_equal(np.flatnonzero(row == 1.0), sorted(positive))
        assert (row == 0.0).sum() == len(negative)  # exhaustive COCO labels


@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("num_pipelines", [2, 4])
def test_training_pipelines_read_each_example_once_per_epoch(
    tmp_path, caplog, num_pipelines, deterministic
):
    # 3 files: 2 pipelines shard them by file, 4 fall back to example-level
    # sharding. There, each pipeline used to shuffle the files with its own
    # seed, so `shard` took every n-th element of different streams (22 to
    # 25 distinct examples of 30).
    written, pattern = _write(tmp_path, num_files=3, per_file=10)
    epochs = [[], []]
    with caplog.at_level(logging.WARNING, logger=pipeline.__name__):
        for pipeline_id in range(num_pipelines):
            context = tf.distribute.InputContext(
                num_input_pipelines=num_pipelines,
                input_pipeline_id=pipeline_id,
                num_replicas_in_sync=num_pipelines,
            )
            ds = make_dataset(
                pattern,
                NUM_CLASSES,
                SIZE,
                num_pipelines,  # per-replica batch 1: no remainder to drop
                training=True,
                augment=False,
                input_context=context,
                deterministic=deterministic,
                shuffle_buffer=8,
                return_ids=True,
            )
            for epoch in epochs:  # each pass over `ds` is one epoch
                epoch.append([i.decode() for _, _, ids in ds for i in ids.numpy()])
    assert ("example-level sharding" in caplog.text) == (num_pipelines == 4)
    for epoch in epochs:
        assert sorted(sum(epoch, [])) == sorted(written)  # each exactly once
    assert epochs[0] != epochs[1]  # reshuffled each epoch
