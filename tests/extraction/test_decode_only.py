"""``--decode-only``: the video table without the network; progress counted as work happens."""

import subprocess
import sys

import h5py
import pytest

from c3d_extract.errors import StoreError
from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.stream import iter_decoded
from c3d_extract.store.read import read_attributes, read_features, read_video_table
from tests.support.videos import write_video


def clips_of(n_frames, clip_len=16, stride=8):
    """The paper's protocol, by hand: clips starting every ``stride`` frames that fit."""
    return max(0, (n_frames - clip_len) // stride + 1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode_only")
    write_video(root / "a.mp4", 40, width=64, height=48)
    write_video(root / "b.avi", 17, width=50, height=34, codec="mpeg4")
    write_video(root / "short.mp4", 5)
    (root / "broken.mp4").write_bytes(b"\x00" * 300)
    return root


def test_decode_only_writes_the_video_table_and_no_features(folder, tmp_path):
    out = tmp_path / "check.h5"
    result = subprocess.run([sys.executable, "-m", "c3d_extract", str(folder), "-o", str(out),
                             "--decode-only", "--workers", "2", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr  # one video is broken
    assert "failed: broken.mp4" in result.stderr and "Traceback" not in result.stderr
    table = read_video_table(str(out))
    rows = {video_id: i for i, video_id in enumerate(table["id"])}
    assert sorted(rows) == ["a.mp4", "b.avi", "broken.mp4", "short.mp4"]
    expected = {"a.mp4": ("ok", 40, 64, 48, "h264"), "b.avi": ("ok", 17, 50, 34, "mpeg4"),
                "short.mp4": ("padded", 5, 64, 48, "h264")}
    for video_id, (status, frames, width, height, codec) in expected.items():
        row = rows[video_id]
        assert table["status"][row] == status
        assert (table["n_frames"][row], table["width"][row], table["height"][row]) == (
            frames, width, height)
        assert table["codec"][row] == codec and table["fps"][row] == 25
        assert table["n_clips"][row] == max(1, clips_of(frames)), video_id
    broken = rows["broken.mp4"]
    assert table["status"][broken] == "error" and table["error"][broken]
    assert read_attributes(str(out))["layers"] == ""
    with h5py.File(out) as handle:
        assert list(handle["features"].keys()) == []
    with pytest.raises(StoreError, match="has no features"):
        read_features(str(out))

    again = subprocess.run([sys.executable, "-m", "c3d_extract", str(folder), "-o", str(out),
                            "--decode-only", "--quiet"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 3 and "skipped 4 already in" in again.stderr, again.stderr


def test_decode_only_refuses_weights(folder, tmp_path):
    result = subprocess.run([sys.executable, "-m", "c3d_extract", str(folder), "-o",
                             str(tmp_path / "x.h5"), "--decode-only", "--weights", "random"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "runs no network" in result.stderr


def test_frames_and_clips_are_reported_while_a_video_is_decoded(tmp_path):
    write_video(tmp_path / "long.mp4", 64)
    log = []
    options = ExtractOptions(batch_size=1, workers=1)
    for record in iter_decoded([("long.mp4", str(tmp_path / "long.mp4"))], options,
                               on_batch=lambda n: log.append(("clips", n)),
                               on_frames=lambda n: log.append(("frames", n))):
        log.append(("video", record.n_frames))
    assert log[-1] == ("video", 64)
    before = log[:-1]
    assert sum(n for kind, n in before if kind == "frames") == 64
    assert sum(n for kind, n in before if kind == "clips") == clips_of(64)
    # Counted as they happen: the first clip is counted before the last frames arrive.
    first_clip = before.index(("clips", 1))
    assert any(kind == "frames" for kind, _ in before[first_clip:])
