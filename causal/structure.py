"""Global-structure scores of samples, computed without the model that drew them.

The lecture shows two failures as pictures; these scores put a number on each, higher is more like
held-out data:

- **toy sequences** (slides 18-20): the generator (:func:`causal.data.toy_sequences`) lays down
  at most three pieces, 8 to 32 positions wide, on a flat zero background. A model that sees 5
  past values cannot count the pieces it has drawn, nor tell how long it has been flat once 5
  equal values are behind it, so the *number of bumps* (maximal stretches above zero) and the
  *lengths of the flat stretches* (maximal runs of one value) are what it cannot reproduce. The
  score is ``1 - mean KS distance`` between those two distributions in the samples and in the
  test split (:func:`toy_structure`).
- **digits** (slides 23-25): "local consistency, but fragmentation". A logistic regression trained
  on the training split's digits is confident on a digit and, we expect, less so on a patchwork
  of strokes; the score is its mean top-class probability on the samples (:func:`DigitScorer`).
  Its value on the test split is the reference a perfect generator would reach.
"""

from dataclasses import dataclass

import numpy as np
import torch


def ks_distance(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov distance: the largest gap between the empirical CDFs of
    ``a`` and ``b`` (exact for discrete values: both CDFs are evaluated at every value seen)."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    if a.size == 0 or b.size == 0:
        return 1.0 if a.size != b.size else 0.0
    values = np.union1d(a, b)
    cdf_a = np.searchsorted(a, values, side="right") / a.size
    cdf_b = np.searchsorted(b, values, side="right") / b.size
    return float(np.abs(cdf_a - cdf_b).max())


def flat_stretches(x: torch.Tensor) -> np.ndarray:
    """Lengths of the maximal runs of one value in every sequence of ``x`` ``(N, T)``, pooled."""
    x = np.asarray(x)
    lengths = []
    for row in x:
        change = np.flatnonzero(np.diff(row)) + 1  # first index of every run but the first
        bounds = np.concatenate(([0], change, [row.size]))
        lengths.append(np.diff(bounds))
    return np.concatenate(lengths) if lengths else np.zeros(0, dtype=int)


def bumps(x: torch.Tensor) -> np.ndarray:
    """Per sequence of ``x`` ``(N, T)``, the number of maximal stretches above level 0."""
    above = np.asarray(x) > 0
    starts = above[:, 1:] & ~above[:, :-1]
    return starts.sum(1) + above[:, 0]


def toy_structure(samples: torch.Tensor, reference: torch.Tensor) -> dict:
    """``{"structure", "ks_flat_stretches", "ks_bumps", "mean_bumps"}`` of ``samples`` against
    ``reference`` (both ``(N, T)`` levels); ``structure`` is ``1 - mean of the two KS``."""
    ks_flat = ks_distance(flat_stretches(samples), flat_stretches(reference))
    ks_bumps = ks_distance(bumps(samples), bumps(reference))
    return {
        "structure": 1.0 - (ks_flat + ks_bumps) / 2,
        "ks_flat_stretches": ks_flat,
        "ks_bumps": ks_bumps,
        "mean_bumps": float(bumps(samples).mean()),
    }


@dataclass
class DigitScorer:
    """A logistic regression on the training digits (levels / top level, 64 features), and the
    scores of images under it. Deterministic: lbfgs from zero, no random state involved."""

    classifier: object
    top: float
    test_accuracy: float

    @classmethod
    def fit(cls, train: torch.Tensor, labels, test: torch.Tensor, test_labels, nb_classes: int):
        from sklearn.linear_model import LogisticRegression

        top = float(nb_classes - 1)
        classifier = LogisticRegression(max_iter=5000)
        with _one_blas_thread():
            classifier.fit(_features(train, top), np.asarray(labels))
            accuracy = float(classifier.score(_features(test, top), np.asarray(test_labels)))
        return cls(classifier, top, accuracy)

    def score(self, images: torch.Tensor) -> dict:
        """``{"structure": mean top-class probability, "confident": share above 0.9,
        "class_entropy_bits": entropy of the predicted classes (diversity)}``."""
        with _one_blas_thread():
            probs = self.classifier.predict_proba(_features(images, self.top))  # (N, 10)
        top = probs.max(1)
        counts = np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)
        nonzero = counts[counts > 0]
        return {
            "structure": float(top.mean()),
            "confident": float((top > 0.9).mean()),
            "class_entropy_bits": float(-(nonzero * np.log2(nonzero)).sum()),
        }


def _one_blas_thread():
    """On a busy machine, BLAS threads spinning against each other made this tiny fit take 8 s
    instead of 0.1 s; one thread is also one summation order, so the scores reproduce."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _features(images: torch.Tensor, top: float) -> np.ndarray:
    return np.asarray(images, dtype=np.float64).reshape(len(images), -1) / top
