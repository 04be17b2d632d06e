"""Labels files (CSV, UCF101, HMDB51) and how they are matched to a feature file."""

import os

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from c3d_extract.cli.svm import main as svm_main
from c3d_extract.datasets.labels import (class_order, match_labels, parse_csv_table, read_hmdb51,
                                         read_labels_csv, read_ucf101)
from c3d_extract.errors import InputNotFoundError, LabelsError
from tests.support.eval_helpers import blobs, write_features, write_labels_csv

# ---------------------------------------------------------------- labels.csv


def test_labels_csv_with_and_without_split(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("video,label,split\r\nv1,walk,train\nv2, run ,TEST\n\nv3,walk,train\n",
                    encoding="utf-8")
    labels = read_labels_csv(str(path))
    assert labels.videos == ("v1", "v2", "v3")
    assert labels.labels == ("walk", "run", "walk")
    assert labels.splits == ("train", "test", "train")
    assert labels.classes == ("run", "walk")

    plain = tmp_path / "plain.csv"
    plain.write_text("\ufeffVideo,Label,notes\n\"a,b.mp4\",10,x\nc.mp4,9,y\nd.mp4,10,\n",
                     encoding="utf-8")
    labels = read_labels_csv(str(plain))
    assert labels.splits is None and not labels.has_split
    assert labels.videos == ("a,b.mp4", "c.mp4", "d.mp4")
    assert labels.classes == ("9", "10")  # integers in numeric order


def test_class_order():
    assert class_order(["10", "2", "-1"]) == ("-1", "2", "10")
    assert class_order(["b", "a", "10"]) == ("10", "a", "b")


@pytest.mark.parametrize("text, line, words", [
    ("video,label\nv1,a\nv2\n", 3, "expected 2 fields"),
    ("video,label\nv1,a\nv2,b,c\n", 3, "expected 2 fields"),
    ("video,labl\nv1,a\n", 1, "lacks label"),
    ("video,label,split\nv1,a,train\nv2,b,validation\n", 3, "split must be train or test"),
    ("video,label\nv1,a\n,b\n", 3, "empty video"),
    ("video,label\nv1,a\n\nv2,\n", 4, "empty label"),
    ('video,label\nv1,a\n"v2,b\n', 3, "malformed CSV"),
    ('video,label\nv1,a\nv"2,b\nv3,c\n', 3, ""),
    ("video,label\nv1,a\nv2,\x00b\n", 3, "NUL"),
    ("video,video,label\nv1,v1,a\n", 1, "twice"),
])
def test_malformed_csv_names_the_line(tmp_path, text, line, words):
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    try:
        read_labels_csv(str(path))
    except LabelsError as error:
        assert f"line {line}" in str(error)
        assert words in str(error)
    else:
        # a stray quote inside an unquoted field is legal CSV: then it parses
        assert words == ""


def test_empty_and_header_only_and_bad_encoding(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(LabelsError, match="empty"):
        read_labels_csv(str(empty))
    header = tmp_path / "header.csv"
    header.write_text("video,label\n", encoding="utf-8")
    with pytest.raises(LabelsError, match="no labelled videos"):
        read_labels_csv(str(header))
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"video,label\nv1,a\nv2,caf\xe9\n")
    with pytest.raises(LabelsError, match="line 3: not valid UTF-8"):
        read_labels_csv(str(latin))
    with pytest.raises(InputNotFoundError):
        read_labels_csv(str(tmp_path / "missing.csv"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_csv_parser_never_raises_anything_but_labels_error(data):
    try:
        rows = parse_csv_table(data, ("video", "label"), ("split",))
    except LabelsError:
        return
    for line, row in rows:
        assert line >= 2 and {"video", "label"} <= set(row)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text("abc/._-xyz", min_size=1, max_size=8),
                          st.text("abc", min_size=1, max_size=3)), min_size=1, max_size=10))
def test_csv_round_trip(rows):
    text = "video,label\n" + "".join(f"{v},{label}\n" for v, label in rows)
    parsed = parse_csv_table(text.encode(), ("video", "label"))
    assert [(r["video"], r["label"]) for _, r in parsed] == rows
    assert [line for line, _ in parsed] == list(range(2, len(rows) + 2))


# ---------------------------------------------------------------- UCF101 and HMDB51

