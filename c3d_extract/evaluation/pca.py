"""PCA of descriptors: compactness (accuracy against dimensions), PCA files, reduced features.

The PCA file uses ActivityNet's layout: ``data/x_mean`` (D,), ``data/U``
(D, k, principal axes as columns, by decreasing variance) and ``data/S`` (k,
the variance along each axis, i.e. eigenvalues of the covariance matrix with
n - 1 in the denominator). A descriptor ``x`` becomes ``(x - x_mean) @ U[:, :dims]``.

Fitting reads the feature file in chunks. When there are fewer videos than
dimensions the centred data is decomposed by SVD; otherwise the D x D
covariance is accumulated chunk by chunk (float64) and diagonalised, so files
larger than memory can be fitted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.atomic_files import replaced_atomically
from c3d_extract.datasets.labels import Labels, MatchReport
from c3d_extract.errors import LabelsError, StoreError, UsageError
from c3d_extract.evaluation.labelled_features import (CHUNK_ROWS, load_labelled, match_feature_file,
                                                      split_rows)
from c3d_extract.evaluation.svm import SVMOptions, fit_in_memory
from c3d_extract.hdf5_checks import check_hdf5
from c3d_extract.store.layout import h5py_module
from c3d_extract.store.read import (iter_feature_chunks, read_attributes, read_clip_features,
                                    read_video_table)
from c3d_extract.store.records import WITH_FEATURES, RunParameters, VideoRecord
from c3d_extract.store.write import FeatureStore

PCA_FORMAT = "c3d-pca"
PCA_FORMAT_VERSION = 1
ACTIVITYNET_FORMAT = "activitynet-c3d-features"
#: The paper's UCF101 accuracy (fraction) after PCA to these dimensions (C3D fc6, linear SVM).
PAPER_UCF101_COMPACTNESS = ((10, 0.528), (50, 0.726), (100, 0.756), (500, 0.794))


@dataclass(frozen=True)
class PCAModel:
    """Principal axes of one layer's descriptors."""

    x_mean: np.ndarray   # (D,) float64
    U: np.ndarray        # (D, k) float64, orthonormal columns
    S: np.ndarray        # (k,) variance along each column of U
    total_variance: float
    n_samples: int
    layer: str = "fc6"
    weights: str = ""
    weights_sha256: str = ""

    @property
    def dims(self) -> int:
        return int(self.U.shape[1])

    def project(self, features: np.ndarray, dims: Optional[int] = None) -> np.ndarray:
        """``(x - x_mean) @ U[:, :dims]`` as float32."""
        dims = self.dims if dims is None else dims
        if not 1 <= dims <= self.dims:
            raise UsageError(f"the PCA has {self.dims} dimensions; cannot keep {dims}")
        if features.shape[1] != self.x_mean.shape[0]:
            raise UsageError(f"the PCA takes {self.x_mean.shape[0]}-d features, "
                             f"not {features.shape[1]}-d ones")
        centred = features.astype(np.float64) - self.x_mean
        return (centred @ self.U[:, :dims]).astype(np.float32)

    def explained_variance_ratio(self, dims: int) -> float:
        """Fraction of the total variance kept by the first ``dims`` axes."""
        if self.total_variance <= 0:
            return 0.0
        return float(self.S[:dims].sum() / self.total_variance)


def check_dims(dims: Sequence[int], n_samples: int, n_features: int) -> None:
    """Every requested dimension must be at most min(n_samples, n_features)."""
    limit = min(n_samples, n_features)
    too_many = [d for d in dims if d > limit]
    if too_many:
        raise UsageError(f"cannot keep {max(too_many)} dimensions: PCA on {n_samples} videos of "
                         f"{n_features}-d features has at most min({n_samples}, {n_features}) = "
                         f"{limit}")
    if any(d < 1 for d in dims):
        raise UsageError("dimensions must be positive")


