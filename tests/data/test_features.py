"""The example layout: decode_example (decoder) and parse_labels (parser)."""

import pytest
import tensorflow as tf

from keras_csl.data import features


def _record(image_id, positive, negative, image=b"img", not_exhaustive=()):
    return features.encode_example(
        image, image_id, positive, negative, not_exhaustive=not_exhaustive
    )


def test_decode_one_example_and_a_batch():
    one = features.decode_example(_record("x", [3, 1], [0], not_exhaustive=[3]))
    assert one[features.ID_KEY].numpy() == b"x"
    assert one[features.IMAGE_KEY].numpy() == b"img"
    assert one[features.FORMAT_KEY].numpy() == b"jpeg"
    assert one[features.POSITIVE_KEY].values.numpy().tolist() == [1, 3]  # sorted
    assert one[features.NOT_EXHAUSTIVE_KEY].values.numpy().tolist() == [3]

    batch = features.decode_example(
        [_record("a", [2], []), _record("b", [], [0, 1])], features.LABEL_KEYS
    )
    assert sorted(batch) == sorted(features.LABEL_KEYS)  # only the keys asked
    negative = tf.RaggedTensor.from_sparse(batch[features.NEGATIVE_KEY])
    assert negative.to_list() == [[], [0, 1]]
    with pytest.raises(ValueError, match=r"`keys`.*Received: \['image/label'\]"):
        features.decode_example(_record("a", [], []), ["image/label"])


def test_parse_labels_hand_checked():
    records = [_record("a", [1], [0, 2]), _record("b", [], []), _record("c", [0], [])]
    labels = features.parse_labels(
        features.decode_example(records, features.LABEL_KEYS), 3
    )
    assert labels["id"].numpy().tolist() == [b"a", b"b", b"c"]
    assert labels["positive"].to_list() == [[1], [], [0]]
    assert labels["negative"].to_list() == [[0, 2], [], []]
    assert labels["targets"].numpy().tolist() == [
        [0.0, 1.0, 0.0],
        [-1.0, -1.0, -1.0],
        [1.0, -1.0, -1.0],
    ]
    decoded = features.decode_example(records, features.LABEL_KEYS)
    assert "targets" not in features.parse_labels(decoded, 3, with_targets=False)


def test_parse_labels_names_the_images_with_an_index_out_of_range():
    records = [
        _record("ok", [1], [0]),
        _record("big", [2], []),
        _record("neg", [], [-1]),
    ]
    decoded = features.decode_example(records, features.LABEL_KEYS)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        features.parse_labels(decoded, 2)
    assert "outside [0, num_classes=2)" in error.value.message
    message = error.value.message  # eager here; graph mode formats ids as [big neg]
    assert "big" in message and "neg" in message and "ok" not in message


def test_relabel_example_keeps_the_image_and_replaces_the_lists():
    record = _record("x", [0], [1], image=b"pixels", not_exhaustive=[0])
    new = features.relabel_example(record, {"x": ([2, 1], [])}.__getitem__)
    feature = tf.train.Example.FromString(new).features.feature
    assert feature["image/encoded"].bytes_list.value == [b"pixels"]
    assert list(feature["image/class/positive"].int64_list.value) == [1, 2]
    assert list(feature["image/class/negative"].int64_list.value) == []
    assert list(feature["image/class/not_exhaustive"].int64_list.value) == [0]
    # The same bytes as writing the new labels directly.
    assert new == _record("x", [1, 2], [], image=b"pixels", not_exhaustive=[0])
