"""Linear SVMs on video descriptors: train, choose C, cross-validate, evaluate, predict, save.

The paper's protocol is a one-vs-rest linear SVM on the L2-normalised fc6
descriptor (sklearn ``LinearSVC``). For files larger than memory the ``sgd``
solver trains ``SGDClassifier(loss="hinge")`` with ``partial_fit`` over chunks
of the feature file; its regularisation ``alpha`` is ``1 / (C * n_train)``,
the same objective as ``LinearSVC``'s up to scale.

Models are saved with skops, together with the layer, the class names, the
feature file's weights and their sha256, so that using a model on features of
another layer or other weights can be noticed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from c3d_extract.atomic_files import write_atomically
from c3d_extract.datasets.labels import Labels, MatchReport
from c3d_extract.errors import LabelsError, StoreError, UsageError
from c3d_extract.evaluation.labelled_features import (CHUNK_ROWS, iter_labelled_chunks,
                                                      load_labelled, match_feature_file, split_rows)
from c3d_extract.store.read import iter_feature_chunks, read_attributes, read_video_table
from c3d_extract.store.records import WITH_FEATURES

SOLVERS = ("linear", "sgd")
DEFAULT_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
MODEL_FORMAT = "c3d-svm"
MODEL_FORMAT_VERSION = 1
#: Types a model file may contain beyond those skops trusts by default.
TRUSTED_TYPES = frozenset({
    "sklearn.svm._classes.LinearSVC",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "numpy.ndarray", "numpy.dtype", "numpy.float64", "numpy.float32", "numpy.int64",
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.float",
    "builtins.int", "builtins.bool", "builtins.NoneType",
})
_ESTIMATOR_TYPES = ("LinearSVC", "SGDClassifier")


@dataclass(frozen=True)
class SVMOptions:
    """How to train: layer, C (None: choose from ``grid`` by stratified k-fold CV), solver."""

    layer: str = "fc6"
    C: Optional[float] = 1.0
    grid: Tuple[float, ...] = DEFAULT_GRID
    folds: int = 5
    solver: str = "linear"
    epochs: int = 5          # passes over the file with the sgd solver
    seed: int = 0
    max_iter: int = 10000
    chunk_rows: int = CHUNK_ROWS

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise UsageError(f"solver must be one of {', '.join(SOLVERS)}, not {self.solver!r}")
        if self.C is not None and not self.C > 0:
            raise UsageError(f"C must be positive, not {self.C}")
        if not self.grid or any(not c > 0 for c in self.grid):
            raise UsageError("every C of the grid must be positive")
        if self.folds < 2:
            raise UsageError(f"folds must be at least 2, not {self.folds}")
        if self.epochs < 1:
            raise UsageError(f"epochs must be at least 1, not {self.epochs}")
        if self.C is None and self.solver == "sgd":
            raise UsageError("--C auto needs the linear solver; give the sgd solver a number")


@dataclass(frozen=True)
class SVMModel:
    """A trained classifier and what it was trained on."""

    estimator: Any
    layer: str
    classes: Tuple[str, ...]
    C: float
    solver: str
    weights: str
    weights_sha256: str
    n_train: int
    dim: int

    def predict(self, features: np.ndarray) -> Tuple[List[str], np.ndarray]:
        """Class names and the winning decision value of every row."""
        if features.shape[1] != self.dim:
            raise UsageError(f"the model takes {self.dim}-d {self.layer} features, "
                             f"not {features.shape[1]}-d ones")
        codes = self.estimator.predict(features)
        scores = self.estimator.decision_function(features)
        best = scores.max(axis=1) if scores.ndim == 2 else np.abs(scores)
        return [self.classes[int(code)] for code in codes], best


@dataclass(frozen=True)
class GridSearch:
    """Mean and spread of the cross-validated accuracy of each C, and the one chosen."""

    folds: int
    C: Tuple[float, ...]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    best: float
    note: str = ""


@dataclass(frozen=True)
class TrainResult:
    model: SVMModel
    grid: Optional[GridSearch]
    note: str
    report: MatchReport
    warnings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class CVResult:
    folds: int
    accuracies: Tuple[float, ...]
    mean_class_accuracies: Tuple[float, ...]
    C: float
    note: str
    report: MatchReport
    warnings: Tuple[str, ...] = ()

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


@dataclass(frozen=True)
class ClassScore:
    name: str
    n: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    mean_class_accuracy: float
    per_class: Tuple[ClassScore, ...]
    confusion: np.ndarray      # (k, k) counts, rows true, columns predicted
    classes: Tuple[str, ...]   # order of the confusion rows and columns
    ids: Tuple[str, ...]
    truth: Tuple[str, ...]
    predicted: Tuple[str, ...]
    note: str
    report: MatchReport
    warnings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Predictions:
    ids: Tuple[str, ...]
    labels: Tuple[str, ...]
    scores: np.ndarray
    without_features: Tuple[Tuple[str, str], ...]  # (id, status) of videos not predicted
    warnings: Tuple[str, ...] = ()


# ---------------------------------------------------------------- fitting

def _linear_svc(C: float, options: SVMOptions):
    from sklearn.svm import LinearSVC
    return LinearSVC(C=C, max_iter=options.max_iter, random_state=options.seed)


class _CollectWarnings:
    """Collect sklearn's convergence warnings as messages instead of letting them print."""

    def __init__(self) -> None:
        self.messages: List[str] = []

    def __enter__(self) -> "_CollectWarnings":
        self._context = warnings.catch_warnings(record=True)
        self._caught = self._context.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)
        for item in self._caught:
            message = str(item.message).split("\n")[0]
            if message not in self.messages:
                self.messages.append(message)


