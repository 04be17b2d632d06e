"""Frame folders: discovery, frame order, reported problems, OpenCV decoding, and features
equal to those of the same frames in a lossless (FFV1) video."""

import json
import os
import re

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from c3d_extract.errors import InputNotFoundError, VideoReadError
from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import extract
from c3d_extract.store.read import read_features
from c3d_extract.video.decoders import FrameFolderDecoder
from c3d_extract.video.frame_folders import is_frame_name, list_frames, natural_key
from c3d_extract.video.opening import open_decoder
from c3d_extract.video.sources import discover
from tests.support.videos import decode_rgb, moving_bar, write_video


def write_frames(folder, frames, name="frame{}.png", first=1):
    """RGB frames as image files (OpenCV writes BGR), numbered from ``first`` unpadded."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(frames, first):
        assert cv2.imwrite(str(folder / name.format(number)),
                           cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def test_frame_names_and_natural_order():
    assert is_frame_name("frame2.PNG") and is_frame_name("img_0001.jpeg")
    assert not is_frame_name("frame.png") and not is_frame_name("frame2.txt")
    assert sorted(["frame10", "frame2", "Frame1"], key=natural_key) == \
        ["Frame1", "frame2", "frame10"]


def test_listing_order_and_warnings(tmp_path):
    for name in ["frame10.png", "frame2.png", "frame1.png", "frame3.jpg", "frame5.png",
                 ".hidden.png", "Thumbs.db"]:
        (tmp_path / name).write_bytes(b"")
    listing = list_frames(str(tmp_path))
    assert [os.path.basename(p) for p in listing.paths] == \
        ["frame1.png", "frame2.png", "frame3.jpg", "frame5.png", "frame10.png"]
    text = "\n".join(listing.warnings)
    assert "left out 1 file not named as numbered JPEG/PNG frames: Thumbs.db" in text
    assert "mixed image types: 1 .jpg, 4 .png" in text
    assert "gaps in the frame numbering (5 numbers missing): 3 -> 5, 5 -> 10" in text


def test_repeated_numbers_are_reported(tmp_path):
    for name in ["a_1.png", "a_01.png", "a_2.png"]:
        (tmp_path / name).write_bytes(b"")
    assert any("more than one file: 1" in w for w in list_frames(str(tmp_path)).warnings)


def test_discovery_tells_frame_folders_from_folders_of_videos(tmp_path):
    root = tmp_path / "root"
    for relative in ["a.mp4", "frames/v1/img_1.jpg", "frames/v1/img_2.jpg",
                     "frames/v2/img_10.png", "frames/v2/notes.txt", "class x/v3/00001.jpg",
                     "mixed/b.mp4", "mixed/001.jpg"]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x")
    # v2 holds a non-image, mixed holds a video: neither is a frame folder when searching.
    assert [s.id for s in discover([str(root)])] == \
        ["a.mp4", "class x/v3", "frames/v1", "mixed/b.mp4"]
    assert [(s.id, s.path) for s in discover([str(root / "frames" / "v1")])] == \
        [(os.path.normpath(str(root / "frames" / "v1")), str(root / "frames" / "v1"))]
    assert [s.id for s in discover([str(root / "frames")])] == ["v1"]
    unnumbered = tmp_path / "unnumbered"
    unnumbered.mkdir()
    (unnumbered / "cover.jpg").write_bytes(b"x")
    assert [s.path for s in discover([str(unnumbered)])] == [str(unnumbered)]  # reported
    # when decoded; a folder with nothing of the kind is a mistake, named as such.
    for contents in ((), ("readme.txt",), ("sub/notes.txt",)):
        empty = tmp_path / f"empty{len(contents)}{len(''.join(contents))}"
        empty.mkdir()
        for relative in contents:
            (empty / relative).parent.mkdir(parents=True, exist_ok=True)
            (empty / relative).write_text("no video here")
        with pytest.raises(InputNotFoundError,
                           match="^no videos found in " + re.escape(str(empty)) + " "):
            discover([str(empty)])


def test_decoder_gives_rgb_frames_in_numeric_order(tmp_path):
    frames = [moving_bar(i, 40, 30) for i in range(11)]
    folder = write_frames(tmp_path / "f", frames)
    gray = np.full((30, 40), 77, np.uint8)
    assert cv2.imwrite(str(folder / "frame13.png"), gray)
    with open_decoder("decord", str(folder)) as video:
        assert isinstance(video, FrameFolderDecoder) and video.fps() == 0.0
        decoded = list(video.frames())
        assert video.warnings == ("gaps in the frame numbering (1 number missing): 11 -> 13",)
    assert len(decoded) == 12
    assert all(np.array_equal(a, b) for a, b in zip(decoded, frames))  # frame2 before frame10
    assert np.array_equal(decoded[11], np.full((30, 40, 3), 77, np.uint8))


def test_decoder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(VideoReadError, match="no frames"):
        open_decoder("pyav", str(empty))
    folder = write_frames(tmp_path / "broken", [moving_bar(i, 40, 30) for i in range(3)])
    (folder / "frame2.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VideoReadError, match="cannot read the frame frame2.png"):
        with open_decoder("pyav", str(folder)) as video:
            list(video.frames())
    write_frames(folder, [moving_bar(0, 20, 30)], first=2)
    with pytest.raises(VideoReadError, match="frame2.png is 20x30, the frames before it 40x30"):
        with open_decoder("pyav", str(folder)) as video:
            list(video.frames())


@pytest.mark.slow
def test_frame_folder_features_equal_those_of_a_lossless_video(tmp_path, random_weights):
    frames = [moving_bar(i, 64, 48) for i in range(24)]
    root = tmp_path / "videos"
    write_frames(root / "clip_frames", frames)  # frame1.png ... frame24.png
    video = write_video(root / "clip.mkv", 24, codec="ffv1", pix_fmt="bgr0")
    assert np.array_equal(decode_rgb(video), np.stack(frames))  # bgr0 <-> rgb24 is exact
    out = tmp_path / "f.h5"
    extract(str(root), str(out), weights=random_weights, options=ExtractOptions(batch_size=4))
    ids, fc6 = read_features(str(out))
    assert ids == ["clip.mkv", "clip_frames"]
    cosine = float(fc6[0] @ fc6[1] / (np.linalg.norm(fc6[0]) * np.linalg.norm(fc6[1])))
    assert cosine >= 0.99999


@pytest.mark.slow
def test_predict_reports_bad_frame_folders(tmp_path):
    from c3d_extract.cli.predict import cli

    frames = [moving_bar(i, 40, 30) for i in range(17)]
    gappy = write_frames(tmp_path / "gappy", frames[:8])
    write_frames(gappy, frames[8:], first=10)  # frame9 is missing
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "cover.jpg").write_bytes(b"x")  # not numbered: not a frame
    broken = write_frames(tmp_path / "broken", frames[:16])
    (broken / "frame5.png").write_bytes(b"")
    result = CliRunner().invoke(cli, [str(gappy), str(empty), str(broken), "--weights",
                                      "random", "--json", "-k", "1"], prog_name="c3d-predict")
    assert result.exit_code == 3, result.output
    found = {os.path.basename(p["id"]): p for p in json.loads(result.stdout)}
    assert found["gappy"]["status"] == "ok" and found["gappy"]["n_clips"] == 1
    assert "warning: " in result.stderr and "8 -> 10" in result.stderr
    assert found["empty"]["status"] == "error" and "no frames" in found["empty"]["error"]
    assert found["broken"]["status"] == "error"
    assert "cannot read the frame frame5.png" in found["broken"]["error"]
    assert "Traceback" not in result.output


def test_extract_prints_frame_folder_warnings_even_when_quiet(capsys):
    from c3d_extract.cli.extract import BarProgress
    from c3d_extract.store.records import VideoRecord

    BarProgress(quiet=True).video_done(VideoRecord("frames/v1", "ok", warnings=(
        "gaps in the frame numbering (1 number missing): 3 -> 5",)))
    assert capsys.readouterr().err == \
        "warning: frames/v1: gaps in the frame numbering (1 number missing): 3 -> 5\n"
