"""Per-window predictions: smoothing (against numpy's convolution), the timeline CSV
(against a forward pass written here), the overlay video (decoded with PyAV) and the
errors a bad output path gives before any work."""

import csv
import io
import json
import os

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from c3d_extract.cli.predict import cli
from c3d_extract.errors import UsageError, VideoReadError
from c3d_extract.predict.overlay import class_colour, overlay_destinations, write_overlay
from c3d_extract.predict.timeline import Timeline, build_timeline, csv_rows, moving_average
from c3d_extract.video.sources import VideoSource
from tests.support.reference import reference_clip_features
from tests.support.videos import write_video
from tests.support.weights_support import source_model

SPORTS1M_CLASSES = 487


def smoothed_by_convolution(values, width):
    """Centred moving average, the ends averaged over the rows that exist."""
    kernel = np.ones(width)
    counts = np.convolve(np.ones(len(values)), kernel, mode="same")
    return np.stack([np.convolve(column, kernel, mode="same") / counts
                     for column in values.T], axis=1)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7])
def test_moving_average_matches_numpy_convolution(width):
    values = np.random.default_rng(width).random((7, 4))
    np.testing.assert_allclose(moving_average(values, width),
                               smoothed_by_convolution(values, width), rtol=1e-12)


def test_moving_average_wider_than_the_video():
    values = np.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(moving_average(values, 9), np.tile(values.mean(0), (3, 1)))


def test_windows_top_k_and_nearest_window():
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
    timeline = build_timeline("v", [0, 8, 16], probabilities, clip_len=16, n_frames=32,
                              fps=25.0, top_k=2, class_names=["a", "b", "c"])
    assert timeline.ends.tolist() == [15, 23, 31]
    assert timeline.top_index.tolist() == [[1, 2], [0, 2], [2, 0]]  # tie: lower index first
    np.testing.assert_allclose(timeline.top_probability, [[0.6, 0.3], [0.5, 0.3], [0.6, 0.2]])
    # Centres 7.5, 15.5, 23.5: frame 11.5 is halfway and goes to the earlier window.
    assert [timeline.window_at(f) for f in (0, 11, 11.5, 12, 20, 31)] == [0, 0, 0, 1, 2, 2]
    short = build_timeline("s", [0], probabilities[:1], clip_len=16, n_frames=5, fps=0.0,
                           top_k=1)
    assert short.ends.tolist() == [4]  # a padded clip ends at the video's last frame


def test_csv_rows_by_hand():
    timeline = Timeline("dir/v.mp4", 25.0, 40, np.array([0, 8]), np.array([15, 23]),
                        np.array([[2], [0]]), np.array([[0.75], [0.5]]), ("a", "b", "c"))
    assert list(csv_rows(timeline, fps=10.0)) == [
        ["dir/v.mp4", "0", "15", "0.000", "0.640", "c", "0.75"],
        ["dir/v.mp4", "8", "23", "0.320", "0.960", "a", "0.5"]]
    no_rate = Timeline("f", 0.0, 16, np.array([0]), np.array([15]), np.array([[1]]),
                       np.array([[1.0]]))
    assert list(csv_rows(no_rate, fps=10.0)) == [["f", "0", "15", "0.000", "1.600",
                                                  "class 1", "1"]]
    assert list(csv_rows(no_rate, fps=0.0))[0][3:5] == ["", ""]


# ---------------------------------------------------------------- the overlay, no network

def two_class_timeline(n_frames):
    starts = np.arange(0, n_frames - 15, 8)
    top = np.array([[0, 1] if s < n_frames // 2 - 8 else [1, 0] for s in starts])
    return Timeline("v", 10.0, n_frames, starts, starts + 15, top,
                    np.tile([[0.9, 0.1]], (len(starts), 1)), ("left", "right"))


def gray_frames(folder, n_frames, width, height, broken=None):
    folder.mkdir()
    for number in range(n_frames):
        path = folder / f"img_{number:03d}.png"
        if number == broken:
            path.write_bytes(b"not a png")
        else:
            cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))
    return folder


