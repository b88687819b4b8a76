"""Asymmetric Loss (ASL) for fully labelled multi-label data."""

import keras

from keras_csl.losses.selective import _as_tensors
from keras_csl.losses.selective import _check
from keras_csl.losses.selective import _check_multilabel_shapes
from keras_csl.losses.selective import class_aware_selective_loss


@keras.saving.register_keras_serializable(package="keras_csl")
class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric Loss (Ridnik et al., ICCV 2021) for fully labelled data.

    The CSL computation with every label annotated: targets are 1 (positive)
    or 0 (negative), and

        L = -sum_c [ y (1 - p)^gamma_pos log p
                     + (1 - y) p_m^gamma_neg log(1 - p_m) ]

    with the shifted probability `p_m = max(p - clip, 0)`. Any target other
    than 1 counts as a negative. Focusing weights carry no gradient.

    Example:

    >>> loss = keras_csl.AsymmetricLoss(reduction="sum")
    >>> float(loss([[1.0, 0.0]], [[0.0, 0.0]]))  # 0.5 log 2 + 0.45^4 log(1/0.55)
    0.3710...

    Args:
        gamma_pos: focusing exponent of positives. Defaults to 1.
        gamma_neg: focusing exponent of negatives. Defaults to 4.
        clip: probability margin added to `1 - p` of negatives. Defaults
            to 0.05.
        from_logits: whether `y_pred` are logits (default).
        reduction: Keras reduction of the per-sample losses.
        name: name of the loss.
        dtype: dtype of the returned loss; the computation is in float32.
    """

    def __init__(
        self,
        gamma_pos=1.0,
        gamma_neg=4.0,
        clip=0.05,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="asymmetric_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        for arg, value in (("gamma_pos", gamma_pos), ("gamma_neg", gamma_neg)):
            _check(
                isinstance(value, (int, float)) and 0 <= value < float("inf"),
                arg,
                "a finite number >= 0",
                value,
            )
        _check(
            isinstance(clip, (int, float)) and 0 <= clip < 1,
            "clip",
            "a number in [0, 1)",
            clip,
        )
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)
        self.clip = float(clip)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        y_true, y_pred = _as_tensors(y_true, y_pred)
        _check_multilabel_shapes(y_true, y_pred, None)
        labels = keras.ops.cast(keras.ops.cast(y_true, "float32") > 0.5, "float32")
        return class_aware_selective_loss(
            labels,
            y_pred,
            mode="negative",
            gamma_pos=self.gamma_pos,
            gamma_neg=self.gamma_neg,
            gamma_unannotated=self.gamma_neg,
            clip=self.clip,
            likelihood_topk=0,
            from_logits=self.from_logits,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "gamma_pos": self.gamma_pos,
                "gamma_neg": self.gamma_neg,
                "clip": self.clip,
                "from_logits": self.from_logits,
                "dtype": self.dtype,
            }
        )
        return config
