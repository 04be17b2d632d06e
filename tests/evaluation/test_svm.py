"""Linear SVMs on feature files: accuracy, splits, C search, sgd, model files, predictions."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.svm import LinearSVC

from c3d_extract.cli.svm import main as svm_main
from c3d_extract.datasets.labels import read_labels_csv
from c3d_extract.errors import LabelsError, StoreError, UsageError
from c3d_extract.evaluation.svm import (SVMOptions, cross_validate, evaluate, load_model, predict,
                                        save_model, train)
from tests.support.eval_helpers import blobs, write_features, write_labels_csv


def _dataset(tmp_path, n_per_class=20, n_classes=3, dim=32, *, shuffle_labels=False, seed=0,
             splits=True, name="f.h5"):
    features, codes = blobs(n_per_class, n_classes, dim, seed=seed)
    if shuffle_labels:
        codes = np.random.default_rng(seed + 1).permutation(codes)
    ids = [f"videos/{i:03d}.mp4" for i in range(len(codes))]
    h5 = write_features(str(tmp_path / name), ids, {"fc6": features, "fc7": features[:, ::2]})
    # every fourth video of each class is a test video
    split = ["test" if (i // n_classes) % 4 == 0 else "train" for i in range(len(codes))]
    if splits:
        rows = [(f"{i:03d}", f"class{c}", s) for i, (c, s) in enumerate(zip(codes, split))]
        path = write_labels_csv(str(tmp_path / "labels.csv"), rows)
    else:
        rows = [(f"{i:03d}", f"class{c}") for i, c in enumerate(codes)]
        path = write_labels_csv(str(tmp_path / "labels.csv"), rows, ("video", "label"))
    return h5, path, features, codes, np.array(split)


def test_separable_classes_are_learned_perfectly(tmp_path):
    h5, labels_path, features, codes, split = _dataset(tmp_path)
    labels = read_labels_csv(labels_path)
    result = train(h5, labels)
    assert result.model.n_train == int((split == "train").sum())
    assert result.model.classes == ("class0", "class1", "class2")
    evaluation = evaluate(result.model, h5, labels)
    assert evaluation.accuracy == 1.0 and evaluation.mean_class_accuracy == 1.0
    assert len(evaluation.ids) == int((split == "test").sum())
    assert evaluation.confusion.sum() == len(evaluation.ids)
    assert np.all(evaluation.confusion == np.diag(np.diag(evaluation.confusion)))


def test_matches_sklearn_trained_directly(tmp_path):
    # noisy classes so that the decision boundary matters
    h5, labels_path, features, codes, split = _dataset(tmp_path, dim=8, seed=3)
    noisy = features + np.random.default_rng(0).normal(0, 0.3, features.shape).astype(np.float32)
    ids = [f"videos/{i:03d}.mp4" for i in range(len(codes))]
    h5 = write_features(str(tmp_path / "noisy.h5"), ids, {"fc6": noisy})
    labels = read_labels_csv(labels_path)
    model = train(h5, labels, SVMOptions(C=0.5)).model
    reference = LinearSVC(C=0.5, max_iter=10000, random_state=0)
    reference.fit(noisy[split == "train"], codes[split == "train"])
    expected = reference.predict(noisy[split == "test"])
    evaluation = evaluate(model, h5, labels)
    assert evaluation.predicted == tuple(f"class{c}" for c in expected)
    assert evaluation.accuracy == pytest.approx(np.mean(expected == codes[split == "test"]))
    per_class = {s.name: s.accuracy for s in evaluation.per_class}
    for c in range(3):
        mine = codes[split == "test"] == c
        assert per_class[f"class{c}"] == pytest.approx(np.mean(expected[mine] == c))


def test_shuffled_labels_are_near_chance(tmp_path):
    h5, labels_path, *_ = _dataset(tmp_path, n_per_class=60, n_classes=3, dim=64,
                                   shuffle_labels=True, splits=False)
    result = cross_validate(h5, read_labels_csv(labels_path), SVMOptions(folds=5))
    assert 0.15 < result.mean < 0.52  # chance is 1/3


def test_cross_validation_of_separable_classes(tmp_path):
    h5, labels_path, *_ = _dataset(tmp_path, splits=False)
    result = cross_validate(h5, read_labels_csv(labels_path), SVMOptions(folds=4))
    assert result.folds == 4 and result.accuracies == (1.0,) * 4
    assert "no split column" in result.note


def test_c_auto_reports_folds_and_grid(tmp_path):
    h5, labels_path, *_ = _dataset(tmp_path)
    result = train(h5, read_labels_csv(labels_path), SVMOptions(C=None, grid=(0.1, 1.0),
                                                                folds=3))
    assert result.grid.folds == 3 and result.grid.C == (0.1, 1.0)
    assert result.model.C == result.grid.best
    runner = CliRunner()
    out = runner.invoke(svm_main, ["train", h5, labels_path, "-o", str(tmp_path / "m.skops"),
                                   "--C", "auto", "--grid", "0.1,1,10", "--folds", "3"])
    assert out.exit_code == 0, out.output
    assert "C chosen by 3-fold stratified cross-validation" in out.output
    for c in ("0.1", "1", "10"):
        assert any(line.split()[:1] == [c] for line in out.output.splitlines())
    assert "<-" in out.output


def test_too_few_videos_for_the_folds(tmp_path):
    h5, labels_path, *_ = _dataset(tmp_path, n_per_class=3, splits=False)
    result = cross_validate(h5, read_labels_csv(labels_path), SVMOptions(folds=5))
    assert result.folds == 3 and "smallest class has 3 videos" in result.note


def test_sgd_solver_reads_chunks_and_learns(tmp_path):
    h5, labels_path, *_ = _dataset(tmp_path, n_per_class=30)
    labels = read_labels_csv(labels_path)
    options = SVMOptions(solver="sgd", chunk_rows=7, epochs=10)
    model = train(h5, labels, options).model
    assert type(model.estimator).__name__ == "SGDClassifier"
    assert model.estimator.loss == "hinge"
    assert evaluate(model, h5, labels, chunk_rows=7).accuracy >= 0.95
    with pytest.raises(UsageError, match="auto"):
        SVMOptions(solver="sgd", C=None)


def test_single_class_training_set_is_refused(tmp_path):
    features, _ = blobs(4, 1, 8)
    h5 = write_features(str(tmp_path / "f.h5"), ["a", "b", "c", "d"], {"fc6": features})
    labels = write_labels_csv(str(tmp_path / "l.csv"), [(v, "x") for v in "abcd"],
                              ("video", "label"))
    with pytest.raises(LabelsError, match="two classes"):
        train(h5, read_labels_csv(labels))


def test_model_file_round_trip_and_warnings(tmp_path):
    h5, labels_path, features, codes, split = _dataset(tmp_path)
    labels = read_labels_csv(labels_path)
    model = train(h5, labels, SVMOptions(C=2.0)).model
    path = str(tmp_path / "model.skops")
    save_model(model, path)
    loaded = load_model(path)
    assert (loaded.layer, loaded.classes, loaded.C, loaded.weights_sha256) == (
        "fc6", model.classes, 2.0, "a" * 64)
    np.testing.assert_array_equal(loaded.estimator.coef_, model.estimator.coef_)
    assert evaluate(loaded, h5, labels).warnings == ()

    # same features, but recorded as coming from other weights
    ids = [f"videos/{i:03d}.mp4" for i in range(len(codes))]
    other = write_features(str(tmp_path / "other.h5"), ids, {"fc6": features},
                           weights_sha256="b" * 64)
    warnings = evaluate(loaded, other, labels).warnings
    assert len(warnings) == 1 and "weights" in warnings[0] and "aaaaaaaaaaaa" in warnings[0]
    # another layer of another width cannot be scored at all
    with pytest.raises(UsageError, match="32-d"):
        evaluate(loaded, h5, labels, layer="fc7")

    runner = CliRunner()
    result = runner.invoke(svm_main, ["eval", path, other, labels_path])
    assert result.exit_code == 0
    assert "Warning: the model was trained on features from weights" in result.stderr


def test_unexpected_types_in_a_model_file_are_not_loaded(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer
    path = str(tmp_path / "evil.skops")
    sio.dump({"format": "c3d-svm", "estimator": FunctionTransformer(np.sum)}, path)
    with pytest.raises(StoreError, match="never contains"):
        load_model(path)
    (tmp_path / "junk.skops").write_bytes(b"not a zip")
    with pytest.raises(StoreError):
        load_model(str(tmp_path / "junk.skops"))
    sio.dump({"format": "something else"}, str(tmp_path / "dict.skops"))
    with pytest.raises(StoreError, match="not a c3d-svm model"):
        load_model(str(tmp_path / "dict.skops"))


def test_predict_writes_every_video_with_features(tmp_path):
    features, codes = blobs(10, 2, 16)
    ids = [f"v{i}.mp4" for i in range(20)]
    statuses = ["ok"] * 18 + ["error", "skipped"]
    h5 = write_features(str(tmp_path / "f.h5"), ids, {"fc6": features}, statuses=statuses)
    labels = write_labels_csv(str(tmp_path / "l.csv"),
                              [(f"v{i}", ["left", "right"][codes[i]]) for i in range(18)],
                              ("video", "label"))
    runner = CliRunner()
    model = str(tmp_path / "m.skops")
    assert runner.invoke(svm_main, ["train", h5, labels, "-o", model,
                                    "--allow-missing"]).exit_code == 0
    out = str(tmp_path / "predictions.csv")
    result = runner.invoke(svm_main, ["predict", model, h5, "-o", out])
    assert result.exit_code == 0, result.output
    assert "2 videos have no features" in result.stderr
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["video"] for r in rows] == ids[:18]
    assert [r["label"] for r in rows] == [["left", "right"][c] for c in codes[:18]]
    direct = predict(load_model(model), h5, chunk_rows=4)
    assert direct.labels == tuple(r["label"] for r in rows)
    assert direct.without_features == (("v18.mp4", "error"), ("v19.mp4", "skipped"))


def test_eval_cli_prints_table_and_draws_confusion(tmp_path):
    h5, labels_path, *_ = _dataset(tmp_path)
    runner = CliRunner()
    model = str(tmp_path / "m.skops")
    assert runner.invoke(svm_main, ["train", h5, labels_path, "-o", model]).exit_code == 0
    png = tmp_path / "confusion.png"
    result = runner.invoke(svm_main, ["eval", model, h5, labels_path, "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "accuracy 100.0% (15/15), mean per-class accuracy 100.0%" in result.output
    assert "split == test" in result.output
    assert sum(line.startswith("class") for line in result.output.splitlines()) == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_cv_cli(tmp_path):
    h5, labels_path, *_ = _dataset(tmp_path)
    result = CliRunner().invoke(svm_main, ["cv", h5, labels_path, "--folds", "3"])
    assert result.exit_code == 0, result.output
    assert "3-fold cross-validated accuracy 100.0%" in result.output
    result = CliRunner().invoke(svm_main, ["cv", h5, labels_path, "--C", "auto"])
    assert result.exit_code == 2


def test_scoring_another_layer_of_the_same_width_warns(tmp_path):
    features, codes = blobs(8, 2, 16)
    ids = [f"v{i}" for i in range(16)]
    h5 = write_features(str(tmp_path / "f.h5"), ids, {"fc6": features, "fc7": features[::-1]})
    labels = write_labels_csv(str(tmp_path / "l.csv"), [(v, f"c{c}") for v, c in zip(ids, codes)],
                              ("video", "label"))
    runner = CliRunner()
    model = str(tmp_path / "m.skops")
    assert runner.invoke(svm_main, ["train", h5, labels, "-o", model]).exit_code == 0
    result = runner.invoke(svm_main, ["eval", model, h5, labels, "--layer", "fc7"])
    assert result.exit_code == 0
    assert "Warning: the model was trained on fc6 features, these are fc7" in result.stderr