def _ucf101(root):
    folder = root / "ucfTrainTestlist"
    folder.mkdir()
    (folder / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 HandstandPushups\n")
    (folder / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        "Archery/v_Archery_g08_c02.avi 2\n"
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 3\n")
    (folder / "testlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
        "Archery/v_Archery_g01_c01.avi\n"
        "HandstandPushups/v_HandStandPushups_g01_c01.avi\n")
    return folder


def test_ucf101_split_files(tmp_path):
    _ucf101(tmp_path)
    labels = read_ucf101(str(tmp_path), 1)  # the parent folder works too
    assert labels.classes == ("ApplyEyeMakeup", "Archery", "HandstandPushups")
    assert labels.splits == ("train",) * 3 + ("test",) * 3
    assert labels.labels == ("ApplyEyeMakeup", "Archery", "HandstandPushups") * 2
    assert labels.videos[0] == "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"

    # feature ids are the paths the extractor saw; matching goes by file name
    ids = [f"/data/UCF-101/{v}" for v in labels.videos][::-1]
    match = match_labels(labels, ids, ["ok"] * len(ids))
    assert not match.report.problems()
    assert sorted(match.rows.tolist()) == list(range(6))
    assert [labels.classes[c] for c in match.codes] == [
        ids[r].split("/")[3] for r in match.rows]


def test_ucf101_errors(tmp_path):
    folder = _ucf101(tmp_path)
    with pytest.raises(LabelsError, match="trainlist02"):
        read_ucf101(str(folder), 2)
    (folder / "trainlist01.txt").write_text("Archery/v_Archery_g08_c02.avi 7\n")
    with pytest.raises(LabelsError, match="trainlist01.txt line 1: class index '7'"):
        read_ucf101(str(folder), 1)
    (folder / "trainlist01.txt").write_text("Archery/v_Archery_g08_c02.avi 2\n")
    (folder / "testlist01.txt").write_text("Archery/v_a.avi\nBowling/v_Bowling_g01_c01.avi\n")
    with pytest.raises(LabelsError, match="testlist01.txt line 2: the folder 'Bowling'"):
        read_ucf101(str(folder), 1)
    with pytest.raises(InputNotFoundError):
        read_ucf101(str(tmp_path / "nowhere"), 1)


def test_hmdb51_split_files(tmp_path):
    folder = tmp_path / "testTrainMulti_7030_splits"
    folder.mkdir()
    (folder / "brush_hair_test_split1.txt").write_text(
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nBrushing_my_hair_0.avi 2 \n"
        "brushing_hair_2.avi 0 \n")
    (folder / "cartwheel_test_split1.txt").write_text("Cartwheel_1.avi 2\nCartwheel_2.avi 1\n")
    (folder / "cartwheel_test_split2.txt").write_text("Cartwheel_1.avi 1\nCartwheel_2.avi 2\n")
    labels = read_hmdb51(str(tmp_path), 1)
    assert labels.classes == ("brush_hair", "cartwheel")
    assert labels.splits == ("train", "test", "unused", "test", "train")
    assert labels.labels == ("brush_hair",) * 3 + ("cartwheel",) * 2
    assert read_hmdb51(str(folder), 2).splits == ("train", "test")
    with pytest.raises(LabelsError, match="split3"):
        read_hmdb51(str(folder), 3)
    (folder / "cartwheel_test_split1.txt").write_text("Cartwheel_1.avi 4\n")
    with pytest.raises(LabelsError, match="cartwheel_test_split1.txt line 1"):
        read_hmdb51(str(folder), 1)


# ---------------------------------------------------------------- matching

def _labels(tmp_path, rows, header=("video", "label")):
    return read_labels_csv(write_labels_csv(str(tmp_path / "l.csv"), rows, header))


def test_matching_reports_every_kind_of_mismatch(tmp_path):
    ids = ["a/one.mp4", "b/one.mp4", "two.mp4", "three.avi", "four.mp4", "five.mp4",
           "six.mp4", "extra.mp4"]
    statuses = ["ok", "ok", "ok", "error", "skipped", "padded", "ok", "ok"]
    labels = _labels(tmp_path, [
        ("one", "x"),            # ambiguous: two ids have file name 'one'
        ("two.mp4", "x"),        # exact
        ("three", "y"),          # by stem, but the video failed
        ("four", "y"),           # skipped
        ("five", "y"),           # by stem, padded counts as features
        ("five.mp4", "y"),       # duplicate, agreeing: first kept
        ("six", "x"),            # duplicate, conflicting: dropped
        ("six.mp4", "y"),
        ("seven", "x"),          # no such video
    ])
    match = match_labels(labels, ids, statuses)
    report = match.report
    assert report.unmatched == ("seven",)
    assert report.ambiguous == ("one",)
    assert report.duplicates == ("five.mp4", "six.mp4")
    assert report.conflicting == ("six.mp4",)
    assert report.without_features == (("three.avi", "error"), ("four.mp4", "skipped"))
    assert report.unlabelled == ("a/one.mp4", "b/one.mp4", "extra.mp4")
    assert [ids[r] for r in match.rows] == ["two.mp4", "five.mp4"]
    assert [labels.classes[c] for c in match.codes] == ["x", "y"]
    problems = "\n".join(report.problems())
    for words in ("1 label rows match no video", "'seven'", "1 label rows match several",
                  "2 videos are labelled more than once", "1 with conflicting",
                  "3 videos in the feature file have no label", "2 labelled videos have no "
                  "features (1 error, 1 skipped"):
        assert words in problems
    with pytest.raises(LabelsError, match="--allow-missing"):
        report.check(allow_missing=False)
    report.check(allow_missing=True)


def test_examples_are_limited_to_a_few(tmp_path):
    labels = _labels(tmp_path, [(f"missing{i}", "a") for i in range(50)] + [("v0", "a")])
    report = match_labels(labels, ["v0.mp4"], ["ok"]).report
    line = report.problems()[0]
    assert line.startswith("50 label rows match no video") and line.endswith(", ...)")
    assert line.count("missing") == 3


def test_cli_fails_on_mismatch_unless_allowed(tmp_path):
    features, codes = blobs(6, 2, 16)
    ids = [f"clip{i}.mp4" for i in range(12)]
    statuses = ["ok"] * 11 + ["error"]
    h5 = write_features(str(tmp_path / "f.h5"), ids, {"fc6": features}, statuses=statuses)
    rows = [(f"clip{i}", f"c{codes[i]}") for i in range(1, 12)] + [("ghost", "c0")]
    labels = write_labels_csv(str(tmp_path / "l.csv"), rows, ("video", "label"))
    runner = CliRunner()
    model = str(tmp_path / "m.skops")
    result = runner.invoke(svm_main, ["train", h5, labels, "-o", model])
    assert result.exit_code == 1
    assert "1 label rows match no video" in result.output
    assert "1 videos in the feature file have no label (e.g. 'clip0.mp4')" in result.output
    assert "1 labelled videos have no features (1 error" in result.output
    assert "--allow-missing" in result.output
    assert not os.path.exists(model)

    result = runner.invoke(svm_main, ["train", h5, labels, "-o", model, "--allow-missing"])
    assert result.exit_code == 0, result.output
    assert "Warning: 1 label rows match no video" in result.stderr
    assert "10 labelled videos" in result.stdout


def test_cli_label_source_errors(tmp_path):
    features, _ = blobs(3, 2, 8)
    h5 = write_features(str(tmp_path / "f.h5"), ["a", "b", "c", "d", "e", "f"], {"fc6": features})
    bad = tmp_path / "bad.csv"
    bad.write_text("video,label\na,x\nb\n")
    runner = CliRunner()
    result = runner.invoke(svm_main, ["train", h5, str(bad), "-o", str(tmp_path / "m")])
    assert result.exit_code == 1 and "line 3" in result.output
    result = runner.invoke(svm_main, ["train", h5, "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and "exactly one of LABELS" in result.output
    result = runner.invoke(svm_main, ["train", h5, str(bad), "--ucf101", str(tmp_path),
                                      "-o", str(tmp_path / "m")])
    assert result.exit_code == 2
    result = runner.invoke(svm_main, ["train", h5, str(tmp_path / "none.csv"),
                                      "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_ucf101_end_to_end_through_the_cli(tmp_path):
    _ucf101(tmp_path)
    labels = read_ucf101(str(tmp_path), 1)
    rng = np.random.default_rng(1)
    ids = [f"UCF-101/{v}" for v in labels.videos]
    codes = np.array([labels.classes.index(name) for name in labels.labels])
    features = np.eye(3, 12)[codes] + 0.01 * rng.normal(size=(6, 12))
    h5 = write_features(str(tmp_path / "f.h5"), ids, {"fc6": features.astype(np.float32)})
    model = str(tmp_path / "m.skops")
    runner = CliRunner()
    result = runner.invoke(svm_main, ["train", h5, "--ucf101", str(tmp_path), "-o", model])
    assert result.exit_code == 0, result.output
    assert "UCF101 split 1" in result.output and "3 videos with split == train" in result.output
    result = runner.invoke(svm_main, ["eval", model, h5, "--ucf101", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "accuracy 100.0% (3/3)" in result.output