def _check_classes(codes: np.ndarray, what: str) -> None:
    if len(np.unique(codes)) < 2:
        raise LabelsError(f"{what} has videos of fewer than two classes; a classifier needs two")


def stratified_folds(codes: np.ndarray, folds: int,
                     seed: int) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], str]:
    """Stratified k-fold ``(train, test)`` index pairs; fewer folds when a class is too small."""
    from sklearn.model_selection import StratifiedKFold
    _, counts = np.unique(codes, return_counts=True)
    smallest = int(counts.min())
    note = ""
    if smallest < folds:
        if smallest < 2:
            raise LabelsError("a class has a single video: cross-validation needs at least two "
                              "per class")
        note = (f"{folds} folds asked for, but the smallest class has {smallest} videos: "
                f"using {smallest} folds")
        folds = smallest
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(codes)), codes)), note


def choose_C(features: np.ndarray, codes: np.ndarray, options: SVMOptions) -> GridSearch:
    """The C of ``options.grid`` with the best mean stratified k-fold accuracy (ties: smaller C)."""
    splits, note = stratified_folds(codes, options.folds, options.seed)
    means, stds = [], []
    for C in options.grid:
        scores = []
        for train, test in splits:
            estimator = _linear_svc(C, options).fit(features[train], codes[train])
            scores.append(float(np.mean(estimator.predict(features[test]) == codes[test])))
        means.append(float(np.mean(scores)))
        stds.append(float(np.std(scores)))
    best = options.grid[int(np.argmax(means))]
    return GridSearch(len(splits), tuple(options.grid), tuple(means), tuple(stds), best, note)


def fit_in_memory(features: np.ndarray, codes: np.ndarray, options: SVMOptions
                  ) -> Tuple[Any, Optional[GridSearch], float]:
    """A ``LinearSVC`` on one matrix; C chosen by CV when ``options.C`` is None."""
    _check_classes(codes, "the training set")
    grid = choose_C(features, codes, options) if options.C is None else None
    C = grid.best if grid is not None else float(options.C)
    return _linear_svc(C, options).fit(features, codes), grid, C


def train(path: str, labels: Labels, options: SVMOptions = SVMOptions(), *,
          allow_missing: bool = False) -> TrainResult:
    """Train on the ``train`` split of ``labels`` (all labelled videos when there is no split)."""
    attrs = read_attributes(path)
    collected = _CollectWarnings()
    grid = None
    if options.solver == "linear":
        data = load_labelled(path, labels, layer=options.layer, split="train",
                             allow_missing=allow_missing, chunk_rows=options.chunk_rows)
        with collected:
            estimator, grid, C = fit_in_memory(data.features, data.codes, options)
        dim, n_train, note, report = data.features.shape[1], len(data.codes), data.note, \
            data.report
    else:
        match = match_feature_file(path, labels, allow_missing=allow_missing)
        chosen, note = split_rows(match, "train")
        C = float(options.C)  # type: ignore[arg-type]
        with collected:
            estimator, dim = _fit_sgd(path, match, chosen, C, options)
        n_train, report = len(chosen), match.report
    model = SVMModel(estimator, options.layer, tuple(labels.classes), C, options.solver,
                     str(attrs.get("weights", "")), str(attrs.get("weights_sha256", "")),
                     n_train, dim)
    return TrainResult(model, grid, note, report, tuple(collected.messages))


