"""PCA: compactness table, PCA files, reduced and ActivityNet-layout features, t-SNE."""

import csv

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.decomposition import PCA

from c3d_extract.cli.pca import main as pca_main
from c3d_extract.datasets.labels import read_labels_csv
from c3d_extract.errors import UsageError
from c3d_extract.evaluation.pca import compactness, fit_file, fit_matrix, load_pca, save_pca
from c3d_extract.store.read import read_attributes, read_features, read_video_table
from tests.support.eval_helpers import blobs, write_features, write_labels_csv


def _same_up_to_sign(actual, expected, atol=1e-4):
    """Principal axes are defined up to sign: compare column by column."""
    for j in range(expected.shape[1]):
        sign = np.sign(np.dot(actual[:, j], expected[:, j])) or 1.0
        np.testing.assert_allclose(actual[:, j] * sign, expected[:, j], atol=atol)


@pytest.mark.parametrize("n_samples, dim", [(30, 50), (200, 12)])  # SVD and covariance paths
def test_fit_matches_sklearn(n_samples, dim):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n_samples, dim)) @ rng.normal(size=(dim, dim))
    data = data.astype(np.float32)
    k = 8
    model = fit_matrix(data, k)
    reference = PCA(n_components=k, svd_solver="full").fit(data.astype(np.float64))
    np.testing.assert_allclose(model.x_mean, reference.mean_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.S, reference.explained_variance_, rtol=1e-4)
    np.testing.assert_allclose(
        [model.explained_variance_ratio(d) for d in range(1, k + 1)],
        np.cumsum(reference.explained_variance_ratio_), rtol=1e-4)
    _same_up_to_sign(model.project(data), reference.transform(data), atol=1e-3)
    np.testing.assert_allclose(model.U.T @ model.U, np.eye(k), atol=1e-8)


def test_explained_variance_grows_with_dims():
    rng = np.random.default_rng(1)
    model = fit_matrix(rng.normal(size=(60, 40)).astype(np.float32), 40)
    ratios = [model.explained_variance_ratio(d) for d in range(1, 41)]
    assert all(b >= a for a, b in zip(ratios, ratios[1:]))
    assert ratios[-1] == pytest.approx(1.0)


def test_too_many_dims_is_a_clear_error(tmp_path):
    features, _ = blobs(5, 2, 16)
    with pytest.raises(UsageError, match=r"min\(10, 16\) = 10"):
        fit_matrix(features, 11)
    h5 = write_features(str(tmp_path / "f.h5"), [f"v{i}" for i in range(10)], {"fc6": features})
    result = CliRunner().invoke(pca_main, ["fit", h5, "--dims", "500",
                                           "-o", str(tmp_path / "p.h5")])
    assert result.exit_code == 2 and "cannot keep 500 dimensions" in result.output


def _dataset(tmp_path, n_per_class=24, dim=40, splits=True):
    features, codes = blobs(n_per_class, 3, dim, spread=1.0, seed=4)
    ids = [f"v{i:03d}.mp4" for i in range(len(codes))]
    h5 = write_features(str(tmp_path / "f.h5"), ids, {"fc6": features})
    split = ["test" if i % 3 == 0 else "train" for i in range(len(codes))]
    if splits:
        rows = [(f"v{i:03d}", f"c{c}", s) for i, (c, s) in enumerate(zip(codes, split))]
        labels = write_labels_csv(str(tmp_path / "labels.csv"), rows)
    else:
        rows = [(f"v{i:03d}", f"c{c}") for i, c in enumerate(codes)]
        labels = write_labels_csv(str(tmp_path / "labels.csv"), rows, ("video", "label"))
    return h5, labels, features, codes, np.array(split)


