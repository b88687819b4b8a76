"""The losses' arguments, each defined once: name, default and check.

`SelectiveLossSettings` holds the 12 settings of the Class-aware Selective
Loss and `AsymmetricLossSettings` the 4 of ASL. Each setting is one line
below (its default, what it accepts, how it is stored); the loss classes
take them as keyword arguments, store one record, hand it to the loss
function and return it from `get_config()`, so a default or a check
cannot differ between the constructor, the computation and a saved config.

The selective defaults are the argparse defaults of the authors'
`train.py` (Alibaba-MIIL/PartialLabelingCSL): gammas 0 / 1 / 2, alphas 1,
clip 0, likelihood top-k 5, prior threshold 0.05; the mode defaults to
`"selective"` (CSL itself; their script defaults to `"negative"`).
"""

import dataclasses
import inspect
import math

import numpy as np

MODES = ("negative", "ignore", "selective")
SCOPES = ("batch", "sample")


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not (
        isinstance(value, (bool, np.bool_))
    )


def _is_integer(value):
    return isinstance(value, (int, np.integer)) and not (
        isinstance(value, (bool, np.bool_))
    )


def _setting(default, expected, valid, convert):
    """A dataclass field with what it accepts (`valid`, `expected`)."""
    return dataclasses.field(
        default=default,
        metadata=dict(expected=expected, valid=valid, convert=convert),
    )


def _choice(default, choices):
    return _setting(default, f"one of {choices}", lambda v: v in choices, str)


def _non_negative(default):
    return _setting(
        default,
        "a finite number >= 0",
        lambda v: _is_number(v) and 0 <= v < math.inf,
        float,
    )


def _flag(default):
    return _setting(
        default, "True or False", lambda v: isinstance(v, (bool, np.bool_)), bool
    )


def _clip(default):
    return _setting(
        default, "a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1, float
    )


class _Settings:
    """Validation, config and signature shared by the settings records."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not field.metadata["valid"](value):
                raise ValueError(
                    f"Invalid value for argument `{field.name}`. Expected "
                    f"{field.metadata['expected']}. Received: "
                    f"{field.name}={value!r}"
                )
            # Plain Python values: the config is JSON, the loss code traces
            # them as constants.
            object.__setattr__(self, field.name, field.metadata["convert"](value))

    @classmethod
    def names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_arguments(cls, arguments, owner):
        """Builds the record from keyword arguments, naming unknown ones."""
        unknown = sorted(set(arguments) - set(cls.names()))
        if unknown:
            raise TypeError(
                f"{owner} got unexpected keyword argument(s) {unknown}. "
                f"Expected some of {list(cls.names())}."
            )
        return cls(**arguments)

    def to_config(self):
        """The settings as a plain dict (JSON-serializable)."""
        return dataclasses.asdict(self)

    @classmethod
    def parameters(cls):
        """Keyword-only `inspect.Parameter`s, one per setting, in order."""
        return [
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default
            )
            for field in dataclasses.fields(cls)
        ]


@dataclasses.dataclass(frozen=True)
class SelectiveLossSettings(_Settings):
    """The settings of `ClassAwareSelectiveLoss`; see its docstring."""

    mode: str = _choice("selective", MODES)
    gamma_pos: float = _non_negative(0.0)
    gamma_neg: float = _non_negative(1.0)
    gamma_unannotated: float = _non_negative(2.0)
    alpha_pos: float = _non_negative(1.0)
    alpha_neg: float = _non_negative(1.0)
    alpha_unannotated: float = _non_negative(1.0)
    clip: float = _clip(0.0)
    likelihood_topk: int = _setting(
        5, "an integer >= 0", lambda v: _is_integer(v) and v >= 0, int
    )
    likelihood_scope: str = _choice("batch", SCOPES)
    prior_threshold: float = _setting(
        0.05, "a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1, float
    )
    from_logits: bool = _flag(True)

    @property
    def class_aware_rule_on(self):
        """Whether a prior can exclude classes: selective mode, threshold > 0.

        A threshold of 0 turns the rule off, as `if args.prior_threshold:`
        does in the authors' `edit_targets_parital_labels`.
        """
        return self.mode == "selective" and self.prior_threshold > 0


@dataclasses.dataclass(frozen=True)
class AsymmetricLossSettings(_Settings):
    """The settings of `AsymmetricLoss` (ASL's defaults); see its docstring."""

    gamma_pos: float = _non_negative(1.0)
    gamma_neg: float = _non_negative(4.0)
    clip: float = _clip(0.05)
    from_logits: bool = _flag(True)


def signature(settings_class, positional, keyword):
    """An `inspect.Signature`: `positional` names, then every setting, then
    `keyword` (`(name, default)` pairs), the last two keyword-only."""
    parameters = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name in positional
    ]
    parameters += settings_class.parameters()
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
        for name, default in keyword
    ]
    return inspect.Signature(parameters)


def expose_settings(loss_class, settings_class):
    """Gives `loss_class` read-only attributes and a signature per setting.

    `loss.gamma_neg` reads `loss.settings.gamma_neg`; assigning it raises,
    since the compiled loss would not see a new value. The constructor's
    signature (for `help()` and `inspect`) lists the settings, then the
    constructor's own keyword-only arguments with their defaults (those
    before its `**settings`).
    """
    for name in settings_class.names():
        setattr(
            loss_class,
            name,
            property(
                lambda self, name=name: getattr(self.settings, name),
                doc=f"The `{name}` setting (read-only).",
            ),
        )
    own = inspect.signature(loss_class.__init__).parameters.values()
    keras_parameters = [
        (p.name, p.default) for p in own if p.kind is p.KEYWORD_ONLY
    ]
    loss_class.__init__.__signature__ = signature(
        settings_class, ("self",), keras_parameters
    )