def _fit_sgd(path: str, match, chosen: np.ndarray, C: float, options: SVMOptions):
    from sklearn.linear_model import SGDClassifier
    codes = match.codes[chosen]
    _check_classes(codes, "the training set")
    classes = np.unique(codes)
    estimator = SGDClassifier(loss="hinge", alpha=1.0 / (C * len(chosen)),
                              random_state=options.seed)
    rng = np.random.default_rng(options.seed)
    dim = 0
    for _ in range(options.epochs):
        for features, chunk_codes in iter_labelled_chunks(path, match, chosen,
                                                          layer=options.layer,
                                                          chunk_rows=options.chunk_rows):
            order = rng.permutation(len(chunk_codes))
            estimator.partial_fit(features[order], chunk_codes[order], classes=classes)
            dim = features.shape[1]
    return estimator, dim


def cross_validate(path: str, labels: Labels, options: SVMOptions = SVMOptions(), *,
                   allow_missing: bool = False) -> CVResult:
    """Stratified k-fold accuracy of a ``LinearSVC`` with a fixed C over every labelled video."""
    if options.C is None:
        raise UsageError("cv takes a number for --C (train --C auto chooses one)")
    data = load_labelled(path, labels, layer=options.layer, split=None,
                         allow_missing=allow_missing, chunk_rows=options.chunk_rows)
    _check_classes(data.codes, "the labelled set")
    splits, note = stratified_folds(data.codes, options.folds, options.seed)
    accuracies, class_accuracies = [], []
    collected = _CollectWarnings()
    with collected:
        for train_rows, test_rows in splits:
            estimator = _linear_svc(float(options.C), options)
            estimator.fit(data.features[train_rows], data.codes[train_rows])
            predicted = estimator.predict(data.features[test_rows])
            truth = data.codes[test_rows]
            accuracies.append(float(np.mean(predicted == truth)))
            class_accuracies.append(float(np.mean([np.mean(predicted[truth == c] == c)
                                                   for c in np.unique(truth)])))
    notes = "; ".join(n for n in (data.note, note) if n)
    return CVResult(len(splits), tuple(accuracies), tuple(class_accuracies), float(options.C),
                    notes, data.report, tuple(collected.messages))


# ---------------------------------------------------------------- using a model

def compatibility_warnings(model: SVMModel, path: str, layer: str) -> List[str]:
    """Why the model's scores on ``path``'s ``layer`` may be meaningless (empty if fine)."""
    attrs = read_attributes(path)
    messages = []
    if layer != model.layer:
        messages.append(f"the model was trained on {model.layer} features, these are {layer}")
    sha = str(attrs.get("weights_sha256", ""))
    if model.weights_sha256 and sha and sha != model.weights_sha256:
        messages.append(
            f"the model was trained on features from weights {model.weights!r} "
            f"(sha256 {model.weights_sha256[:12]}...), but {path} was extracted with "
            f"{attrs.get('weights')!r} (sha256 {sha[:12]}...): its scores mean nothing here")
    return messages


def evaluate(model: SVMModel, path: str, labels: Labels, *, layer: Optional[str] = None,
             allow_missing: bool = False, chunk_rows: int = CHUNK_ROWS) -> Evaluation:
    """Score the model on the ``test`` split (all labelled videos when there is no split)."""
    layer = layer or model.layer
    messages = compatibility_warnings(model, path, layer)
    data = load_labelled(path, labels, layer=layer, split="test", allow_missing=allow_missing,
                         chunk_rows=chunk_rows)
    predicted, _ = model.predict(data.features)
    truth = [data.classes[int(code)] for code in data.codes]
    order = list(data.classes) + [c for c in model.classes if c not in data.classes]
    index = {name: i for i, name in enumerate(order)}
    confusion = np.zeros((len(order), len(order)), np.int64)
    for true_name, predicted_name in zip(truth, predicted):
        confusion[index[true_name], index[predicted_name]] += 1
    per_class = tuple(ClassScore(name, int(confusion[i].sum()), int(confusion[i, i]))
                      for i, name in enumerate(order) if confusion[i].sum())
    accuracy = float(np.trace(confusion) / confusion.sum())
    mean_class = float(np.mean([score.accuracy for score in per_class]))
    return Evaluation(accuracy, mean_class, per_class, confusion, tuple(order), data.ids,
                      tuple(truth), tuple(predicted), data.note, data.report, tuple(messages))


