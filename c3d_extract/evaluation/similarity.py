"""Action similarity (ASLAN protocol): same / not-same classification of video pairs.

For every layer in the feature file (the paper: prob, fc7, fc6, pool5) each
pair's two video descriptors (already averaged and L2-normalised by the
extractor) give the twelve distances of ``DISTANCES``; all of them, over all
layers, form the pair's feature vector. Each is standardised to zero mean and
unit variance on the training folds, a linear SVM separates same from
not-same, and the folds are left out one at a time. Accuracy and ROC AUC are
reported per fold and averaged.

The twelve distances between descriptors ``a`` and ``b``; the histogram
distances (9-12) use ``p = |a| / sum|a|`` and ``q = |b| / sum|b|``:

 1. ``l1``           sum |a - b|
 2. ``l2``           sqrt(sum (a - b)^2)
 3. ``sq_l2``        sum (a - b)^2
 4. ``cosine``       1 - a.b / (|a| |b|)
 5. ``correlation``  1 - Pearson correlation of a and b
 6. ``chebyshev``    max |a - b|
 7. ``canberra``     sum |a - b| / (|a| + |b|)   (0/0 terms count 0)
 8. ``braycurtis``   sum |a - b| / sum |a + b|
 9. ``chi2``         1/2 sum (p - q)^2 / (p + q)
10. ``hellinger``    sqrt(1 - sum sqrt(p q))      (Bhattacharyya-based)
11. ``intersection`` 1 - sum min(p, q)
12. ``sym_kl``       sum (p - q) log(p / q), with 1e-10 added to p and q
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.datasets.labels import IdResolver, examples, read_csv_table
from c3d_extract.errors import LabelsError
from c3d_extract.store.read import read_attributes, read_features, read_video_table
from c3d_extract.store.records import WITH_FEATURES

DISTANCES = ("l1", "l2", "sq_l2", "cosine", "correlation", "chebyshev", "canberra",
             "braycurtis", "chi2", "hellinger", "intersection", "sym_kl")
_TINY = 1e-12
_KL_EPS = 1e-10
_TRUE = {"1", "true", "yes", "same", "y", "t"}
_FALSE = {"0", "false", "no", "not same", "not-same", "different", "n", "f", "-1"}


@dataclass(frozen=True)
class Pairs:
    """Video pairs: names as written in the pairs file, same (bool) and fold."""

    video_a: Tuple[str, ...]
    video_b: Tuple[str, ...]
    same: np.ndarray   # bool
    fold: np.ndarray   # int64
    source: str


def read_pairs_csv(path: str) -> Pairs:
    """``video_a,video_b,same,fold``: same is 1/0 (or true/false, same/different)."""
    rows = read_csv_table(path, ("video_a", "video_b", "same", "fold"))
    a, b, same, fold = [], [], [], []
    for line, row in rows:
        if not row["video_a"] or not row["video_b"]:
            raise LabelsError(f"{path} line {line}: empty video name")
        value = row["same"].lower()
        if value not in _TRUE | _FALSE:
            raise LabelsError(f"{path} line {line}: same must be 1 or 0, not {row['same']!r}")
        try:
            fold.append(int(row["fold"]))
        except ValueError:
            raise LabelsError(f"{path} line {line}: fold must be an integer, "
                              f"not {row['fold']!r}") from None
        a.append(row["video_a"])
        b.append(row["video_b"])
        same.append(value in _TRUE)
    if not rows:
        raise LabelsError(f"{path} has a header but no pairs")
    return Pairs(tuple(a), tuple(b), np.asarray(same, bool), np.asarray(fold, np.int64), path)


def pair_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n, 12)``: the distances of ``DISTANCES`` between rows of ``a`` and ``b``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    diff = a - b
    absdiff = np.abs(diff)
    norm_a = np.linalg.norm(a, axis=1)
    norm_b = np.linalg.norm(b, axis=1)
    cosine = 1 - (a * b).sum(1) / np.maximum(norm_a * norm_b, _TINY)
    ca, cb = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    correlation = 1 - (ca * cb).sum(1) / np.maximum(
        np.linalg.norm(ca, axis=1) * np.linalg.norm(cb, axis=1), _TINY)
    denominator = np.abs(a) + np.abs(b)
    canberra = np.where(denominator > 0, absdiff / np.where(denominator > 0, denominator, 1),
                        0).sum(1)
    braycurtis = absdiff.sum(1) / np.maximum(np.abs(a + b).sum(1), _TINY)
    p = np.abs(a) / np.maximum(np.abs(a).sum(1, keepdims=True), _TINY)
    q = np.abs(b) / np.maximum(np.abs(b).sum(1, keepdims=True), _TINY)
    pq = p + q
    chi2 = 0.5 * np.where(pq > 0, (p - q) ** 2 / np.where(pq > 0, pq, 1), 0).sum(1)
    hellinger = np.sqrt(np.clip(1 - np.sqrt(p * q).sum(1), 0, None))
    intersection = 1 - np.minimum(p, q).sum(1)
    pe, qe = p + _KL_EPS, q + _KL_EPS
    sym_kl = ((pe - qe) * np.log(pe / qe)).sum(1)
    squared = (diff ** 2).sum(1)
    return np.stack([absdiff.sum(1), np.sqrt(squared), squared, cosine, correlation,
                     absdiff.max(1), canberra, braycurtis, chi2, hellinger, intersection,
                     sym_kl], axis=1)


@dataclass(frozen=True)
class FoldScore:
    fold: int
    n_test: int
    accuracy: float
    auc: float


@dataclass(frozen=True)
class PairsResult:
    layers: Tuple[str, ...]
    folds: Tuple[FoldScore, ...]
    scores: np.ndarray   # out-of-fold SVM decision value of every pair used
    same: np.ndarray     # bool, truth of those pairs
    fold_of: np.ndarray  # fold of those pairs
    n_pairs: int
    dropped: Tuple[str, ...]  # messages about pairs left out

    @property
    def mean_accuracy(self) -> float:
        return float(np.mean([f.accuracy for f in self.folds]))

    @property
    def mean_auc(self) -> float:
        return float(np.nanmean([f.auc for f in self.folds]))

    @property
    def std_accuracy(self) -> float:
        return float(np.std([f.accuracy for f in self.folds]))


def pair_features(path: str, pairs: Pairs, layers: Optional[Sequence[str]] = None, *,
                  allow_missing: bool = False) -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...],
                                                        List[str]]:
    """``(X, used, layers, dropped)``: 12 distances per layer for the usable pairs.

    ``used`` indexes the pairs that have both videos with features.
    """
    attrs = read_attributes(path)
    available = tuple(str(attrs.get("layers", "fc6")).split(","))
    layers = tuple(layers) if layers else available
    missing_layers = [layer for layer in layers if layer not in available]
    if missing_layers:
        raise LabelsError(f"{path} has no layer {', '.join(missing_layers)} "
                          f"(it has {', '.join(available)})")
    table = read_video_table(path)
    resolver = IdResolver(list(table["id"]))
    has_features = np.isin(table["status"], WITH_FEATURES)
    rows_a = np.array([resolver.resolve(v) for v in pairs.video_a], np.int64)
    rows_b = np.array([resolver.resolve(v) for v in pairs.video_b], np.int64)
    problems: Dict[str, List[str]] = {}
    for names, rows in ((pairs.video_a, rows_a), (pairs.video_b, rows_b)):
        for name, row in zip(names, rows):
            if row == IdResolver.NOT_FOUND:
                problems.setdefault("match no video in the feature file", []).append(name)
            elif row == IdResolver.AMBIGUOUS:
                problems.setdefault("match several videos by file name", []).append(name)
            elif not has_features[row]:
                problems.setdefault("have no features (failed or skipped)", []).append(name)
    usable = (rows_a >= 0) & (rows_b >= 0)
    usable[usable] &= has_features[rows_a[usable]] & has_features[rows_b[usable]]
    used = np.flatnonzero(usable)
    dropped = [f"{len(set(names))} videos named in pairs {what} (e.g. "
               f"{examples(sorted(set(names)))}); {len(pairs.same) - len(used)} pairs left out"
               for what, names in problems.items()]
    if dropped and not allow_missing:
        raise LabelsError("pairs and features do not match:\n  " + "\n  ".join(dropped)
                          + "\npass --allow-missing to go on without these pairs")
    if not len(used):
        raise LabelsError("no pair has features for both of its videos")
    blocks = []
    for layer in layers:
        _, matrix = read_features(path, layer)
        blocks.append(pair_distances(matrix[rows_a[used]], matrix[rows_b[used]]))
    return np.concatenate(blocks, axis=1), used, layers, dropped


def evaluate_pairs(path: str, pairs: Pairs, layers: Optional[Sequence[str]] = None, *,
                   C: float = 1.0, allow_missing: bool = False, seed: int = 0) -> PairsResult:
    """Leave-one-fold-out same/not-same accuracy and ROC AUC of a linear SVM on distances."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC
    features, used, layers, dropped = pair_features(path, pairs, layers,
                                                    allow_missing=allow_missing)
    same, fold_of = pairs.same[used], pairs.fold[used]
    folds = np.unique(fold_of)
    if len(folds) < 2:
        raise LabelsError("pairs need at least two folds for leave-one-fold-out evaluation")
    scores = np.zeros(len(used))
    results = []
    for fold in folds:
        test = fold_of == fold
        train = ~test
        if len(np.unique(same[train])) < 2:
            raise LabelsError(f"the training folds without fold {fold} hold only "
                              f"{'same' if same[train][0] else 'not-same'} pairs")
        scaler = StandardScaler().fit(features[train])
        svm = LinearSVC(C=C, max_iter=10000, random_state=seed)
        svm.fit(scaler.transform(features[train]), same[train])
        decision = svm.decision_function(scaler.transform(features[test]))
        scores[test] = decision
        accuracy = float(np.mean((decision > 0) == same[test]))
        auc = (float(roc_auc_score(same[test], decision)) if len(np.unique(same[test])) == 2
               else float("nan"))
        results.append(FoldScore(int(fold), int(test.sum()), accuracy, auc))
    return PairsResult(tuple(layers), tuple(results), scores, same, fold_of, len(pairs.same),
                       tuple(dropped))