def test_compactness_fits_pca_on_training_videos_only(tmp_path):
    h5, labels, features, codes, split = _dataset(tmp_path)
    result = compactness(h5, read_labels_csv(labels), [2, 5, 20])
    assert [row.dims for row in result.rows] == [2, 5, 20]
    reference = PCA(n_components=20).fit(features[split == "train"].astype(np.float64))
    expected = np.cumsum(reference.explained_variance_ratio_)[[1, 4, 19]]
    np.testing.assert_allclose([row.explained_variance for row in result.rows], expected,
                               rtol=1e-4)
    assert result.rows[-1].accuracy == 1.0
    assert result.n_train == int((split == "train").sum())


def test_compactness_without_split_says_how_it_split(tmp_path):
    h5, labels, *_ = _dataset(tmp_path, splits=False)
    result = compactness(h5, read_labels_csv(labels), [3])
    assert "seeded stratified 70/30 split (seed 0)" in result.note
    assert result.n_test == 22 and result.n_train == 50


def test_readme_example_runs_as_written(tmp_path):
    h5, labels, *_ = _dataset(tmp_path, n_per_class=260, dim=600)
    runner = CliRunner()
    out_csv, png = tmp_path / "table.csv", tmp_path / "compactness.png"
    result = runner.invoke(pca_main, [h5, labels, "--dims", "10,50,100,500", "--csv",
                                      str(out_csv), "--plot", str(png), "--paper-reference"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[:3] == ["dims", "explained", "variance"]
    assert [line.split()[0] for line in lines[3:7]] == ["10", "50", "100", "500"]
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["dims"]) for r in rows] == [10, 50, 100, 500]
    variance = [float(r["explained_variance"]) for r in rows]
    assert variance == sorted(variance)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10000
    # the explicit command name gives the same table
    again = runner.invoke(pca_main, ["compact", h5, labels, "--dims", "10,50,100,500"])
    assert again.output.splitlines()[:7] == lines[:7]