def test_overlay_of_a_frame_folder_with_an_odd_size(tmp_path):
    folder = gray_frames(tmp_path / "frames", 48, 193, 121)
    out = tmp_path / "overlay.mkv"
    assert write_overlay(str(folder), two_class_timeline(48), str(out), fps=10.0) == 48
    import av

    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == 10
    assert len(frames) == 48 and frames[0].shape == (121, 193, 3)
    strip = frames[0][-2].astype(int)  # the bottom row: top class over the whole video
    assert np.abs(strip[10:80] - class_colour(0)).max() < 40
    assert np.abs(strip[110:180] - class_colour(1)).max() < 40
    assert frames[0][:25, :100].max() > 200  # white text on a dark box
    assert np.abs(frames[0][60, 100].astype(int) - 128).max() < 8  # the rest untouched
    assert sorted(os.listdir(tmp_path)) == ["frames", "overlay.mkv"]


def test_overlay_failing_midway_leaves_nothing(tmp_path):
    folder = gray_frames(tmp_path / "frames", 32, 64, 48, broken=20)
    out = tmp_path / "overlay.mp4"
    with pytest.raises(VideoReadError, match="img_020.png"):
        write_overlay(str(folder), two_class_timeline(32), str(out))
    assert sorted(os.listdir(tmp_path)) == ["frames"]


def test_overlay_dir_destinations(tmp_path):
    out = tmp_path / "out"
    sources = [VideoSource("a/b.avi", "x"), VideoSource("../c.mp4", "y"),
               VideoSource(".", str(tmp_path / "frames"))]
    assert overlay_destinations(sources, None, str(out)) == {
        "a/b.avi": str(out / "a" / "b.avi.mp4"), "../c.mp4": str(out / "c.mp4.mp4"),
        ".": str(out / "frames.mp4")}
    assert (out / "a").is_dir()
    with pytest.raises(UsageError, match="the same overlay file name"):
        overlay_destinations([VideoSource("c.mp4", "z"), *sources], None, str(out))


# ---------------------------------------------------------------- c3d-predict end to end

@pytest.fixture(scope="module")
def decisive_model():
    """A Sports-1M-shaped C3D with seeded weights, fc8 scaled so classes are far apart."""
    model = source_model(num_classes=SPORTS1M_CLASSES)
    with torch.no_grad():
        model.fc8.weight.mul_(300.0)
    return model


