"""Which un-annotated entries the selective loss leaves out.

`selection_weight` applies CSL's two rules: the class-aware rule drops the
un-annotated entries of classes whose prior exceeds a threshold, and the
likelihood rule drops the un-annotated entries that the model already
believes are positive: the `k` entries with the highest logits. This
module finds those without sorting the whole batch.

The authors sort every un-annotated entry of the batch (about 600k values at
64 x 9,605). Here the k-th largest value is found in two cheap stages:

1. Split the flattened scores into blocks of `BLOCK` entries and take each
   block's maximum. The k-th largest block maximum `L` is a lower bound of the
   k-th largest entry, and every entry at or above `L` lies in one of the k
   blocks with the largest maxima. Keeping those blocks shrinks the problem by
   about `num_entries / (k * BLOCK)` (30x at 64 x 9,605 with top-k 5).
2. Find the k-th largest value among the kept entries.

Each "k-th largest" uses `ops.top_k` on TensorFlow and PyTorch. On JAX (and
XLA in general) top-k on the CPU lowers to a full sort that costs about 120 ms
at this size, so there it is found exactly by a 32-step bisection over the
bits of the float values, which XLA fuses into a few passes.

Ties: every entry equal to the k-th largest value is selected, so with ties
slightly more than k entries may be dropped. The authors' `argsort` breaks
ties in an unspecified order; with continuous logits ties do not occur.

Ranking key: the logit. The authors rank by `p_neg = 1 - p` in float32,
shifted and capped at 1 when `clip > 0`: every entry with `p <= clip` then
ties at 1, and every logit above about 16.6 at 0 (`p` rounds to 1). Where
the k-th entry is not in such a tie the selection is the same; where it is,
theirs drops an arbitrary subset of the tie and this drops the highest
logits (tests/losses/test_authors_differences.py,
`test_clip_ranking_ties_change_nothing`).
"""

import numpy as np
from keras import backend
from keras import ops

BLOCK = 64


def selection_weight(
    logits,
    unannotated,
    mode="selective",
    likelihood_topk=5,
    likelihood_scope="batch",
    prior=None,
    prior_threshold=0.05,
):
    """Which entries count in the loss (the paper's selection weight).

    Annotated entries always count. Un-annotated ones count in `"negative"`
    mode, never in `"ignore"` mode, and in `"selective"` mode unless their
    class prior exceeds `prior_threshold` (when it is above 0) or they are among the
    `likelihood_topk * batch_size` highest un-annotated logits of the batch
    (`likelihood_scope="batch"`), or the `likelihood_topk` highest of their
    sample (`likelihood_scope="sample"`).

    Returns:
        A boolean tensor of the shape of `logits`, or `None` when every entry
        counts.
    """
    if mode == "negative":
        return None
    annotated = ops.logical_not(unannotated)
    if mode == "ignore":
        return annotated
    keep = None
    # A threshold of 0 turns the class-aware rule off, as the authors'
    # `if args.prior_threshold:` does.
    if prior is not None and prior_threshold > 0:
        common_class = ops.cast(prior, "float32") > prior_threshold
        keep = ops.logical_not(ops.logical_and(unannotated, common_class[None, :]))
    if likelihood_topk > 0:
        likely_positive = top_entries_mask(
            ops.stop_gradient(logits),
            unannotated,
            likelihood_topk,
            scope=likelihood_scope,
        )
        dropped = ops.logical_not(likely_positive)
        keep = dropped if keep is None else ops.logical_and(keep, dropped)
    return keep


def _kth_largest_by_bits(values, k):
    """k-th largest entry of each row of `values` (2D), exactly, no sort.

    Floats are mapped to int32 keys with the same order, and the key of the
    answer is built bit by bit from the most significant one: a bit is set
    when at least `k` keys are still at or above the candidate.
    """
    bits = ops.view(ops.cast(values, "float32"), "int32")
    # Negative floats order backwards as integers: flip their magnitude bits.
    keys = ops.where(bits < 0, ops.bitwise_xor(bits, np.int32(0x7FFFFFFF)), bits)
    k = ops.cast(k, "int32")

    def enough(candidate):
        count = ops.sum(
            ops.cast(keys >= candidate[:, None], "int32"), axis=-1
        )
        return count >= k

    zero = ops.zeros((ops.shape(keys)[0],), "int32")
    answer = ops.where(enough(zero), zero, zero + np.int32(-(2**31)))
    for bit in range(30, -1, -1):
        candidate = ops.bitwise_or(answer, np.int32(1 << bit))
        answer = ops.where(enough(candidate), candidate, answer)
    answer_bits = ops.where(
        answer < 0, ops.bitwise_xor(answer, np.int32(0x7FFFFFFF)), answer
    )
    return ops.view(answer_bits, "float32")