def test_fit_transform_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    features = rng.random((25, 30)).astype(np.float32)
    ids = [f"clip_{i}.mp4" for i in range(25)]
    statuses = ["ok"] * 23 + ["error", "ok"]
    h5 = write_features(str(tmp_path / "f.h5"), ids, {"fc7": features}, statuses=statuses)
    runner = CliRunner()
    pca_path, reduced = str(tmp_path / "pca.h5"), str(tmp_path / "reduced.h5")
    result = runner.invoke(pca_main, ["fit", h5, "--layer", "fc7", "--dims", "6",
                                      "-o", pca_path])
    assert result.exit_code == 0, result.output
    with h5py.File(pca_path, "r") as handle:
        x_mean, U, S = (handle[f"data/{n}"][...] for n in ("x_mean", "U", "S"))
    assert U.shape == (30, 6) and S.shape == (6,) and x_mean.shape == (30,)

    used = features[np.array(statuses) == "ok"].astype(np.float64)
    reference = PCA(n_components=6, svd_solver="full").fit(used)
    np.testing.assert_allclose(x_mean, used.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(S, reference.explained_variance_, rtol=1e-5)

    result = runner.invoke(pca_main, ["transform", pca_path, h5, "-o", reduced, "--dims", "4"])
    assert result.exit_code == 0, result.output
    reduced_ids, matrix = read_features(reduced, "fc7")
    assert reduced_ids == ids and matrix.shape == (25, 4)
    expected = reference.transform(features.astype(np.float64))[:, :4]
    ok = np.array(statuses) == "ok"
    _same_up_to_sign(matrix[ok], expected[ok], atol=1e-4)
    assert not matrix[~ok].any()  # the failed video keeps a zero row
    assert list(read_video_table(reduced)["status"]) == statuses
    attrs = read_attributes(reduced)
    assert attrs["layers"] == "fc7" and attrs["pca_dims"] == 4
    assert attrs["weights_sha256"] == "a" * 64

    result = runner.invoke(pca_main, ["transform", pca_path, h5, "-o", reduced])
    assert result.exit_code == 1 and "--overwrite" in result.output


def test_pca_file_round_trip_and_projection_formula(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(40, 10)).astype(np.float32)
    model = fit_matrix(data, 5, layer="fc6")
    path = str(tmp_path / "pca.h5")
    save_pca(model, path)
    loaded = load_pca(path)
    np.testing.assert_array_equal(loaded.U, model.U)
    with h5py.File(path, "r") as handle:
        formula = (data - handle["data/x_mean"][...]) @ handle["data/U"][...][:, :3]
    np.testing.assert_allclose(loaded.project(data, 3), formula, rtol=1e-5, atol=1e-5)


def test_activitynet_layout(tmp_path):
    rng = np.random.default_rng(5)
    n_clips = [3, 5, 2, 4, 6, 3]
    clips = [rng.random((n, 20)).astype(np.float32) for n in n_clips]
    means = np.stack([c.mean(axis=0) for c in clips])
    ids = ["videos/abc.mp4", "v_def.mp4", "ghi.avi", "x/jkl.mkv", "mno.mp4", "pqr.mp4"]
    statuses = ["ok", "ok", "ok", "ok", "ok", "error"]
    h5 = write_features(str(tmp_path / "f.h5"), ids, {"fc7": means}, statuses=statuses,
                        clips={"fc7": clips})
    runner = CliRunner()
    pca_path, out = str(tmp_path / "pca.h5"), str(tmp_path / "anet.h5")
    assert runner.invoke(pca_main, ["fit", h5, "--layer", "fc7", "--dims", "4",
                                    "-o", pca_path]).exit_code == 0
    result = runner.invoke(pca_main, ["transform", pca_path, h5, "--activitynet", "-o", out])
    assert result.exit_code == 0, result.output
    with h5py.File(pca_path, "r") as handle:
        x_mean, U = handle["data/x_mean"][...], handle["data/U"][...]
    with h5py.File(out, "r") as handle:
        assert sorted(handle.keys()) == ["v_abc", "v_def", "v_ghi", "v_jkl", "v_mno"]
        for name, index in (("v_abc", 0), ("v_def", 1), ("v_jkl", 3), ("v_mno", 4)):
            stored = handle[name]["c3d_features"][...]
            assert stored.shape == (n_clips[index], 4)
            np.testing.assert_allclose(stored, (clips[index] - x_mean) @ U, rtol=1e-4,
                                       atol=1e-5)

    no_clips = write_features(str(tmp_path / "plain.h5"), ids, {"fc7": means})
    result = runner.invoke(pca_main, ["transform", pca_path, no_clips, "--activitynet",
                                      "-o", str(tmp_path / "x.h5")])
    assert result.exit_code == 1 and "per-clip" in result.output


def test_fit_on_training_split_only(tmp_path):
    h5, labels, features, codes, split = _dataset(tmp_path)
    model = fit_file(h5, 5, labels=read_labels_csv(labels))
    np.testing.assert_allclose(model.x_mean, features[split == "train"].mean(axis=0), atol=1e-6)
    assert model.n_samples == int((split == "train").sum())


def test_transform_warns_about_other_weights(tmp_path):
    features, _ = blobs(6, 2, 10)
    ids = [f"v{i}" for i in range(12)]
    h5 = write_features(str(tmp_path / "f.h5"), ids, {"fc6": features})
    other = write_features(str(tmp_path / "g.h5"), ids, {"fc6": features},
                           weights_sha256="c" * 64)
    save_pca(fit_file(h5, 3), str(tmp_path / "pca.h5"))
    result = CliRunner().invoke(pca_main, ["transform", str(tmp_path / "pca.h5"), other,
                                           "-o", str(tmp_path / "r.h5")])
    assert result.exit_code == 0
    assert "Warning: the PCA was fitted on features from other weights" in result.stderr


def test_tsne_plot(tmp_path):
    h5, labels, *_ = _dataset(tmp_path, n_per_class=10)
    png = tmp_path / "tsne.png"
    result = CliRunner().invoke(pca_main, ["tsne", h5, labels, "-o", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
