"""A target frame rate (``--fps``): the choice of frames by presentation time against a
computation in exact fractions written here, and on real 25 and 60 fps videos whose
frames carry their own index in their pixel values, through both decoders."""

from fractions import Fraction

import numpy as np
import pytest

from c3d_extract.errors import ParameterMismatchError, UsageError
from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import check_videos
from c3d_extract.store.read import read_attributes, read_video_table
from c3d_extract.video.preprocess import SPORTS1M
from c3d_extract.video.resample import resample_indices, select_by_time
from c3d_extract.video.sources import discover
from c3d_extract.video.workers import FrameSampling, decode_video
from tests.support.videos import write_video

#: Grey levels between consecutive frame indices in the test videos.
LEVEL_STEP = 4


def nearest_frames(times, fps):
    """The rule in exact arithmetic, by brute force: at t0 + k / fps for every k while that
    is before the end (the last frame lasting as long as the gap before it), the frame
    of least |time - target|, the earlier one on a tie."""
    times = [Fraction(t) for t in times]
    fps = Fraction(fps)
    end = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0)
    chosen, k = [], 0
    while k == 0 or times[0] + k / fps < end:
        target = times[0] + k / fps
        chosen.append(min(range(len(times)), key=lambda i: (abs(times[i] - target), i)))
        k += 1
    return chosen


@pytest.mark.parametrize("source, target, n", [
    (25, 30, 25), (25, 30, 37), (60, 30, 12), (60, 30, 61), (30, 30, 20), (24, 25, 50),
    (Fraction(30000, 1001), 30, 300), (30, Fraction(30000, 1001), 300), (25, 1, 80),
    (25, 100, 9), (10, 30, 1)])
def test_the_rule_against_exact_fractions(source, target, n):
    exact = [Fraction(i) / Fraction(source) for i in range(n)]
    expected = nearest_frames(exact, target)
    floats = [float(t) for t in exact]
    assert list(resample_indices(floats, float(target))) == expected
    assert select_by_time(floats, float(target)) == expected


def test_known_cases():
    # 25 -> 30 fps repeats every fifth frame; the tie at 0.1 s (frames 2 and 3) goes to 2.
    assert list(resample_indices([i / 25 for i in range(10)], 30)) == \
        [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8, 9]
    assert len(resample_indices([i / 25 for i in range(25)], 30)) == 30  # one second
    assert list(resample_indices([i / 60 for i in range(12)], 30)) == [0, 2, 4, 6, 8, 10]
    # Times start anywhere: only their differences count.
    assert list(resample_indices([5 + i / 60 for i in range(12)], 30)) == [0, 2, 4, 6, 8, 10]
    assert list(resample_indices([0.7], 30)) == [0]
    assert list(resample_indices([], 30)) == []


def test_streaming_equals_the_whole_list_rule_on_irregular_times():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 80))
        source = float(rng.choice([7.5, 24, 25, 29.97, 30, 50, 60]))
        times = np.arange(n) / source + rng.normal(0, 0.3 / source, n) * (trial % 2)
        if trial % 3 == 0:
            times = np.round(times, 3)  # a millisecond time base (Matroska)
        target = float(rng.choice([1, 10, 25, 30, 29.97, 60]))
        assert select_by_time(list(times), target) == list(resample_indices(times, target))


def test_a_bad_rate_is_refused():
    for fps in (0, -1, float("nan"), float("inf"), 1000.5, 1e9):
        with pytest.raises(ValueError):
            resample_indices([0.0, 0.04], fps)
    assert len(resample_indices([0.0, 0.04], 1000)) == 80  # the highest rate accepted
    with pytest.raises(UsageError, match="positive"):
        ExtractOptions(target_fps=-2).validate(network=False)


# ---------------------------------------------------------------- real videos

def numbered_frame(index, width, height):
    """A uniform grey frame whose level says its index."""
    return np.full((height, width, 3), LEVEL_STEP * index, np.uint8)


def read_indices(frames):
    """Frame indices back from the grey level of prepared (cropped) frames."""
    return [int(round(float(f.mean()) / LEVEL_STEP)) for f in frames]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rates")
    return {25: write_video(folder / "25fps.mp4", 40, fps=25, frame_fn=numbered_frame),
            60: write_video(folder / "60fps.mp4", 60, fps=60, frame_fn=numbered_frame)}


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
@pytest.mark.parametrize("source", [25, 60])
def test_both_decoders_pick_the_frames_the_timestamps_say(videos, source, decoder):
    messages = []
    decode_video(decoder, str(videos[source]), SPORTS1M, messages.append,
                 FrameSampling(target_fps=30))
    assert messages[0][0] == "start" and messages[0][1] == pytest.approx(source)
    frames = np.concatenate([m[1] for m in messages if m[0] == "frames"])
    n_source = 40 if source == 25 else 60
    expected = nearest_frames([Fraction(i, source) for i in range(n_source)], 30)
    assert read_indices(frames) == expected
    # 25 fps: 1.6 s -> 48 frames, every fifth repeated; 60 fps: 1 s -> 30, every other one.
    assert len(expected) == (48 if source == 25 else 30)
    assert messages[-1] == ("end", len(expected), 64, 48, n_source)


