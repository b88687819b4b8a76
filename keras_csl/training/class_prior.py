"""The class prior of a training run, from its first value to its last.

CSL's class-aware rule needs `P_r(c)`, the probability that class `c` is
present in an image: un-annotated labels of classes whose prior exceeds
`loss["prior_threshold"]` are not taken as negatives. This module is where
a run reads, updates and writes it; the life cycle, in order:

1. **Naive prior** (`keras_csl.priors.naive_prior`): the fraction of
   positives among the annotated labels of each class. Free, but biased
   wherever annotation is not uniform (a class annotated mostly where it
   appears looks frequent); the estimation flow reports it for comparison.
2. **Inside the loss**: `ClassAwareSelectiveLoss.prior_variable`, a
   non-trainable variable of `[num_classes]` created with the loss (inside
   the strategy scope), so that a new value reaches already compiled train
   steps. All zeros means "no prior yet": no class is excluded.
3. **At the start of a run** (`TrainConfig.prior`, `initial_prior`):
   `"none"` keeps it at zero (only the likelihood rule selects); a CSV path
   is read (`keras_csl.priors.read_prior_csv`), by class id when the
   dataset has a `classes.csv`, so a prior written for another class order
   lands on the right classes or fails; `"online"` starts at zero.
4. **During the run** (`"online"`, `prior_updater`):
   `keras_csl.callbacks.ClassPriorUpdater` sets it after
   `prior_warmup_epochs`, every `prior_every_n_epochs`, to the mean
   predicted probability of each class over the epoch's training images
   (a `keras_csl.metrics.MeanPrediction` updated in the train step),
   optionally smoothed with `prior_momentum`, and writes
   `<run_dir>/prior.csv` with the dataset's class ids and names.
5. **Checkpoint and resume**: `keras_csl.callbacks.TrainingCheckpoint`
   saves the variable with the rest of the state; a resumed run continues
   from it (the momentum blends with the restored value).
6. **The two-stage flow** (`keras_csl.training.prior_flow`,
   `recipes/estimate_prior.py`), the paper's: train the same recipe in
   "ignore" mode, average its predictions over the training images in
   evaluation mode (`keras_csl.priors.PredictionAverager`), write
   `prior.csv`; then train CSL with `prior=<that file>` (step 3).

`keras_csl.priors` holds the estimators and the CSV format, and works on
any backend; this module ties them to a `TrainConfig` and a run folder.
"""

import os

import tensorflow as tf

from keras_csl import priors
from keras_csl.callbacks import ClassPriorUpdater
from keras_csl.training import inputs

PRIOR_FILE = "prior.csv"
SOURCES = ("online", "none")  # Any other value is the path of a prior CSV.


def initial_prior(config, num_classes):
    """The prior a run starts with: `None` (all zeros) or a CSV's values.

    Example:

    >>> from keras_csl.training import TrainConfig
    >>> initial_prior(TrainConfig(prior="none"), 80) is None
    True

    Raises:
        ValueError: for a missing file, or a file that lacks some of the
            dataset's classes or holds another number of classes.
    """
    if config.prior in SOURCES:
        return None
    if not tf.io.gfile.exists(config.prior):
        raise ValueError(
            "Invalid value for config field `prior`. Expected 'online', "
            "'none' or an existing prior CSV (e.g. the prior.csv of "
            "recipes/estimate_prior.py). "
            f"Received: prior={config.prior!r} (no such file)"
        )
    class_ids, _, classes_csv = inputs.dataset_classes(config)
    if classes_csv is not None and len(class_ids) == num_classes:
        return priors.read_prior_csv(config.prior, class_ids=class_ids)
    return priors.read_prior_csv(config.prior, num_classes=num_classes)


def prior_updater(config, loss, tracker, run_dir=None, class_ids=None,
                  class_names=None, write=True):
    """The `ClassPriorUpdater` of an `"online"` run, else `None`.

    Args:
        config: the `TrainConfig`.
        loss: the run's `ClassAwareSelectiveLoss`.
        tracker: the `MeanPrediction` updated in the train step.
        run_dir: where `prior.csv` is written (`None`: nowhere).
        class_ids, class_names: the model's classes, for the CSV (so that
            `prior=<that file>` in another run reads it back by id).
        write: whether this worker writes the file (the chief).
    """
    if config.prior != "online":
        return None
    csv_path = os.path.join(run_dir, PRIOR_FILE) if run_dir and write else None
    return ClassPriorUpdater(
        loss,
        tracker=tracker,
        every_n_epochs=config.prior_every_n_epochs,
        warmup_epochs=config.prior_warmup_epochs,
        momentum=config.prior_momentum,
        csv_path=csv_path,
        class_ids=class_ids,
        class_names=class_names,
        verbose=0,
    )