def fit_pca(chunks: Callable[[], Iterable[np.ndarray]], n_samples: int, n_features: int,
            n_components: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(x_mean, U, S, total_variance)`` of the rows that ``chunks()`` yields.

    ``chunks`` is called once or twice (mean, then scatter); each call must yield
    the same rows.
    """
    check_dims([n_components], n_samples, n_features)
    if n_samples < 2:
        raise UsageError("PCA needs at least two videos")
    if n_samples <= n_features:
        data = np.concatenate([np.asarray(c, np.float64) for c in chunks()])
        mean = data.mean(axis=0)
        _, singular, axes = np.linalg.svd(data - mean, full_matrices=False)
        variance = singular ** 2 / (n_samples - 1)
        U = axes.T
        total = float(variance.sum())
    else:
        total_sum = np.zeros(n_features)
        for chunk in chunks():
            total_sum += np.asarray(chunk, np.float64).sum(axis=0)
        mean = total_sum / n_samples
        scatter = np.zeros((n_features, n_features))
        for chunk in chunks():
            centred = np.asarray(chunk, np.float64) - mean
            scatter += centred.T @ centred
        covariance = scatter / (n_samples - 1)
        variance, U = np.linalg.eigh(covariance)
        variance, U = variance[::-1], U[:, ::-1]
        total = float(np.trace(covariance))
    U = U[:, :n_components]
    # A deterministic sign: each axis's largest entry (by magnitude) is positive.
    signs = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])])
    signs[signs == 0] = 1
    return mean, U * signs, np.clip(variance[:n_components], 0, None), total


def fit_matrix(features: np.ndarray, n_components: int, **info) -> PCAModel:
    """A ``PCAModel`` of an in-memory matrix."""
    mean, U, S, total = fit_pca(lambda: [features], features.shape[0], features.shape[1],
                                n_components)
    return PCAModel(mean, U, S, total, features.shape[0], **info)


def fit_file(path: str, dims: int, *, layer: str = "fc6", labels: Optional[Labels] = None,
             allow_missing: bool = False, chunk_rows: int = CHUNK_ROWS) -> PCAModel:
    """Fit on the videos of a feature file that have features, read in chunks.

    With ``labels`` only the training split's videos (all labelled ones without a
    split column) are used.
    """
    table = read_video_table(path)
    if labels is None:
        use = np.isin(table["status"], WITH_FEATURES)
    else:
        match = match_feature_file(path, labels, allow_missing=allow_missing)
        chosen, _ = split_rows(match, "train")
        use = np.zeros(len(table["id"]), bool)
        use[match.rows[chosen]] = True
    attrs = read_attributes(path)

    def chunks() -> Iterator[np.ndarray]:
        start = 0
        for _, chunk in iter_feature_chunks(path, layer, chunk_rows):
            keep = use[start:start + len(chunk)]
            start += len(chunk)
            if keep.any():
                yield chunk[keep]

    mean, U, S, total = fit_pca(chunks, int(use.sum()), feature_dim(path, layer), dims)
    return PCAModel(mean, U, S, total, int(use.sum()), layer,
                    str(attrs.get("weights", "")), str(attrs.get("weights_sha256", "")))


def feature_dim(path: str, layer: str) -> int:
    """The width of ``features/<layer>``."""
    chunks = iter_feature_chunks(path, layer, 1)
    try:
        return int(next(chunks)[1].shape[1])
    except StopIteration:
        raise StoreError(f"{path} holds no videos") from None
    finally:
        chunks.close()


# ---------------------------------------------------------------- the PCA file

#: More bytes than HDF5's own records in a PCA or ActivityNet file, and than each of the
#: latter's groups (its name, attributes and dataset header).
_HDF5_OVERHEAD, _GROUP_OVERHEAD = 1 << 20, 1 << 14


def _atomic_h5(path: str, overwrite: bool, growth_bound: int,
               write: Callable[[object], None]) -> None:
    """Write an HDF5 file of at most ``growth_bound`` bytes through ``replaced_atomically``:
    a crash leaves the previous file whole, never a torn one."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"the output directory {directory} does not exist")
    if os.path.exists(path) and not overwrite:
        raise StoreError(f"{path} exists; pass --overwrite to replace it")
    with replaced_atomically(path, growth_bound) as temporary:
        with h5py_module().File(temporary, "w") as handle:
            write(handle)


