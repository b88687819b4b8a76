import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_csl import priors


def test_naive_prior_hand_checked():
    targets = [[1, 0, -1], [1, -1, -1], [0, 1, -1], [-1, 0, -1]]
    # Class 0: 2 positives of 3 annotated; class 1: 1 of 3; class 2: none.
    np.testing.assert_allclose(priors.naive_prior(targets), [2 / 3, 1 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        priors.naive_prior(np.asarray(targets), empty_value=0.5), [2 / 3, 1 / 3, 0.5], rtol=1e-6
    )


def test_naive_prior_streams_batches_and_datasets():
    rng = np.random.default_rng(0)
    targets = rng.choice([-1.0, 0.0, 1.0], size=(50, 7)).astype("float32")
    expected = (targets == 1).sum(0) / (targets != -1).sum(0)
    batches = [targets[i : i + 8] for i in range(0, 50, 8)]
    np.testing.assert_allclose(priors.naive_prior(batches), expected, rtol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((50, 2)), targets)).batch(16)
    np.testing.assert_allclose(priors.naive_prior(dataset), expected, rtol=1e-6)


def test_prediction_averager_and_model_estimate():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3)).astype("float32")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(5)(inputs))
    logits = model.predict(x, verbose=0).astype("float64")
    expected = (1 / (1 + np.exp(-logits))).mean(0)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros((40, 5)))).batch(7)
    estimate = priors.prior_from_predictions(model, dataset, verbose=0)
    np.testing.assert_allclose(estimate, expected, rtol=1e-5)
    partial = priors.prior_from_predictions(model, dataset, steps=2, verbose=0)
    np.testing.assert_allclose(partial, (1 / (1 + np.exp(-logits[:14]))).mean(0), rtol=1e-5)
    with pytest.raises(ValueError, match="at least one update"):
        priors.PredictionAverager().result()


def test_rank_correlation():
    assert priors.rank_correlation([0.1, 0.5, 0.3], [1.0, 3.0, 2.0]) == pytest.approx(1.0)
    assert priors.rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties share ranks: a = ranks [1, 2.5, 2.5, 4], b = [1, 2, 3, 4]:
    # covariance 4.5 / sqrt(4.5 * 5) = 0.9486833.
    assert priors.rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, rel=1e-6)
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    a, b = rng.random(100), rng.integers(0, 10, 100)
    assert priors.rank_correlation(a, b) == pytest.approx(scipy_stats.spearmanr(a, b)[0], rel=1e-9)
    with pytest.raises(ValueError, match="same length"):
        priors.rank_correlation([1, 2], [1, 2, 3])


def test_csv_round_trip_by_index_and_id(tmp_path):
    prior = np.array([0.25, 0.5, 0.125], "float32")
    path = tmp_path / "sub" / "prior.csv"
    priors.write_prior_csv(path, prior, class_ids=["/m/a", "/m/b", "/m/c"], display_names=["A", "B", "B"])
    assert path.read_text().splitlines()[0] == "index,class_id,prior,display_name"
    np.testing.assert_array_equal(priors.read_prior_csv(path), prior)
    np.testing.assert_array_equal(
        priors.read_prior_csv(path, class_ids=["/m/c", "/m/a"]), [0.125, 0.25]
    )
    with pytest.raises(ValueError, match="missing"):
        priors.read_prior_csv(path, class_ids=["/m/a", "/m/zzz"])
    with pytest.raises(ValueError, match="Expected 5 values"):
        priors.read_prior_csv(path, num_classes=5)


def test_reads_the_authors_file_by_row_order(tmp_path):
    path = tmp_path / "train_avg_preds.csv"
    path.write_text("Classes,avg_pred\nperson,0.61\ncar,0.2\nperson,0.01\n")
    np.testing.assert_allclose(priors.read_prior_csv(path), [0.61, 0.2, 0.01], rtol=1e-6)


def test_csv_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("index,class_id,prior\n0,a,0.1\n1,b,oops\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 3.*oops"):
        priors.read_prior_csv(bad)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("class,value\n")
    with pytest.raises(ValueError, match="header"):
        priors.read_prior_csv(unknown)


def test_validate_prior_errors():
    with pytest.raises(ValueError, match="1D"):
        priors.validate_prior([[0.1]])
    with pytest.raises(ValueError, match=r"prior\[0\]=nan"):
        priors.validate_prior([float("nan"), 0.1])


def test_top_classes():
    assert priors.top_classes([0.1, 0.7, 0.3], 2, ["a", "b", "c"]) == [(1, "b", 0.7), (2, "c", pytest.approx(0.3))]


def test_label_counter_streams_the_naive_prior():
    rng = np.random.default_rng(4)
    targets = rng.choice([-1.0, 0.0, 1.0], size=(30, 5)).astype("float32")
    counter = priors.LabelCounter()
    for start in range(0, 30, 7):
        counter.update(targets[start : start + 7])
    assert counter.count == 30
    np.testing.assert_array_equal(counter.positives, (targets == 1).sum(0))
    np.testing.assert_array_equal(counter.annotated, (targets != -1).sum(0))
    np.testing.assert_allclose(counter.result(), priors.naive_prior(targets), rtol=1e-6)
