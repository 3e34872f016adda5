"""Evaluation metrics: eager helpers on ember Tensors, numpy arrays or lists, returning Python floats.

Metrics are not traced (they read values, so they run outside `ember.jit`). Conventions follow
scikit-learn: the confusion matrix has true classes as rows and predictions as columns;
precision/recall/F1 take ``average`` in {"binary", "micro", "macro", "weighted", None}; a ratio
whose denominator is 0 gives `zero_division` (0.0 by default).

Predictions may be labels, or scores/logits/probabilities with a class axis (argmax over axis 1 when
the prediction has one more dimension than the target). For a binary problem, floating predictions
of the target's shape that are not whole numbers are thresholded: probabilities (all in [0, 1]) at
`threshold`, logits (anything outside [0, 1]) at 0.

RS-6: ``roc_auc([.1, .4, .35, .8], [0, 0, 1, 1]) == 0.75`` and F1 = 2PR / (P + R).
"""
from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "top_k_accuracy", "confusion_matrix", "precision", "recall", "f1_score",
           "precision_recall_f1", "roc_auc", "roc_curve"]


def _np(x) -> np.ndarray:
    from .tensor import Tensor
    if isinstance(x, Tensor):
        a = x.detach()._data
    else:
        a = np.asarray(x)
    if a.dtype.kind == "V" or a.dtype.name == "bfloat16" or a.dtype == np.float16:
        a = a.astype(np.float32)
    return a


def _labels(pred, target, threshold: float = 0.5):
    """(predicted labels, target labels) as int64 arrays of one shape."""
    p, t = _np(pred), _np(target)
    if t.dtype.kind == "f":
        if not np.all(t == np.round(t)):
            raise ValueError("targets must be class labels (whole numbers)")
    t = t.astype(np.int64)
    if p.ndim == t.ndim + 1:
        axis = 1 if p.ndim >= 2 else 0
        p = np.argmax(p, axis=axis)
    elif p.shape == t.shape and p.dtype.kind == "f":
        if not np.all(p == np.round(p)):  # scores, not labels: binary decision
            p = (p >= threshold) if (p.min(initial=0) >= 0 and p.max(initial=0) <= 1) else (p > 0)
    if p.shape != t.shape:
        raise ValueError(f"predictions of shape {_np(pred).shape} do not match targets of shape {t.shape}")
    return p.astype(np.int64).reshape(-1), t.reshape(-1)


def accuracy(pred, target, *, threshold: float = 0.5) -> float:
    """Fraction of predictions equal to the target. `pred`: labels, or logits/probabilities with
    a class axis 1 (argmax), or binary scores of the target's shape (thresholded)."""
    p, t = _labels(pred, target, threshold)
    if t.size == 0:
        raise ValueError("accuracy of an empty batch is undefined")
    return float(np.mean(p == t))


def top_k_accuracy(logits, target, k: int = 5) -> float:
    """Fraction of samples whose target is among the `k` highest scores (class axis 1).

    Ties at the k-th score count in the target's favour only if it is picked by a stable sort
    (higher score first, then lower class index)."""
    s, t = _np(logits), _np(target).astype(np.int64)
    if s.ndim < 2:
        raise ValueError(f"top_k_accuracy needs scores with a class axis, got shape {s.shape}")
    s = np.moveaxis(s, 1, -1).reshape(-1, s.shape[1])
    t = t.reshape(-1)
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"{s.shape[0]} score rows but {t.shape[0]} targets")
    k = min(int(k), s.shape[1])
    if k < 1:
        raise ValueError("k must be >= 1")
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == t[:, None], axis=1)))


