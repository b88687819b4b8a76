"""The training configuration: one dataclass, plain values only.

Recipe configs (`recipes/configs/*.py`) are small Python files with a
`get_config(variant)` function returning a `TrainConfig`; command-line
overrides (`--set epochs=3`) are applied with `apply_overrides`.
"""

import ast
import dataclasses
import json
import typing

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
LOSS_MODES = ("selective", "negative", "ignore")


@dataclasses.dataclass
class TrainConfig:
    """Everything `keras_csl.training.train` needs besides the data.

    Defaults are the authors' COCO recipe (Alibaba-MIIL/PartialLabelingCSL,
    `train.py` and its README): Adam with weight decay 1e-4, one-cycle
    learning rate peaking at 2e-4 with 20% warm-up, batch 64, 448 px,
    weight EMA 0.9997, CSL with gammas (0, 1, 4), prior threshold 0.5,
    likelihood top-k 5.
    """

    name: str = "csl"

    # Data (TFRecords of `keras_csl.data`; see `keras_csl.training.inputs`).
    train_files: str = ""
    val_files: str = ""
    # Number of training images; `None`: read from `train-summary.json`
    # next to the files.
    train_examples: typing.Optional[int] = None
    # Extra keyword arguments of `keras_csl.data.make_dataset` (e.g. a
    # label overlay or the resize mode).
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

    # Loss (`keras_csl.ClassAwareSelectiveLoss`).
    loss_mode: str = "selective"
    gamma_pos: float = 0.0
    gamma_neg: float = 1.0
    gamma_unannotated: float = 4.0
    clip: float = 0.0
    likelihood_topk: int = 5
    prior_threshold: float = 0.5
    # "online": re-estimated from the training predictions
    # (`ClassPriorUpdater`, written to <run_dir>/prior.csv); "none": no
    # class-aware rule; otherwise the path of a prior CSV
    # (`keras_csl.priors.read_prior_csv`), e.g. from an "ignore" run.
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

    # Distribution: see `keras_csl.training.distribute.make_strategy`.
    strategy: str = "auto"

    # Logging and checkpoints.
    log_every_steps: int = 50
    keep_checkpoints: int = 2

    def validate(self):
        """Raises `ValueError` on an inconsistent value; returns `self`."""
        _check(self.loss_mode in LOSS_MODES, "loss_mode", f"one of {LOSS_MODES}",
               self.loss_mode)
        _check(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}",
               self.precision)
        _check(self.jit_compile in (True, False, "auto"), "jit_compile",
               "True, False or 'auto'", self.jit_compile)
        for field in ("epochs", "per_replica_batch_size", "num_classes",
                      "image_size", "steps_per_execution", "log_every_steps",
                      "keep_checkpoints", "prior_every_n_epochs"):
            value = getattr(self, field)
            _check(isinstance(value, int) and value >= 1, field,
                   "an integer >= 1", value)
        _check(isinstance(self.prior, str) and self.prior != "", "prior",
               "'online', 'none' or the path of a prior CSV", self.prior)
        _check(0.0 <= self.ema_decay < 1.0, "ema_decay",
               "a number in [0, 1) (0 disables the EMA)", self.ema_decay)
        _check(self.learning_rate > 0, "learning_rate", "a number > 0",
               self.learning_rate)
        # Checked here, before a model is built or weights downloaded, so
        # that the message names the config field.
        for field in ("gamma_pos", "gamma_neg", "gamma_unannotated", "weight_decay"):
            value = getattr(self, field)
            _check(_is_number(value) and 0 <= value < float("inf"), field,
                   "a finite number >= 0", value)
        for field, low, high in (("clip", 0, 1), ("prior_momentum", 0, 1),
                                 ("dropout", 0, 1)):
            value = getattr(self, field)
            _check(_is_number(value) and low <= value < high, field,
                   f"a number in [{low}, {high})", value)
        _check(_is_number(self.prior_threshold) and 0 <= self.prior_threshold <= 1,
               "prior_threshold", "a number in [0, 1]", self.prior_threshold)
        _check(_is_number(self.pct_start) and 0 < self.pct_start < 1,
               "pct_start", "a number in (0, 1)", self.pct_start)
        for field in ("likelihood_topk", "prior_warmup_epochs"):
            value = getattr(self, field)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                   field, "an integer >= 0", value)
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(condition, field, expected, value):
    if not condition:
        raise ValueError(
            f"Invalid value for config field `{field}`. Expected {expected}. "
            f"Received: {field}={value!r}"
        )


def apply_overrides(config, overrides):
    """A copy of `config` with `"field=value"` strings applied.

    Values are Python literals (`3`, `2e-4`, `None`, `True`, `{"a": 1}`);
    anything else is taken as a string (`backbone=resnet101`).

    Example:

    >>> apply_overrides(TrainConfig(), ["epochs=3", "weights=None"]).epochs
    3
    """
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for item in overrides or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(
                "Invalid override. Expected `field=value` with a field of "
                f"TrainConfig ({', '.join(sorted(fields))}). Received: {item!r}"
            )
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        current = getattr(config, key)
        if isinstance(current, float) and isinstance(value, int) and not isinstance(
            value, bool
        ):
            value = float(value)
        changes[key] = value
    return dataclasses.replace(config, **changes)