def _kth_largest(values, k, method):
    """k-th largest entry of each row of a 2D tensor (k >= 1, k <= columns)."""
    if method == "bits":
        return _kth_largest_by_bits(values, k)
    top = ops.top_k(values, k, sorted=True)[0]
    return top[:, -1]


def _default_method():
    return "bits" if backend.backend() == "jax" else "top_k"


def top_entries_mask(scores, candidates, k_per_row, scope="batch", method=None):
    """Marks the highest-scoring candidate entries.

    Args:
        scores: float tensor of shape `[batch, classes]` (logits).
        candidates: boolean tensor of the same shape; only these entries can
            be selected (the un-annotated ones).
        k_per_row: Python int. With `scope="batch"` the `k_per_row * batch`
            highest candidates of the whole batch are selected; with
            `scope="sample"`, the `k_per_row` highest of each row.
        scope: `"batch"` or `"sample"`.
        method: `"top_k"` or `"bits"`; `None` picks the fast one for the
            backend. Both give the same result.

    Returns:
        Boolean tensor of the shape of `scores`.
    """
    method = method or _default_method()
    scores = ops.cast(scores, "float32")
    masked = ops.where(candidates, scores, -np.inf)
    if scope == "sample":
        num_classes = masked.shape[-1]
        k = min(k_per_row, num_classes)
        threshold = _kth_largest(masked, k, method)[:, None]
    else:
        threshold = _batch_threshold(masked, k_per_row, method)
    return ops.logical_and(candidates, masked >= threshold)


def _batch_threshold(masked, k_per_row, method):
    """k-th largest value of the flattened batch, k = k_per_row * batch."""
    num_classes = masked.shape[-1]
    flat = ops.reshape(masked, (-1,))
    num_entries = flat.shape[0]
    if num_entries is not None:  # Static shapes (JAX, or a fixed batch).
        k = min(k_per_row * (num_entries // num_classes), num_entries)
        if k == 0:
            return np.inf
    else:  # A TensorFlow graph with an unknown batch size.
        num_entries = ops.shape(flat)[0]
        k = ops.minimum(k_per_row * ops.shape(masked)[0], num_entries)
        k = ops.maximum(k, 1)  # An empty batch selects nothing either way.

    # Blocking only pays when each row holds several blocks' worth of the k
    # entries; COCO-sized problems (80 classes) go straight to stage 2.
    if num_classes < 4 * k_per_row * BLOCK:
        return _kth_largest(flat[None, :], k, method)[0]

    pad = (-num_entries) % BLOCK
    padded = ops.concatenate(
        [flat, ops.full((pad,), -np.inf, dtype=flat.dtype)], axis=0
    )
    blocks = ops.reshape(padded, (-1, BLOCK))
    block_max = ops.max(blocks, axis=-1)
    num_blocks = block_max.shape[0]
    if num_blocks is None:
        num_blocks = ops.shape(block_max)[0]
    if isinstance(k, int) and isinstance(num_blocks, int):
        kb = min(k, num_blocks)
    else:
        kb = ops.minimum(k, num_blocks)
    if method == "top_k":
        keep = ops.top_k(block_max, kb, sorted=False)[1]
    else:
        keep = _indices_of_top_blocks(block_max, kb)
    kept = ops.reshape(ops.take(blocks, keep, axis=0), (1, -1))
    return _kth_largest(kept, k, method)[0]


def _indices_of_top_blocks(block_max, kb):
    """Indices of `kb` blocks with the largest maxima, without a sort.

    All blocks strictly above the kb-th largest maximum come first, then
    blocks equal to it fill the remaining places.
    """
    level = _kth_largest_by_bits(block_max[None, :], kb)[0]
    above = ops.cast(block_max > level, "int32")
    equal = ops.cast(block_max == level, "int32")
    num_above = ops.sum(above)
    slot = ops.where(
        above > 0,
        ops.cumsum(above) - 1,
        ops.where(equal > 0, num_above + ops.cumsum(equal) - 1, kb),
    )
    slot = ops.minimum(slot, kb)  # Surplus tied blocks go to a dropped slot.
    block_ids = ops.arange(ops.shape(block_max)[0], dtype="int32")
    indices = ops.scatter(slot[:, None], block_ids + 1, (kb + 1,))
    # Every slot below kb receives exactly one block id (+1, so 0 = empty).
    return ops.cast(indices[:kb] - 1, "int32")