def predict(model: SVMModel, path: str, *, layer: Optional[str] = None,
            chunk_rows: int = CHUNK_ROWS) -> Predictions:
    """Predict every video of ``path`` that has features; the others are listed, not guessed."""
    layer = layer or model.layer
    messages = compatibility_warnings(model, path, layer)
    status = read_video_table(path)["status"]
    ids: List[str] = []
    names: List[str] = []
    scores: List[np.ndarray] = []
    without: List[Tuple[str, str]] = []
    start = 0
    for chunk_ids, chunk in iter_feature_chunks(path, layer, chunk_rows):
        keep = np.isin(status[start:start + len(chunk)], WITH_FEATURES)
        without.extend((chunk_ids[i], str(status[start + i])) for i in np.flatnonzero(~keep))
        if keep.any():
            chunk_names, chunk_scores = model.predict(chunk[keep])
            ids.extend(chunk_ids[i] for i in np.flatnonzero(keep))
            names.extend(chunk_names)
            scores.append(chunk_scores)
        start += len(chunk)
    return Predictions(tuple(ids), tuple(names),
                       np.concatenate(scores) if scores else np.zeros(0), tuple(without),
                       tuple(messages))


# ---------------------------------------------------------------- files

def save_model(model: SVMModel, path: str) -> None:
    """Write the model with skops (no pickle), atomically (``write_atomically``)."""
    import skops.io as sio
    payload: Dict[str, Any] = {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
        "estimator": model.estimator, "layer": model.layer, "classes": list(model.classes),
        "C": float(model.C), "solver": model.solver, "weights": model.weights,
        "weights_sha256": model.weights_sha256, "n_train": int(model.n_train),
        "dim": int(model.dim),
    }
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"the output directory {directory} does not exist")
    write_atomically(path, sio.dumps(payload))  # a crash leaves the previous model whole


#: The most bytes a c3d-svm model file's members may inflate to (a model of 100,000 classes
#: over 50,000 dimensions is 40 GB: far beyond; ours are a few MB).
MAX_MODEL_BYTES = 1 << 30


def _check_skops_archive(path: str) -> None:
    """Before skops reads ``schema.json``: the file is a zip archive whose members are stored
    or deflated with bounded sizes (``pickle_scan.check_zip_members``)."""
    import zipfile

    from c3d_extract.weights.pickle_scan import check_zip_members, starts_with_zip

    try:
        if not starts_with_zip(path):
            raise StoreError(f"{path} is not a skops model file (not a zip archive)")
        with zipfile.ZipFile(path) as archive:
            total = check_zip_members(archive, path, StoreError)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise StoreError(f"{path} is not a skops model file: {error}") from None
    if total > MAX_MODEL_BYTES:
        raise StoreError(f"refusing to read {path}: its members declare {total} bytes")


def load_model(path: str) -> SVMModel:
    """Read a model saved by ``save_model``, trusting only the types such a model holds."""
    import skops.io as sio
    if not os.path.exists(path):
        raise StoreError(f"no such model file: {path}")
    _check_skops_archive(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as error:  # skops raises several types for files that are not its own
        raise StoreError(f"{path} is not a skops model file: {error}") from None
    unexpected = sorted(set(untrusted) - TRUSTED_TYPES)
    if unexpected:
        raise StoreError(f"{path} holds types a c3d-svm model never contains, so it is not "
                         f"loaded: {', '.join(unexpected)}")
    try:
        payload = sio.load(path, trusted=list(untrusted))
    except Exception as error:
        raise StoreError(f"cannot load {path}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise StoreError(f"{path} is not a c3d-svm model")
    if payload.get("format_version") != MODEL_FORMAT_VERSION:
        raise StoreError(f"{path} has model format version {payload.get('format_version')}; "
                         f"this version reads {MODEL_FORMAT_VERSION}")
    estimator = payload["estimator"]
    if type(estimator).__name__ not in _ESTIMATOR_TYPES:
        raise StoreError(f"{path} holds a {type(estimator).__name__}, not a linear SVM")
    return SVMModel(estimator, str(payload["layer"]), tuple(payload["classes"]),
                    float(payload["C"]), str(payload["solver"]), str(payload["weights"]),
                    str(payload["weights_sha256"]), int(payload["n_train"]),
                    int(payload["dim"]))
