"""Action similarity: the twelve distances, same/not-same SVM over folds, ROC plot."""

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial import distance

from c3d_extract.cli.svm import main as svm_main
from c3d_extract.errors import LabelsError
from c3d_extract.evaluation.similarity import (DISTANCES, evaluate_pairs, pair_distances,
                                               read_pairs_csv)
from tests.support.eval_helpers import l2_normalise, write_features, write_labels_csv


def _reference(a, b):
    """The twelve distances written out one by one, with scipy where it has them."""
    p, q = np.abs(a) / np.abs(a).sum(), np.abs(b) / np.abs(b).sum()
    chi2 = 0.5 * sum((x - y) ** 2 / (x + y) for x, y in zip(p, q) if x + y > 0)
    kl = float(np.sum((p + 1e-10) * np.log((p + 1e-10) / (q + 1e-10)))
               + np.sum((q + 1e-10) * np.log((q + 1e-10) / (p + 1e-10))))
    return {
        "l1": distance.cityblock(a, b), "l2": distance.euclidean(a, b),
        "sq_l2": distance.sqeuclidean(a, b), "cosine": distance.cosine(a, b),
        "correlation": distance.correlation(a, b), "chebyshev": distance.chebyshev(a, b),
        "canberra": distance.canberra(a, b), "braycurtis": distance.braycurtis(a, b),
        "chi2": chi2,
        "hellinger": distance.euclidean(np.sqrt(p), np.sqrt(q)) / np.sqrt(2),
        "intersection": 1 - sum(min(x, y) for x, y in zip(p, q)),
        "sym_kl": kl,
    }


def test_twelve_distances_match_independent_formulas():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 9))
    b = rng.normal(size=(5, 9))
    a[0, :3] = 0  # zero entries on both sides exercise Canberra's 0/0 terms
    b[0, :3] = 0
    got = pair_distances(a, b)
    assert got.shape == (5, 12) and len(DISTANCES) == 12
    for row in range(5):
        expected = _reference(a[row], b[row])
        for column, name in enumerate(DISTANCES):
            assert got[row, column] == pytest.approx(expected[name], rel=1e-6, abs=1e-9), name


def test_distances_of_identical_vectors_are_zero():
    a = l2_normalise(np.abs(np.random.default_rng(1).normal(size=(3, 16))))
    np.testing.assert_allclose(pair_distances(a, a), 0, atol=1e-6)


def _pairs_dataset(tmp_path, n_classes=6, per_class=8, n_folds=5, noise=0.35):
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(n_classes, 48))
    codes = np.repeat(np.arange(n_classes), per_class)
    layers = {}
    for layer, width in (("fc6", 48), ("fc7", 24)):
        raw = centres[codes][:, :width] + noise * rng.normal(size=(len(codes), width))
        layers[layer] = l2_normalise(np.maximum(raw, 0) + 0.01)
    ids = [f"videos/v{i:02d}.avi" for i in range(len(codes))]
    h5 = write_features(str(tmp_path / "f.h5"), ids, layers)
    rows = []
    for n in range(300):
        i = rng.integers(len(codes))
        same = n % 2 == 0
        candidates = np.flatnonzero((codes == codes[i]) != (not same))
        candidates = candidates[candidates != i]
        j = rng.choice(candidates)
        rows.append((f"v{i:02d}", f"v{j:02d}", int(same), n % n_folds + 1))
    pairs = write_labels_csv(str(tmp_path / "pairs.csv"), rows,
                             ("video_a", "video_b", "same", "fold"))
    return h5, pairs


def test_close_same_class_pairs_are_recognised(tmp_path):
    h5, pairs_path = _pairs_dataset(tmp_path)
    result = evaluate_pairs(h5, read_pairs_csv(pairs_path))
    assert result.layers == ("fc6", "fc7")
    assert len(result.folds) == 5 and sum(f.n_test for f in result.folds) == 300
    assert result.mean_accuracy > 0.8
    assert result.mean_auc > 0.9


def test_pairs_cli_with_roc_plot(tmp_path):
    h5, pairs_path = _pairs_dataset(tmp_path)
    png = tmp_path / "roc.png"
    result = CliRunner().invoke(svm_main, ["pairs", h5, pairs_path, "--layers", "fc6",
                                           "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "layers fc6, 12 distances each (12 features)" in result.output
    assert "leave-one-fold-out: accuracy" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_pairs_with_unknown_videos_fail_unless_allowed(tmp_path):
    h5, pairs_path = _pairs_dataset(tmp_path)
    with open(pairs_path, "a") as handle:
        handle.write("v01,ghost,1,1\n")
    with pytest.raises(LabelsError, match="'ghost'"):
        evaluate_pairs(h5, read_pairs_csv(pairs_path))
    result = evaluate_pairs(h5, read_pairs_csv(pairs_path), allow_missing=True)
    assert result.n_pairs == 301 and len(result.same) == 300
    assert "1 pairs left out" in result.dropped[0]


def test_malformed_pairs_file(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("video_a,video_b,same,fold\na,b,1,1\na,c,maybe,1\n")
    with pytest.raises(LabelsError, match="line 3: same must be 1 or 0"):
        read_pairs_csv(str(path))
    path.write_text("video_a,video_b,same,fold\na,b,1,one\n")
    with pytest.raises(LabelsError, match="line 2: fold must be an integer"):
        read_pairs_csv(str(path))
