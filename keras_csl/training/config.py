"""The training configuration: one dataclass, plain values only.

Recipe configs (`recipes/configs/*.py`) are small Python files with a
`get_config(variant)` function returning a `TrainConfig`; command-line
overrides (`--set epochs=3`, `--set loss.gamma_neg=2`) are applied with
`apply_overrides`.

Each setting has one home. The loss's arguments are the nested `loss` dict,
which is exactly `ClassAwareSelectiveLoss.get_config()`: its defaults are
the loss's own (the authors' `train.py` defaults), a config gives only what
it changes. The preprocessing that a trained model needs at serving time
(`resize_mode`, `resize_method`, `jpeg_downscale`) are typed fields:
training reads images with them and writes them into the model card.
"""

import ast
import dataclasses
import json
import typing

from keras_csl.models.card import RESIZE_METHODS
from keras_csl.models.card import RESIZE_MODES

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Reductions the training loop implements (per-sample losses summed over
# the global batch, divided by its size or not).
LOSS_REDUCTIONS = ("sum_over_batch_size", "sum")
# Fields of configs written before the nested loss config and the typed
# preprocessing fields, and where each setting lives now.
LEGACY_FIELDS = {
    "loss_mode": "loss.mode",
    "gamma_pos": "loss.gamma_pos",
    "gamma_neg": "loss.gamma_neg",
    "gamma_unannotated": "loss.gamma_unannotated",
    "clip": "loss.clip",
    "likelihood_topk": "loss.likelihood_topk",
    "prior_threshold": "loss.prior_threshold",
}
_TYPED_DATASET_OPTIONS = ("resize_mode", "jpeg_downscale")
# `make_dataset` arguments that are config fields: never in `dataset_options`.
_TYPED_FIELDS = _TYPED_DATASET_OPTIONS + ("resize_method",)


def default_loss_config():
    """`ClassAwareSelectiveLoss().get_config()`: the loss's own defaults.

    Example:

    >>> config = default_loss_config()
    >>> config["mode"], config["gamma_unannotated"], config["prior_threshold"]
    ('selective', 2.0, 0.05)
    """
    from keras_csl.losses import ClassAwareSelectiveLoss

    return ClassAwareSelectiveLoss().get_config()


@dataclasses.dataclass
class TrainConfig:
    """Everything `keras_csl.training.train` needs besides the data.

    Optimisation defaults are the authors' COCO recipe
    (Alibaba-MIIL/PartialLabelingCSL `train.py` and its README): Adam with
    weight decay 1e-4, one-cycle learning rate peaking at 2e-4 with 20%
    warm-up, batch 64, 448 px, weight EMA 0.9997. The loss defaults are the
    loss's, i.e. the authors' `train.py` argparse defaults (gammas 0, 1, 2,
    prior threshold 0.05, likelihood top-k 5); their README's recipes (gammas
    0, 1, 4 or 0, 3, 4, threshold 0.5) are written out in
    `recipes/configs/`.

    A partial `loss` dict is completed from the loss's defaults when the
    config is made; unknown keys raise. `dataclasses.replace(config,
    loss={...})` therefore starts again from the defaults: use
    `config.with_loss(**changes)` to change some loss settings of a config.

    Example:

    >>> config = TrainConfig(loss={"gamma_unannotated": 4.0})
    >>> config.loss["gamma_unannotated"], config.loss["gamma_neg"]
    (4.0, 1.0)
    >>> config.with_loss(mode="ignore").loss["mode"]
    'ignore'
    """

    name: str = "csl"

    # Data (TFRecords of `keras_csl.data`; see `keras_csl.training.inputs`).
    train_files: str = ""
    val_files: str = ""
    # Number of training images; `None`: read from `train-summary.json`
    # next to the files.
    train_examples: typing.Optional[int] = None
    # How images are resized to `image_size` (`keras_csl.models.card.
    # RESIZE_MODES`), how the pixels are computed (`RESIZE_METHODS`:
    # "bilinear", fast; "pillow_bicubic", Pillow's default resize, e.g. to
    # fine-tune a converted authors' checkpoint on the pixels it was
    # trained on, with jpeg_downscale=False) and whether large JPEGs are
    # decoded at reduced scale; training reads with them and writes them
    # into the model card.
    resize_mode: str = "squash"
    resize_method: str = "bilinear"
    jpeg_downscale: bool = True
    # Other keyword arguments of `keras_csl.data.make_dataset` (e.g.
    # `label_overlay`, `shuffle_buffer`, `deterministic`, `cache`).
    dataset_options: dict = dataclasses.field(default_factory=dict)
    # > 0: generate that many synthetic images as TFRecords in the run
    # folder and train on them (smoke runs, CPU demo).
    synthetic_examples: int = 0

    # Model (`keras_csl.models.build_model`).
    backbone: str = "resnet50"
    weights: typing.Optional[str] = "imagenet"
    num_classes: int = 80
    image_size: int = 448
    dropout: float = 0.0
    sync_batchnorm: bool = False

    # Loss: the arguments of `keras_csl.ClassAwareSelectiveLoss`, exactly
    # its `get_config()` (a partial dict is completed from the defaults).
    # `loss["prior"]` stays None (the `prior` field says where the prior
    # comes from); `num_classes` is taken from the model.
    loss: dict = dataclasses.field(default_factory=default_loss_config)
    # "online": re-estimated from the training predictions
    # (`ClassPriorUpdater`, written to <run_dir>/prior.csv); "none": no
    # class-aware rule; otherwise the path of a prior CSV
    # (`keras_csl.priors.read_prior_csv`), e.g. from
    # `recipes/estimate_prior.py`. See `keras_csl.training.class_prior`.
    prior: str = "online"
    prior_warmup_epochs: int = 1
    prior_every_n_epochs: int = 1
    prior_momentum: float = 0.0

    # Training augmentation (`keras_csl.data.augment`).
    cutout: bool = True
    randaugment_num_ops: int = 2
    randaugment_magnitude: float = 10.0
    flip: bool = False

    # Optimisation.
    epochs: int = 30
    per_replica_batch_size: int = 64
    learning_rate: float = 2e-4
    weight_decay: float = 1e-4
    pct_start: float = 0.2
    ema_decay: float = 0.9997
    precision: str = "mixed_bfloat16"
    # "auto": XLA on a single GPU, off otherwise; True/False to force.
    jit_compile: typing.Union[bool, str] = "auto"
    steps_per_execution: int = 1
    seed: int = 0

    # Validation: the partial mAP's `num_thresholds`
    # (`keras_csl.callbacks.PartialMAPValidation`). "auto": the exact metric
    # when the number of validation images is known (`<split>-summary.json`
    # beside `val_files`) and its buffers fit in 256 MiB per replica, else
    # 1000 bins; None: exact; an int >= 2: that many bins (bounded memory).
    val_num_thresholds: typing.Union[str, int, None] = "auto"

    # Distribution: see `keras_csl.training.distribute.make_strategy`.
    strategy: str = "auto"

    # Logging and checkpoints.
    log_every_steps: int = 50
    keep_checkpoints: int = 2

    def __post_init__(self):
        self.loss = complete_loss_config(self.loss)

    def with_loss(self, **changes):
        """A copy whose loss config has `changes` applied.

        Raises:
            ValueError: for a key that is not an argument of the loss.
        """
        return dataclasses.replace(self, loss=dict(self.loss, **changes))

    def validate(self):
        """Raises `ValueError` on an inconsistent value; returns `self`."""
        _check(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}",
               self.precision)
        _check(self.jit_compile in (True, False, "auto"), "jit_compile",
               "True, False or 'auto'", self.jit_compile)
        _check(self.resize_mode in RESIZE_MODES, "resize_mode",
               f"one of {RESIZE_MODES}", self.resize_mode)
        _check(self.resize_method in RESIZE_METHODS, "resize_method",
               f"one of {RESIZE_METHODS}", self.resize_method)
        _check(isinstance(self.jpeg_downscale, bool), "jpeg_downscale",
               "True or False", self.jpeg_downscale)
        _check(isinstance(self.dataset_options, dict), "dataset_options",
               "a dict of keras_csl.data.make_dataset arguments",
               self.dataset_options)
        typed = [k for k in _TYPED_FIELDS if k in self.dataset_options]
        _check(not typed, "dataset_options",
               f"no {' or '.join(typed)} (config fields of their own now: set "
               + ", ".join(f"`{k}=...`" for k in typed) + " instead)",
               self.dataset_options)
        for field in ("epochs", "per_replica_batch_size", "num_classes",
                      "image_size", "steps_per_execution", "log_every_steps",
                      "keep_checkpoints", "prior_every_n_epochs"):
            value = getattr(self, field)
            _check(_is_int(value) and value >= 1, field, "an integer >= 1", value)
        _check(isinstance(self.prior, str) and self.prior != "", "prior",
               "'online', 'none' or the path of a prior CSV", self.prior)
        _check(_is_number(self.ema_decay) and 0.0 <= self.ema_decay < 1.0,
               "ema_decay", "a number in [0, 1) (0 disables the EMA)",
               self.ema_decay)
        _check(_is_number(self.learning_rate) and self.learning_rate > 0,
               "learning_rate", "a number > 0", self.learning_rate)
        _check(_is_number(self.weight_decay) and 0 <= self.weight_decay < float("inf"),
               "weight_decay", "a finite number >= 0", self.weight_decay)
        for field, low, high in (("prior_momentum", 0, 1), ("dropout", 0, 1)):
            value = getattr(self, field)
            _check(_is_number(value) and low <= value < high, field,
                   f"a number in [{low}, {high})", value)
        _check(_is_number(self.pct_start) and 0 < self.pct_start < 1,
               "pct_start", "a number in (0, 1)", self.pct_start)
        _check(_is_int(self.prior_warmup_epochs) and self.prior_warmup_epochs >= 0,
               "prior_warmup_epochs", "an integer >= 0", self.prior_warmup_epochs)
        _check(
            self.val_num_thresholds in ("auto", None)
            or (_is_int(self.val_num_thresholds) and self.val_num_thresholds >= 2),
            "val_num_thresholds", "'auto', None (exact) or an integer >= 2",
            self.val_num_thresholds,
        )
        self._validate_loss()
        return self

    def _validate_loss(self):
        loss = self.loss
        _check(loss["prior"] is None, "loss.prior",
               "None (the `prior` field says where the prior comes from: "
               "'online', 'none' or a prior CSV)", _preview(loss["prior"]))
        _check(loss["num_classes"] in (None, self.num_classes), "loss.num_classes",
               f"None or num_classes={self.num_classes}", loss["num_classes"])
        _check(loss["from_logits"] is True, "loss.from_logits",
               "True (keras-csl models output logits)", loss["from_logits"])
        _check(loss["reduction"] in LOSS_REDUCTIONS, "loss.reduction",
               f"one of {LOSS_REDUCTIONS}", loss["reduction"])
        from keras_csl.losses import ClassAwareSelectiveLoss

        try:  # The loss checks its own arguments: one set of rules.
            ClassAwareSelectiveLoss(**dict(loss, num_classes=None))
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"Invalid value for config field `loss`: {error}"
            ) from None

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        """The config of `to_dict()` (e.g. a run's `config.json`).

        Raises:
            ValueError: for a dict written before the nested loss config
                (fields such as `loss_mode`, `gamma_neg`; `resize_mode` in
                `dataset_options`), naming where each setting lives now, or
                for unknown fields.
        """
        check_not_legacy(values)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(
                f"Invalid TrainConfig dict: unknown fields {unknown}. "
                f"Expected fields of TrainConfig: {sorted(fields)}"
            )
        return cls(**values)


