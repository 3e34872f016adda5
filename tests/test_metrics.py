"""ember.metrics against hand-computed values and brute-force definitions (RS-6)."""
import itertools

import numpy as np
import pytest
from hypothesis import given, strategies as st

import ember
from ember import metrics as M


def test_rs6_auc_and_f1():
    """RS-6: scores [.1, .4, .35, .8] with labels [0, 0, 1, 1] give AUC = .75; F1 = 2PR/(P+R)."""
    assert M.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert M.roc_auc(ember.tensor([0.1, 0.4, 0.35, 0.8]), ember.tensor([0, 0, 1, 1])) == 0.75
    pred, target = [1, 1, 0, 1, 0, 0, 1], [1, 0, 0, 1, 1, 0, 1]
    p, r = M.precision(pred, target), M.recall(pred, target)
    assert p == 3 / 4 and r == 3 / 4
    assert M.f1_score(pred, target) == pytest.approx(2 * p * r / (p + r))
    pred2 = [1, 0, 0, 0, 0, 1]
    p, r = M.precision(pred2, [1, 1, 1, 0, 0, 0]), M.recall(pred2, [1, 1, 1, 0, 0, 0])
    assert (p, r) == (0.5, 1 / 3)
    assert M.f1_score(pred2, [1, 1, 1, 0, 0, 0]) == pytest.approx(2 * p * r / (p + r))


def test_auc_ties_count_half():
    assert M.roc_auc([0.5, 0.5], [0, 1]) == 0.5
    assert M.roc_auc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    with pytest.raises(ValueError, match="positive and one negative"):
        M.roc_auc([0.1, 0.2], [1, 1])


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=30))
def test_auc_matches_pairwise_definition(pairs):
    scores = np.array([p[0] for p in pairs], float) / 5
    labels = np.array([p[1] for p in pairs], int)
    if labels.min() == labels.max():
        return
    pos, neg = scores[labels == 1], scores[labels == 0]
    brute = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg)])
    assert M.roc_auc(scores, labels) == pytest.approx(brute)
    fpr, tpr, _ = M.roc_curve(scores, labels)
    assert np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2) == pytest.approx(brute)


def test_accuracy_forms():
    logits = ember.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [0.0, 2.0, 1.0]])
    target = ember.tensor([0, 1, 2, 0])
    assert M.accuracy(logits, target) == 0.75
    assert isinstance(M.accuracy(logits, target), float)
    assert M.accuracy(np.array([0, 1, 2, 2]), [0, 1, 2, 0]) == 0.75
    assert M.accuracy(ember.tensor([0.9, 0.2, 0.6]), [1, 0, 0]) == pytest.approx(2 / 3)  # probabilities
    assert M.accuracy([3.0, -1.0, -0.5], [1, 0, 1]) == pytest.approx(2 / 3)  # logits
    # (N, C, H, W) segmentation-style logits against (N, H, W) targets: class axis 1
    seg = np.zeros((1, 2, 2, 2))
    seg[0, 1, 0, 0] = 1
    assert M.accuracy(seg, np.array([[[1, 0], [0, 0]]])) == 1.0
    assert M.accuracy(ember.randn(4, 3).to(ember.bfloat16), [0, 1, 2, 0]) <= 1.0
    with pytest.raises(ValueError):
        M.accuracy([0, 1], [0, 1, 2])


def test_top_k():
    logits = np.array([[0.1, 0.5, 0.4], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    target = [2, 1, 0]
    assert M.top_k_accuracy(logits, target, k=1) == 0.0
    assert M.top_k_accuracy(logits, target, k=2) == pytest.approx(2 / 3)
    assert M.top_k_accuracy(ember.tensor(logits), target, k=3) == 1.0


def test_confusion_matrix_and_averages():
    target = [0, 0, 1, 1, 2, 2, 2]
    pred = [0, 1, 1, 1, 2, 0, 2]
    cm = M.confusion_matrix(pred, target)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert M.confusion_matrix(pred, target, num_classes=4).shape == (4, 4)
    assert np.allclose(M.confusion_matrix(pred, target, normalize="true").sum(axis=1), 1)
    tp = np.array([1, 2, 2])
    prec = tp / np.array([2, 3, 2])
    rec = tp / np.array([2, 2, 3])
    f1 = 2 * prec * rec / (prec + rec)
    p, r, f = M.precision_recall_f1(pred, target, average="macro")
    assert (p, r, f) == pytest.approx((prec.mean(), rec.mean(), f1.mean()))
    p, r, f = M.precision_recall_f1(pred, target, average="micro")
    assert p == r == f == pytest.approx(M.accuracy(pred, target))
    w = np.array([2, 2, 3]) / 7
    assert M.f1_score(pred, target, average="weighted") == pytest.approx(f1 @ w)
    assert M.precision(pred, target, average=None) == pytest.approx(prec.tolist())
    with pytest.raises(ValueError, match="binary"):
        M.f1_score(pred, target)  # three classes need an explicit average


def test_zero_division():
    assert M.precision([0, 0], [1, 0]) == 0.0  # no positive predictions
    assert M.precision([0, 0], [1, 0], zero_division=1.0) == 1.0
    assert M.recall([0, 0], [0, 0], zero_division=1.0) == 1.0
