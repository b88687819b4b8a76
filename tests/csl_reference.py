"""An independent NumPy reference of the CSL loss, written from its semantics.

It follows the authors' PyTorch code literally (sigmoid, then log clamped at
1e-8, an argsort of every un-annotated entry for the likelihood top-k), in
float64, so it shares no code with keras_csl.
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

    With `return_gradient`, the gradient of the summed loss with respect to
    the logits instead, shape [batch, classes].
    """
    t = np.asarray(targets, dtype=np.float64)
    x = np.asarray(logits, dtype=np.float64)
    pos, neg, un = (t == 1), (t == 0), (t == -1)
    xs_pos = sigmoid(x)
    xs_neg = 1.0 - xs_pos
    if clip > 0:
        xs_neg = np.minimum(xs_neg + clip, 1.0)

    weights = np.ones_like(x)
    if mode == "ignore":
        weights[un] = 0.0
    elif mode == "selective":
        if prior is not None:
            common = np.asarray(prior) > prior_threshold
            weights[:, common] = 0.0
            weights[~un] = 1.0
        if likelihood_topk > 0:
            if likelihood_scope == "batch":
                flat_un = np.flatnonzero(un.ravel())
                k = likelihood_topk * x.shape[0]
                order = np.argsort(xs_neg.ravel()[flat_un], kind="stable")
                w = weights.ravel()
                w[flat_un[order[:k]]] = 0.0
                weights = w.reshape(x.shape)
            else:
                for row in range(x.shape[0]):
                    cols = np.flatnonzero(un[row])
                    order = np.argsort(xs_neg[row, cols], kind="stable")
                    weights[row, cols[order[:likelihood_topk]]] = 0.0

    log = lambda v: np.log(np.maximum(v, 1e-8))  # noqa: E731
    alpha = alpha_pos * pos + alpha_neg * neg + alpha_unannotated * un
    ll = pos * log(xs_pos) + (neg + un) * log(xs_neg)
    base = 1.0 - xs_pos * pos - xs_neg * (neg + un)
    gamma = gamma_pos * pos + gamma_neg * neg + gamma_unannotated * un
    coefficient = alpha * np.power(base, gamma) * weights
    if return_gradient:
        # d log p / dx = 1 - p; d log(1 - p) / dx = -p; with the clip,
        # d log(min(1 - p + m, 1)) / dx = -p (1 - p) / (1 - p + m) below 1.
        p = xs_pos
        if clip > 0:
            d_neg = np.where(1 - p + clip < 1, -p * (1 - p) / (1 - p + clip), 0.0)
        else:
            d_neg = -p
        return -coefficient * np.where(pos, 1 - p, d_neg)
    return -(coefficient * ll).sum(axis=1)


def random_partial_batch(rng, batch, classes, p_unannotated=0.6, p_positive=0.1):
    """Random logits and {1, 0, -1} targets."""
    logits = rng.normal(0.0, 2.5, size=(batch, classes)).astype("float32")
    kind = rng.random((batch, classes))
    targets = np.where(kind < p_unannotated, -1.0, 0.0)
    targets[(kind >= p_unannotated) & (rng.random((batch, classes)) < p_positive * 3)] = 1.0
    return targets.astype("float32"), logits