def legacy_settings(values):
    """`{old name: new place}` of the old-style settings in a config dict."""
    found = {key: LEGACY_FIELDS[key] for key in values if key in LEGACY_FIELDS}
    options = values.get("dataset_options") or {}
    if isinstance(options, dict):
        for key in _TYPED_DATASET_OPTIONS:
            if key in options:
                found[f"dataset_options[{key!r}]"] = key
    return found


def check_not_legacy(values, where="This config", advice=""):
    """Raises a `ValueError` naming the new fields if `values` is old-style."""
    found = legacy_settings(values)
    if found:
        moves = ", ".join(f"{old} -> {new}" for old, new in found.items())
        raise ValueError(
            f"{where} was written by an older keras-csl, before the loss "
            "settings moved into the nested `loss` config and the "
            f"preprocessing into typed fields ({moves}).{advice} Received "
            f"the old settings {sorted(found)}."
        )


def complete_loss_config(values):
    """`values` completed from `default_loss_config()`; unknown keys raise.

    Example:

    >>> complete_loss_config({"gamma_neg": 3.0})["gamma_unannotated"]
    2.0

    Raises:
        ValueError: if `values` is not a dict or has keys that are not
            arguments of `ClassAwareSelectiveLoss` (named in the message).
    """
    if not isinstance(values, dict):
        raise ValueError(
            "Invalid value for config field `loss`. Expected a dict of "
            "ClassAwareSelectiveLoss arguments (a partial one is completed "
            f"from the defaults). Received: loss={_preview(values)}"
        )
    defaults = default_loss_config()
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        hints = [f"{k!r} (did you mean 'mode'?)" if k == "loss_mode" else repr(k)
                 for k in unknown]
        raise ValueError(
            "Invalid value for config field `loss`. Unknown keys "
            f"{', '.join(hints)}; expected arguments of "
            f"ClassAwareSelectiveLoss: {sorted(defaults)}. Received: "
            f"loss={_preview(values)}"
        )
    return dict(defaults, **{k: _like(defaults[k], v) for k, v in values.items()})


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _preview(value, limit=160):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check(condition, field, expected, value):
    if not condition:
        raise ValueError(
            f"Invalid value for config field `{field}`. Expected {expected}. "
            f"Received: {field}={value!r}"
        )