def write_bframes_avi(path, n, fps):
    """MPEG-4 in AVI with B-frames: its packets' pts follow decoding order, so the decoded
    frames' own times go back and forth (0.04, 0.12, 0.16, 0.08 s...)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.bit_rate, stream.options = 4_000_000, {"bf": "3"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(numbered_frame(i, 64, 48), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_b_frames_in_avi_are_timed_in_display_order(tmp_path, decoder):
    path = write_bframes_avi(tmp_path / "bframes.avi", 30, 25)
    messages = []
    decode_video(decoder, str(path), SPORTS1M, messages.append, FrameSampling(target_fps=30))
    frames = np.concatenate([m[1] for m in messages if m[0] == "frames"])
    assert read_indices(frames) == nearest_frames([Fraction(i, 25) for i in range(30)], 30)
    assert not [m for m in messages if m[0] == "warning"]


def test_without_a_target_every_frame_is_sent_once(videos):
    messages = []
    decode_video("pyav", str(videos[25]), SPORTS1M, messages.append)
    frames = np.concatenate([m[1] for m in messages if m[0] == "frames"])
    assert read_indices(frames) == list(range(40))
    assert messages[-1] == ("end", 40, 64, 48, 40)


def test_the_store_records_the_rates_and_the_resampled_clips(videos, tmp_path):
    """The UCF-Crime protocol on the resampled frames: 30 fps, 16-frame clips at stride 16."""
    out = tmp_path / "check.h5"
    options = ExtractOptions(target_fps=30, stride=16, decoder="pyav")
    sources = discover([str(videos[25].parent)])
    summary = check_videos(sources, str(out), options=options)
    assert summary.complete and summary.n_failed == 0
    attrs = read_attributes(str(out))
    assert attrs["target_fps"] == 30.0 and attrs["stride"] == 16
    table = read_video_table(str(out))
    rows = {video_id: i for i, video_id in enumerate(table["id"])}
    for name, source, n in (("25fps.mp4", 25, 48), ("60fps.mp4", 60, 30)):
        row = rows[name]
        assert table["fps"][row] == pytest.approx(source)  # the source's rate
        assert table["n_frames"][row] == n  # the resampled sequence the clips come from
        assert table["n_clips"][row] == (n - 16) // 16 + 1
    with pytest.raises(ParameterMismatchError, match="target_fps: 30.0 in the file, 25.0 now"):
        check_videos(sources, str(out), options=ExtractOptions(target_fps=25, stride=16))
    with pytest.raises(ParameterMismatchError, match="target_fps: 30.0 in the file, 0.0 now"):
        check_videos(sources, str(out), options=ExtractOptions(stride=16))


def test_a_frame_folder_has_no_rate_to_resample(tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:04d}.png"), numbered_frame(i, 32, 24))
    messages = []
    decode_video("pyav", str(folder), SPORTS1M, messages.append, FrameSampling(target_fps=30))
    assert messages[-1][0] == "error" and "no frame rate" in messages[-1][1]


def run_cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "c3d_extract", *args], capture_output=True,
                          text=True, timeout=600)


def test_cli_ucf_crime_protocol_with_ten_crops_decode_only(videos, tmp_path):
    """The CLI's --fps and --crops reach the file; another --crops on rerun is refused (1),
    an unknown crop count is a usage error (2)."""
    out = tmp_path / "check.h5"
    args = [str(videos[60]), "-o", str(out), "--decode-only", "--fps", "30", "--stride", "16",
            "--decoder", "pyav", "--quiet"]
    first = run_cli(*args, "--crops", "10")
    assert first.returncode == 0, first.stderr
    attrs = read_attributes(str(out))
    assert attrs["target_fps"] == 30.0 and attrs["crops"] == 10
    table = read_video_table(str(out))
    assert list(table["n_frames"]) == [30] and list(table["n_clips"]) == [1]
    again = run_cli(*args)
    assert again.returncode == 1 and "crops: 10 in the file, 1 now" in again.stderr
    assert "Traceback" not in again.stderr
    bad = run_cli(*args, "--crops", "3")
    assert bad.returncode == 2 and "--crops" in bad.stderr


def test_clips_are_cut_from_the_resampled_frames(videos, tmp_path):
    """Through the whole extraction (tiny network, ten crops): each clip's 4-frame block
    means are those of the frames the timestamps choose, decoded here with PyAV."""
    from c3d_extract.extraction.run import extract
    from c3d_extract.store.read import read_clip_features
    from tests.support.tiny_network import tiny_model
    from tests.support.videos import decode_rgb

    out = tmp_path / "feats.h5"
    extract(str(videos[25]), str(out), weights=tiny_model(),
            options=ExtractOptions(layers=("fc6",), per_clip=True, target_fps=30, stride=16,
                                   crops=10, decoder="pyav"))
    _, starts, features = read_clip_features(str(out), "fc6")
    chosen = nearest_frames([Fraction(i, 25) for i in range(40)], 30)  # 48 frames
    assert list(starts) == [0, 16, 32] and features.shape == (3, 10, 3 * 4 * 14 * 14)
    grey = decode_rgb(videos[25]).astype(np.float64).mean(axis=(1, 2))  # frames x RGB
    mean_bgr = np.array([90.25, 97.66, 101.41])
    for row, start in enumerate(starts):
        frames = grey[chosen[start:start + 16]][:, ::-1]  # BGR
        blocks = frames.reshape(4, 4, 3).mean(axis=1) - mean_bgr  # 4 blocks x BGR
        for crop in range(10):  # uniform frames: every crop sees the same
            stored = features[row, crop].reshape(3, 4, 14 * 14).mean(axis=2)  # BGR x blocks
            # Measured 1.3e-4 (float32 sums); ties given to the later frame: 1.25.
            assert np.abs(stored - blocks.T).max() < 0.01