def save_pca(model: PCAModel, path: str, *, overwrite: bool = False) -> None:
    """Write ``data/x_mean``, ``data/U``, ``data/S`` (ActivityNet's names) and their origin."""

    def write(handle) -> None:
        data = handle.create_group("data")
        data.create_dataset("x_mean", data=model.x_mean)
        data.create_dataset("U", data=model.U)
        data.create_dataset("S", data=model.S)
        handle.attrs.update({
            "format": PCA_FORMAT, "format_version": PCA_FORMAT_VERSION,
            "encoding-type": PCA_FORMAT, "encoding-version": str(PCA_FORMAT_VERSION),
            "layer": model.layer, "n_samples": model.n_samples,
            "total_variance": model.total_variance, "weights": model.weights,
            "weights_sha256": model.weights_sha256,
            "S_meaning": "variance along each column of U (covariance eigenvalues, ddof=1)",
        })

    _atomic_h5(path, overwrite, model.x_mean.nbytes + model.U.nbytes + model.S.nbytes
               + _HDF5_OVERHEAD, write)


def load_pca(path: str) -> PCAModel:
    """Read a PCA file written by ``save_pca`` (or any file with ``data/x_mean``, ``U``, ``S``)."""
    h5py = h5py_module()
    if not os.path.exists(path):
        raise StoreError(f"no such PCA file: {path}")
    try:
        with h5py.File(path, "r") as handle:
            check_hdf5(handle, path, StoreError, written=True)
            if not all(f"data/{name}" in handle for name in ("x_mean", "U", "S")):
                raise StoreError(f"{path} has no data/x_mean, data/U and data/S")
            _check_pca_shapes(handle, path)
            mean = handle["data/x_mean"][...].astype(np.float64).ravel()
            U = handle["data/U"][...].astype(np.float64)
            S = handle["data/S"][...].astype(np.float64).ravel()
            attrs = dict(handle.attrs)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise StoreError(f"cannot read {path} as HDF5: {error}") from None
    if not (np.isfinite(mean).all() and np.isfinite(U).all() and np.isfinite(S).all()):
        raise StoreError(f"{path}: data/x_mean, data/U or data/S holds NaN or infinite values")
    if U.ndim != 2 or U.shape[0] != mean.shape[0] or S.shape[0] < U.shape[1]:
        raise StoreError(f"{path}: data/U {U.shape}, data/x_mean {mean.shape} and data/S "
                         f"{S.shape} do not fit together")
    total = float(attrs.get("total_variance", S.sum()))
    return PCAModel(mean, U, S[:U.shape[1]], total, int(attrs.get("n_samples", 0)),
                    _text(attrs.get("layer", "fc6")), _text(attrs.get("weights", "")),
                    _text(attrs.get("weights_sha256", "")))


#: The widest features a PCA may take (the largest extractable layer, conv5b: 512 x 2 x 7 x 7,
#: has 50,176 values) and so the most components it may have.
MAX_PCA_INPUT_DIMS = 1 << 17


def _check_pca_shapes(handle, path: str) -> None:
    """The declared shapes fit a PCA before anything is read: U is (D, k) with k <= D, the
    mean has D values and S at least k; D is at most ``MAX_PCA_INPUT_DIMS``."""
    U, mean, S = (handle[f"data/{name}"] for name in ("U", "x_mean", "S"))
    mean_size = int(np.prod(mean.shape, dtype=object)) if mean.shape else 1
    S_size = int(np.prod(S.shape, dtype=object)) if S.shape else 1
    if (len(U.shape or ()) != 2 or not 1 <= U.shape[1] <= U.shape[0] <= MAX_PCA_INPUT_DIMS
            or mean_size != U.shape[0] or not U.shape[1] <= S_size <= MAX_PCA_INPUT_DIMS):
        raise StoreError(f"{path}: data/U {U.shape}, data/x_mean {mean.shape} and data/S "
                         f"{S.shape} do not fit together as a PCA of at most "
                         f"{MAX_PCA_INPUT_DIMS} input dimensions (U must be D x k, k <= D)")


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def pca_warnings(model: PCAModel, path: str, layer: str) -> List[str]:
    """Why projecting ``path``'s ``layer`` with this PCA may be meaningless (empty if fine)."""
    messages = []
    if layer != model.layer:
        messages.append(f"the PCA was fitted on {model.layer} features, these are {layer}")
    sha = str(read_attributes(path).get("weights_sha256", ""))
    if model.weights_sha256 and sha and sha != model.weights_sha256:
        messages.append(f"the PCA was fitted on features from other weights "
                        f"(sha256 {model.weights_sha256[:12]}..., {path}: {sha[:12]}...)")
    return messages


