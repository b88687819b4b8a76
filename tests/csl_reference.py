"""An independent NumPy reference of the CSL loss: the authors' code, step by step.

It follows `PartialSelectiveLoss.forward` and `edit_targets_parital_labels`
in `src/loss_functions/partial_asymmetric_loss.py` of
Alibaba-MIIL/PartialLabelingCSL statement by statement, in float64, and
shares no code with keras_csl. Where their code decides something, this
does the same, whatever keras_csl reads into it:

- targets are compared for equality with 1, 0 and -1; any other value is
  in none of the three sums (it adds nothing);
- `if prior_threshold:`: a threshold of 0 turns the class-aware rule off;
- the class-aware rule zeroes whole columns, then adds 1 back to every
  annotated entry and turns the weights into booleans;
- the likelihood top-k sorts `xs_neg` (after the clip) ascending over every
  un-annotated entry of the batch, also those the prior already removed, and
  zeroes the first `likelihood_topk * batch` of them;
- log-likelihoods are `log(clamp(p, min=1e-8))`; the focusing weight is
  `pow(1 - xs_pos * pos - xs_neg * (neg + unann), gamma by kind)`.

Two additions that their code does not have: `likelihood_scope="sample"`
(the paper's wording: the `likelihood_topk` highest of each sample), and
`return_gradient`, the gradient their autograd would compute, derived by
hand below.
"""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def csl_reference(
    targets,
    logits,
    mode="selective",
    gamma_pos=0.0,
    gamma_neg=1.0,
    gamma_unannotated=2.0,
    alpha_pos=1.0,
    alpha_neg=1.0,
    alpha_unannotated=1.0,
    clip=0.0,
    likelihood_topk=5,
    likelihood_scope="batch",
    prior=None,
    prior_threshold=0.05,
    return_gradient=False,
):
    """Per-sample loss, float64 array of shape [batch].

    The authors return the sum over the batch (`-BCE_loss.sum()`); this
    returns the sum over each row. With `return_gradient`, the gradient of
    the summed loss with respect to the logits instead, shape
    [batch, classes].
    """
    targets = np.asarray(targets, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)

    # forward(): kinds and probabilities.
    targets_pos = (targets == 1).astype(np.float64)
    targets_neg = (targets == 0).astype(np.float64)
    targets_unann = (targets == -1).astype(np.float64)
    xs_pos = sigmoid(logits)
    xs_neg = 1.0 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = np.minimum(xs_neg + clip, 1.0)

    # edit_targets_parital_labels().
    if mode is None or mode == "negative":
        targets_weights = np.ones_like(logits)
    elif mode == "ignore":
        targets_weights = np.ones_like(logits)
        targets_weights[targets == -1] = 0.0
    elif mode == "selective":
        targets_weights = np.ones_like(logits)
        num_top_k = likelihood_topk * targets_weights.shape[0]
        if prior is not None:
            if prior_threshold:
                idx_ignore = np.where(np.asarray(prior) > prior_threshold)[0]
                targets_weights[:, idx_ignore] = 0.0
                targets_weights += (targets != -1).astype(np.float64)
                targets_weights = targets_weights.astype(bool)
        targets_weights = targets_weights.astype(np.float64)
        if likelihood_scope == "batch":
            _negative_backprop(targets, xs_neg, targets_weights, num_top_k)
        else:  # The paper's wording, not in the authors' code.
            for row in range(targets.shape[0]):
                _negative_backprop(
                    targets[row : row + 1],
                    xs_neg[row : row + 1],
                    targets_weights[row : row + 1],
                    likelihood_topk,
                )
    else:
        raise ValueError(f"unknown mode {mode!r}")

    # forward(): loss calculation.
    def log(v):
        return np.log(np.maximum(v, 1e-8))

    bce_pos = alpha_pos * targets_pos * log(xs_pos)
    bce_neg = alpha_neg * targets_neg * log(xs_neg)
    bce_unann = alpha_unannotated * targets_unann * log(xs_neg)
    asymmetric_w = np.power(
        1 - xs_pos * targets_pos - xs_neg * (targets_neg + targets_unann),
        gamma_pos * targets_pos
        + gamma_neg * targets_neg
        + gamma_unannotated * targets_unann,
    )
    if return_gradient:
        return _gradient(
            logits, xs_pos, xs_neg, clip, asymmetric_w * targets_weights,
            alpha_pos * targets_pos,
            alpha_neg * targets_neg + alpha_unannotated * targets_unann,
        )
    bce_loss = (bce_pos + bce_neg + bce_unann) * asymmetric_w * targets_weights
    return -bce_loss.sum(axis=1)


def _negative_backprop(targets, xs_neg_prob, targets_weights, num_top_k):
    """`negative_backprop_fun_jit`: zero the top-k un-annotated entries.

    A stable argsort stands in for `torch.argsort`, whose order among ties
    is unspecified; `targets_weights` is changed in place.
    """
    cond_flatten = np.where(targets.reshape(-1) == -1)[0]
    ind_class_sort = np.argsort(xs_neg_prob.reshape(-1)[cond_flatten], kind="stable")
    flat = targets_weights.reshape(-1)  # A view: the rows are contiguous.
    flat[cond_flatten[ind_class_sort[:num_top_k]]] = 0.0


def _gradient(logits, xs_pos, xs_neg, clip, constant_weight, alpha_pos, alpha_not_pos):
    """d(sum of the loss)/d(logits), as autograd differentiates their code.

    The focusing and selection weights are constants (no_grad). With
    p = sigmoid(x): d log(clamp(p, 1e-8)) / dx = 1 - p where p >= 1e-8,
    else 0; xs_neg = 1 - p (or min(1 - p + clip, 1)), so
    d log(clamp(xs_neg, 1e-8)) / dx = -p (1 - p) / xs_neg where xs_neg is
    neither capped at 1 by the clip nor clamped at 1e-8, else 0.
    """
    p = xs_pos
    d_pos = np.where(p >= 1e-8, 1.0 - p, 0.0)
    capped = (clip is not None and clip > 0) & (1.0 - p + (clip or 0.0) >= 1.0)
    d_neg = np.where(
        capped | (xs_neg < 1e-8), 0.0, -p * (1.0 - p) / np.maximum(xs_neg, 1e-8)
    )
    return -constant_weight * (alpha_pos * d_pos + alpha_not_pos * d_neg)


def random_partial_batch(rng, batch, classes, p_unannotated=0.6, p_positive=0.1):
    """Random logits and {1, 0, -1} targets."""
    logits = rng.normal(0.0, 2.5, size=(batch, classes)).astype("float32")
    kind = rng.random((batch, classes))
    targets = np.where(kind < p_unannotated, -1.0, 0.0)
    targets[(kind >= p_unannotated) & (rng.random((batch, classes)) < p_positive * 3)] = 1.0
    return targets.astype("float32"), logits