@pytest.mark.slow
def test_timeline_overlay_and_json_of_a_64_frame_video(decisive_model, tmp_path):
    import av

    video = write_video(tmp_path / "match.mp4", 64, width=96, height=64, fps=30)
    weights = tmp_path / "c3d.safetensors"
    save_file({k: v.contiguous() for k, v in decisive_model.state_dict().items()},
              str(weights))
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"sport {n}\n" for n in range(SPORTS1M_CLASSES)))
    timeline, overlay = tmp_path / "timeline.csv", tmp_path / "out" / "match.mp4"
    overlay.parent.mkdir()
    result = CliRunner().invoke(cli, [
        str(video), "--weights", str(weights), "--labels", str(labels), "-k", "3", "--json",
        "--timeline", str(timeline), "--smooth", "3", "--overlay", str(overlay),
        "--decoder", "pyav", "--batch-size", "4"], prog_name="c3d-predict")
    assert result.exit_code == 0, result.output

    (prediction,) = json.loads(result.stdout)
    assert set(prediction) == {"id", "status", "error", "n_clips", "top"}
    assert prediction["n_clips"] == 7
    assert [set(entry) for entry in prediction["top"]] == [{"index", "name", "probability"}] * 3

    starts, clip_probabilities = reference_clip_features(decisive_model, video, layer="prob")
    expected = smoothed_by_convolution(clip_probabilities.astype(np.float64), 3)
    assert np.abs(expected - clip_probabilities).max() > 0.01  # smoothing changes the rows
    with open(timeline, newline="") as handle:
        rows = list(csv.reader(io.StringIO(handle.read())))
    assert rows[0] == ["video", "start_frame", "end_frame", "start_s", "end_s", "label_1",
                       "probability_1", "label_2", "probability_2", "label_3", "probability_3"]
    assert len(rows) == 1 + 7 and starts.tolist() == [int(r[1]) for r in rows[1:]]
    for row, want in zip(rows[1:], expected):
        start = int(row[1])
        assert row[0] == os.path.normpath(str(video)) and int(row[2]) == start + 15
        assert row[3:5] == [f"{start / 30:.3f}", f"{(start + 16) / 30:.3f}"]
        classes = [int(name.split()[1]) for name in row[5::2]]
        probabilities = np.array(row[6::2], float)
        # The tolerance of the video-level prediction test: the same forward pass.
        np.testing.assert_allclose(probabilities, want[classes], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(probabilities, np.sort(want)[::-1][:3], rtol=1e-4,
                                   atol=1e-5)

    with av.open(str(video)) as source, av.open(str(overlay)) as written:
        source_stream, stream = source.streams.video[0], written.streams.video[0]
        assert sum(1 for _ in written.decode(stream)) == 64
        assert stream.average_rate == source_stream.average_rate == 30
        assert (stream.width, stream.height) == (96, 64)
    assert sorted(os.listdir(overlay.parent)) == ["match.mp4"]


@pytest.mark.parametrize("arguments, code, message", [
    (["--overlay", "{tmp}/missing/o.mp4"], 1, "does not exist"),
    (["--overlay", "{tmp}/o.avi"], 2, "must end with one of"),
    (["--overlay", "{tmp}/o.mp4", "{video}"], 2, "--overlay writes one video"),
    (["--overlay-dir", "{tmp}/a-file/d"], 1, "cannot create the overlay folder"),
    (["--overlay", "{tmp}/o.mp4", "--overlay-dir", "{tmp}/d"], 2, "not both"),
    (["--timeline", "{tmp}/a-file/t.csv"], 1, "is not a directory"),
    (["--overlay", "{tmp}/v.mp4"], 2, "would replace an input video"),
])
def test_unwritable_outputs_fail_before_any_work(tmp_path, arguments, code, message):
    (tmp_path / "a-file").write_text("")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")  # never decoded: the run stops first
    arguments = [a.format(tmp=tmp_path, video=tmp_path / "a-file") for a in arguments]
    # The weights do not exist either: the output is checked before they are read.
    result = CliRunner().invoke(cli, [str(video), "--weights", str(tmp_path / "none.pt"),
                                      *arguments], prog_name="c3d-predict")
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert sorted(os.listdir(tmp_path)) == ["a-file", "v.mp4"]


OVERLAY_PEAK = """
import sys
import av, cv2, numpy as np
from c3d_extract.predict.overlay import write_overlay
from c3d_extract.predict.timeline import build_timeline
source, output, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
starts = np.arange(0, n - 15, 8)
timeline = build_timeline("v", starts, np.random.default_rng(0).random((len(starts), 487)),
                          clip_len=16, n_frames=n, fps=25.0, top_k=5)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # the peak (VmHWM) restarts from the present size
assert write_overlay(source, timeline, output) == n
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


@pytest.mark.slow
def test_overlay_memory_does_not_grow_with_the_video(tmp_path):
    import subprocess
    import sys

    peaks = {}
    for n_frames in (80, 400):
        video = write_video(tmp_path / f"v{n_frames}.mp4", n_frames, width=320, height=240)
        run = subprocess.run([sys.executable, "-c", OVERLAY_PEAK, str(video),
                              str(tmp_path / f"o{n_frames}.mp4"), str(n_frames)],
                             capture_output=True, text=True, timeout=600, check=True)
        peaks[n_frames] = int(run.stdout.split()[-1]) / 1024  # MiB, while writing
    # Keeping the 320 extra frames (225 KiB each as RGB) would add 70 MiB.
    assert peaks[400] - peaks[80] < 25, peaks