# ---------------------------------------------------------------- reduced files

def transform_file(model: PCAModel, features_path: str, output: str, *,
                   dims: Optional[int] = None, layer: Optional[str] = None,
                   overwrite: bool = False, chunk_rows: int = CHUNK_ROWS) -> int:
    """Write ``output`` in the extractor's layout with ``features/<layer>`` reduced to ``dims``.

    Videos without features keep zero rows, as in the extractor's files. Rows are
    the projections themselves (not L2-normalised again). Returns the number of
    videos written.
    """
    layer = layer or model.layer
    dims = model.dims if dims is None else dims
    if not 1 <= dims <= model.dims:
        raise UsageError(f"the PCA has {model.dims} dimensions; cannot keep {dims}")
    if os.path.abspath(output) == os.path.abspath(features_path):
        raise UsageError("the output must not be the input feature file")
    if os.path.exists(output) and not overwrite:
        raise StoreError(f"{output} exists; pass --overwrite to replace it")
    attrs = read_attributes(features_path)
    params = replace(RunParameters.from_attrs(attrs), layers=(layer,), per_clip=False)
    table = read_video_table(features_path)
    with FeatureStore(output, params, {layer: dims}, overwrite=True) as store:
        start = 0
        for ids, chunk in iter_feature_chunks(features_path, layer, chunk_rows):
            projected = model.project(chunk, dims)
            for i, video_id in enumerate(ids):
                row = start + i
                status = str(table["status"][row])
                store.add(VideoRecord(
                    id=video_id, status=status, error=str(table["error"][row]),
                    n_frames=int(table["n_frames"][row]), n_clips=int(table["n_clips"][row]),
                    fps=float(table["fps"][row]), width=int(table["width"][row]),
                    height=int(table["height"][row]),
                    features={layer: projected[i]} if status in WITH_FEATURES else {}))
            start += len(chunk)
        # The PCA's attributes go in with the commit: changed afterwards, in place, a
        # crash could tear the file.
        store.commit(complete=bool(attrs.get("complete", False)),
                     n_inputs=int(attrs.get("n_inputs", start)),
                     attrs={"pca_dims": dims, "pca_source_layer": model.layer,
                            "pca_note": "features are (x - x_mean) @ U[:, :pca_dims], "
                                        "not normalised"})
    return start


def activitynet_name(video_id: str) -> str:
    """``v_<id>`` from a feature id: its file name without extension, ``v_`` added once."""
    base = video_id.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base[1:] else base
    return stem if stem.startswith("v_") else f"v_{stem}"


def write_activitynet(model: PCAModel, features_path: str, output: str, *,
                      dims: Optional[int] = None, layer: Optional[str] = None,
                      overwrite: bool = False) -> int:
    """Per-clip features in ActivityNet's layout: ``v_<id>/c3d_features`` (clips x dims).

    Needs ``clips/<layer>`` (an extraction with ``--per-clip``). Clips are in
    start-frame order. Returns the number of videos written.
    """
    layer = layer or model.layer
    dims = model.dims if dims is None else dims
    video_row, start_frame, matrix = read_clip_features(features_path, layer)
    if matrix.ndim != 2:
        raise UsageError(f"{features_path} holds {matrix.shape[1]} crops per clip; the "
                         "ActivityNet layout has one row per clip: extract with --crops 1")
    ids = read_video_table(features_path)["id"]
    names = {}
    for row in np.unique(video_row):
        name = activitynet_name(str(ids[row]))
        if name in names:
            raise StoreError(f"videos {ids[names[name]]!r} and {ids[row]!r} both become "
                             f"{name!r} in the ActivityNet layout")
        names[name] = row
    projected = model.project(matrix, dims) if len(matrix) else matrix
    attrs = read_attributes(features_path)

    def write(handle) -> None:
        for name, row in names.items():
            mine = np.flatnonzero(video_row == row)
            mine = mine[np.argsort(start_frame[mine], kind="stable")]
            group = handle.create_group(name)
            group.create_dataset("c3d_features", data=projected[mine])
            group.attrs["video"] = str(ids[row])
            group.attrs["start_frame"] = start_frame[mine]
        handle.attrs.update({
            "format": ACTIVITYNET_FORMAT, "layer": layer, "pca_dims": dims,
            "clip_len": int(attrs.get("clip_len", 16)), "stride": int(attrs.get("stride", 8)),
            "weights": str(attrs.get("weights", "")),
            "weights_sha256": str(attrs.get("weights_sha256", "")),
        })

    _atomic_h5(output, overwrite, projected.nbytes + start_frame.nbytes
               + len(names) * _GROUP_OVERHEAD + _HDF5_OVERHEAD, write)
    return len(names)