def confusion_matrix(pred, target, num_classes: int | None = None, *, normalize: str | None = None) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class i predicted as class j (int64 array).

    `normalize`: None, "true" (rows sum to 1), "pred" (columns) or "all"."""
    p, t = _labels(pred, target)
    if num_classes is None:
        num_classes = int(max(p.max(initial=-1), t.max(initial=-1))) + 1
    if p.size and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    if normalize is None:
        return cm.astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize == "true":
            out = cm / cm.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            out = cm / cm.sum(axis=0, keepdims=True)
        elif normalize == "all":
            out = cm / cm.sum()
        else:
            raise ValueError("normalize must be None, 'true', 'pred' or 'all'")
    return np.nan_to_num(out)


def _div(a, b, zero_division):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b == 0, zero_division, a / np.where(b == 0, 1, b))


def precision_recall_f1(pred, target, *, average: str | None = "binary", pos_label: int = 1,
                        num_classes: int | None = None, zero_division: float = 0.0):
    """(precision, recall, f1) with scikit-learn's `average` semantics.

    "binary": of class `pos_label`; "micro": from global TP/FP/FN counts (equals accuracy for
    single-label problems); "macro": unweighted mean over classes; "weighted": mean weighted by
    each class's support; None: per-class lists."""
    p, t = _labels(pred, target)
    if average == "binary":
        classes = np.union1d(np.unique(p), np.unique(t))
        if classes.size > 2 or not np.all(np.isin(classes, [0, 1, pos_label])):
            raise ValueError(f"average='binary' needs two classes, got labels {classes.tolist()}; "
                             "use average='macro', 'micro' or 'weighted'")
        tp = np.sum((p == pos_label) & (t == pos_label))
        fp = np.sum((p == pos_label) & (t != pos_label))
        fn = np.sum((p != pos_label) & (t == pos_label))
        pr, rc = _div(tp, tp + fp, zero_division), _div(tp, tp + fn, zero_division)
        f1 = _div(2 * tp, 2 * tp + fp + fn, zero_division)
        return float(pr), float(rc), float(f1)
    cm = confusion_matrix(p, t, num_classes)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    if average == "micro":
        TP, FP, FN = tp.sum(), fp.sum(), fn.sum()
        return (float(_div(TP, TP + FP, zero_division)), float(_div(TP, TP + FN, zero_division)),
                float(_div(2 * TP, 2 * TP + FP + FN, zero_division)))
    prc, rcc = _div(tp, tp + fp, zero_division), _div(tp, tp + fn, zero_division)
    f1c = _div(2 * tp, 2 * tp + fp + fn, zero_division)
    if average is None:
        return prc.tolist(), rcc.tolist(), f1c.tolist()
    if average == "macro":
        return float(prc.mean()), float(rcc.mean()), float(f1c.mean())
    if average == "weighted":
        w = cm.sum(axis=1).astype(np.float64)
        if w.sum() == 0:
            return float(zero_division), float(zero_division), float(zero_division)
        w = w / w.sum()
        return float(prc @ w), float(rcc @ w), float(f1c @ w)
    raise ValueError(f"average must be 'binary', 'micro', 'macro', 'weighted' or None, got {average!r}")


def precision(pred, target, **kw):
    """TP / (TP + FP); see `precision_recall_f1` for `average`, `pos_label`, `zero_division`."""
    return precision_recall_f1(pred, target, **kw)[0]


def recall(pred, target, **kw):
    """TP / (TP + FN); see `precision_recall_f1`."""
    return precision_recall_f1(pred, target, **kw)[1]


def f1_score(pred, target, **kw):
    """2PR / (P + R) = 2TP / (2TP + FP + FN); see `precision_recall_f1`."""
    return precision_recall_f1(pred, target, **kw)[2]


f1 = f1_score


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x`, ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _binary_scores(scores, labels, pos_label):
    s = _np(scores).astype(np.float64).reshape(-1)
    y = _np(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y == pos_label


def roc_auc(scores, labels, *, pos_label=1) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counting one half (Mann-Whitney U with average ranks)."""
    s, pos = _binary_scores(scores, labels, pos_label)
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative label")
    r = _average_ranks(s)
    u = r[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(scores, labels, *, pos_label=1):
    """(false positive rates, true positive rates, thresholds), thresholds decreasing, starting
    from (0, 0) at threshold +inf; ``np.trapz(tpr, fpr)`` equals `roc_auc`."""
    s, pos = _binary_scores(scores, labels, pos_label)
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tps = np.cumsum(pos)[last].astype(np.float64)
    fps = (last + 1) - tps
    P, N = pos.sum(), (~pos).sum()
    tpr = np.r_[0.0, tps / P if P else tps * 0]
    fpr = np.r_[0.0, fps / N if N else fps * 0]
    return fpr, tpr, np.r_[np.inf, s[last]]
