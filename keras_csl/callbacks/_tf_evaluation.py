"""One validation pass under a `tf.distribute` strategy (TensorFlow only).

Each replica predicts its own batches and updates its own part of a
streaming metric inside `strategy.run`; no prediction leaves its device.
Workers may hold different numbers of batches, so every pipeline's data is
followed by endless one-row padding batches marked invalid: all replicas
of all workers take part in every step, until a step finds no valid row
anywhere.
"""

import tensorflow as tf


def as_dataset_fn(data, batch_size):
    """`fn(input_context) -> tf.data.Dataset` for `data`.

    Args:
        data: such a function already (returned as it is), a
            `tf.data.Dataset` of `(images, targets)` batches, or a tuple of
            arrays `(images, targets)`.
        batch_size: rows per replica when the batches must be cut again
            (several replicas, or arrays).
    """
    if callable(data) and not isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)):
        data = tf.data.Dataset.from_tensor_slices(tuple(data[:2])).batch(batch_size)
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            "Invalid value for argument `validation_data`. Expected a "
            "tf.data.Dataset of (images, targets) batches, a tuple of arrays, "
            "or fn(input_context) -> tf.data.Dataset. Received: "
            f"{type(data).__name__}"
        )

    def dataset_fn(input_context):
        if input_context.num_replicas_in_sync == 1:
            return data
        rows = data.unbatch().shard(
            input_context.num_input_pipelines, input_context.input_pipeline_id
        )
        return rows.batch(batch_size)

    return dataset_fn


class DistributedPass:
    """Runs `model` over a validation set and updates `metric`, replica-wise.

    Create it (and the metric) inside the model's strategy scope; `run()`
    can be called every epoch.
    """

    def __init__(self, model, metric, dataset_fn):
        self.model = model
        self.metric = metric
        self.strategy = model.distribute_strategy
        self.dataset = self.strategy.distribute_datasets_from_function(
            lambda context: _padded(dataset_fn(context), model)
        )
        self._step = tf.function(self._step_fn)

    def _step_fn(self, iterator):
        images, targets, valid = next(iterator)

        def replica_fn(images, targets, valid):
            keep = valid > 0
            logits = tf.cast(self.model(images, training=False), tf.float32)
            self.metric.update_state(
                tf.boolean_mask(targets, keep), tf.boolean_mask(logits, keep)
            )
            return tf.reduce_sum(valid)

        counts = self.strategy.run(replica_fn, args=(images, targets, valid))
        return self.strategy.reduce("SUM", counts, axis=None)

    def run(self):
        """Resets the metric and feeds it the whole validation set once."""
        self.metric.reset_state()
        iterator = iter(self.dataset)
        while float(self._step(iterator)) > 0:
            pass


def _padded(dataset, model):
    """`(images, targets, valid)` batches, then endless invalid padding rows."""
    spec = dataset.element_spec
    image_shape = spec[0].shape[1:]
    if not image_shape.is_fully_defined():
        image_shape = tf.TensorShape(model.inputs[0].shape[1:])
    target_shape = spec[1].shape[1:]
    if not target_shape.is_fully_defined():
        target_shape = tf.TensorShape(model.outputs[0].shape[1:])

    def mark(images, targets, *unused):
        count = tf.shape(images)[0]
        return (
            tf.cast(images, tf.float32),
            tf.cast(targets, tf.float32),
            tf.ones([count], tf.float32),
        )

    padding = tf.data.Dataset.from_tensors((
        tf.zeros([1] + image_shape.as_list(), tf.float32),
        -tf.ones([1] + target_shape.as_list(), tf.float32),
        tf.zeros([1], tf.float32),
    )).repeat()
    return dataset.map(mark).concatenate(padding)