# ---------------------------------------------------------------- compactness

@dataclass(frozen=True)
class CompactnessRow:
    dims: int
    explained_variance: float
    accuracy: float
    mean_class_accuracy: float


@dataclass(frozen=True)
class Compactness:
    rows: Tuple[CompactnessRow, ...]
    layer: str
    n_train: int
    n_test: int
    note: str
    report: MatchReport
    full_dims_accuracy: Optional[float] = None


def compactness(path: str, labels: Labels, dims: Sequence[int], *, layer: str = "fc6",
                options: SVMOptions = SVMOptions(), holdout: float = 0.3,
                allow_missing: bool = False, include_full: bool = True) -> Compactness:
    """Accuracy of a linear SVM after PCA to each of ``dims`` (PCA fitted on training videos).

    With a split column the train and test splits are used; without one a seeded
    stratified split keeps ``holdout`` of each class for testing.
    """
    if not 0 < holdout < 1:
        raise UsageError(f"holdout must be between 0 and 1, not {holdout}")
    options = replace(options, layer=layer)
    if labels.has_split:
        match = match_feature_file(path, labels, allow_missing=allow_missing)
        train = load_labelled(path, labels, layer=layer, split="train",
                              chunk_rows=options.chunk_rows, match=match)
        test = load_labelled(path, labels, layer=layer, split="test",
                             chunk_rows=options.chunk_rows, match=match)
        x_train, y_train, x_test, y_test = (train.features, train.codes, test.features,
                                            test.codes)
        note = f"train split ({len(y_train)} videos), test split ({len(y_test)} videos)"
        report = train.report
    else:
        data = load_labelled(path, labels, layer=layer, allow_missing=allow_missing,
                             chunk_rows=options.chunk_rows)
        x_train, x_test, y_train, y_test = _holdout_split(data.features, data.codes, holdout,
                                                          options.seed)
        note = (f"labels have no split column: seeded stratified "
                f"{round((1 - holdout) * 100)}/{round(holdout * 100)} split (seed "
                f"{options.seed}): {len(y_train)} train, {len(y_test)} test videos")
        report = data.report
    check_dims(dims, len(x_train), x_train.shape[1])
    model = fit_matrix(x_train, max(dims), layer=layer)
    rows = []
    for d in sorted(dims):
        rows.append(CompactnessRow(d, model.explained_variance_ratio(d),
                                   *_svm_scores(model.project(x_train, d), y_train,
                                                model.project(x_test, d), y_test, options)))
    full = None
    if include_full:
        full = _svm_scores(x_train, y_train, x_test, y_test, options)[0]
    return Compactness(tuple(rows), layer, len(y_train), len(y_test), note, report, full)


def _holdout_split(features: np.ndarray, codes: np.ndarray, holdout: float, seed: int):
    from sklearn.model_selection import train_test_split
    try:
        return train_test_split(features, codes, test_size=holdout, random_state=seed,
                                stratify=codes)
    except ValueError as error:
        raise LabelsError(f"cannot make a stratified {holdout:.0%} hold-out split: {error}; "
                          "add a split column to the labels") from None


def _svm_scores(x_train, y_train, x_test, y_test, options: SVMOptions) -> Tuple[float, float]:
    estimator, _, _ = fit_in_memory(x_train, y_train, options)
    predicted = estimator.predict(x_test)
    accuracy = float(np.mean(predicted == y_test))
    per_class = [np.mean(predicted[y_test == c] == c) for c in np.unique(y_test)]
    return accuracy, float(np.mean(per_class))