def apply_overrides(config, overrides):
    """A copy of `config` with `"field=value"` strings applied.

    Values are Python literals (`3`, `2e-4`, `None`, `True`, `{"a": 1}`);
    anything else is taken as a string (`backbone=resnet101`). A dotted
    name sets one key of a dict field: `loss.gamma_neg=2`,
    `dataset_options.shuffle_buffer=256`.

    Example:

    >>> apply_overrides(TrainConfig(), ["epochs=3", "loss.gamma_neg=2"]).loss["gamma_neg"]
    2.0

    Raises:
        ValueError: for an item without `=`, an unknown field (old loss
            fields name their new place) or an unknown loss key.
    """
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for item in overrides or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        field, dot, subkey = key.partition(".")
        if not sep or field not in fields or (dot and not isinstance(
            getattr(config, field), dict
        )):
            hint = ""
            if field in LEGACY_FIELDS:
                hint = f" `{field}` is now `{LEGACY_FIELDS[field]}`."
            raise ValueError(
                "Invalid override. Expected `field=value` with a field of "
                f"TrainConfig ({', '.join(sorted(fields))}), or "
                f"`field.key=value` for a dict field.{hint} Received: {item!r}"
            )
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if dot:
            current = dict(changes.get(field, getattr(config, field)))
            value = _like(current.get(subkey), value)
            current[subkey] = value
            changes[field] = current
        else:
            changes[field] = _like(getattr(config, field), value)
    return dataclasses.replace(config, **changes)


def _like(current, value):
    """An int given where the current value is a float becomes a float."""
    if isinstance(current, float) and _is_int(value):
        return float(value)
    return value
