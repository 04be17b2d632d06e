"""A corpus of hostile inputs, written with PyAV, numpy and plain bytes.

Every maker writes one input under a folder and returns its name (the id the
extractor gives it), or raises ``Unsupported`` with the reason when this
machine's FFmpeg cannot write that kind.
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from tests.support.videos import moving_bar, write_video


class Unsupported(Exception):
    """This kind of input cannot be written here (the reason is the message)."""


def _encode(path: Path, frames, *, codec: str, pix_fmt: str, fps: int = 25,
            options: Optional[Dict[str, str]] = None, container_options=None,
            pts: Optional[list] = None, time_base: Optional[Fraction] = None,
            metadata: Optional[Dict[str, str]] = None) -> Path:
    """Encode RGB frames; ``pts`` (in ``time_base`` units) sets each frame's time."""
    import av

    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.options = options
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        if metadata:
            stream.metadata.update(metadata)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _bars(n: int, width: int = 64, height: int = 48):
    return [moving_bar(i, width, height) for i in range(n)]


# ---------------------------------------------------------------- atoms and chunks

def _atoms(data: bytes, start: int = 0, end: Optional[int] = None):
    """``(offset, size, type)`` of the top-level MP4 atoms in ``data[start:end]``."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        elif size == 0:
            size = end - offset
        if size < 8:
            return
        yield offset, size, kind
        offset += size


def frame_count_of_avi_header(data: bytes) -> int:
    """``dwTotalFrames`` of the ``avih`` main header."""
    at = data.index(b"avih") + 8
    return struct.unpack_from("<I", data, at + 16)[0]


def _patch_avi_frame_counts(data: bytearray, total: int) -> None:
    """Set ``avih.dwTotalFrames`` and the video ``strh.dwLength`` to ``total``."""
    at = data.index(b"avih") + 8
    struct.pack_into("<I", data, at + 16, total)
    strh = data.index(b"strh") + 8
    struct.pack_into("<I", data, strh + 32, total)


# ---------------------------------------------------------------- the makers

def empty(root: Path) -> str:
    (root / "empty.mp4").write_bytes(b"")
    return "empty.mp4"


def random_bytes(root: Path) -> str:
    (root / "random.mkv").write_bytes(np.random.default_rng(5).bytes(20_000))
    return "random.mkv"


def text_file(root: Path) -> str:
    (root / "text.mp4").write_text("this is a shopping list, not a video\n" * 20)
    return "text.mp4"


def _truncated(root: Path, fraction: float) -> str:
    name = f"truncated{int(fraction * 100)}.mp4"
    scratch = root / f".whole-{name}"
    whole = write_video(scratch.with_suffix(".mp4"), 24).read_bytes()
    os.unlink(scratch.with_suffix(".mp4"))
    (root / name).write_bytes(whole[:int(len(whole) * fraction)])
    return name


def truncated10(root: Path) -> str:
    return _truncated(root, 0.10)


def truncated50(root: Path) -> str:
    return _truncated(root, 0.50)


def truncated90(root: Path) -> str:
    return _truncated(root, 0.90)


def faststart_truncated(root: Path) -> str:
    """The index (moov) first, then half of the frame data: the first frames still decode."""
    path = _encode(root / "faststart_cut.mp4", _bars(32), codec="libx264", pix_fmt="yuv420p",
                   options={"crf": "10", "preset": "ultrafast"},
                   container_options={"movflags": "faststart"})
    data = path.read_bytes()
    moov = [(o, s) for o, s, k in _atoms(data) if k == b"moov"]
    mdat = [(o, s) for o, s, k in _atoms(data) if k == b"mdat"]
    if not moov or not mdat or moov[0][0] > mdat[0][0]:
        raise Unsupported("PyAV's mp4 muxer did not move the moov atom to the front")
    path.write_bytes(data[:mdat[0][0] + mdat[0][1] // 2])
    return path.name


def no_moov(root: Path) -> str:
    """Every frame's data, without the index (FFmpeg still finds a moov renamed to free)."""
    path = write_video(root / "no_moov.mp4", 24)
    data = path.read_bytes()
    (offset, size), = [(o, s) for o, s, kind in _atoms(data) if kind == b"moov"]
    path.write_bytes(data[:offset] + data[offset + size:])
    return path.name


def audio_only(root: Path) -> str:
    import av

    path = root / "audio_only.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 5) * 0.3).astype(np.float32)[None, :]
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start:start + 1024], format="fltp",
                                               layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.name


def _frames(n: int) -> Callable[[Path], str]:
    def make(root: Path) -> str:
        write_video(root / f"frames{n:02d}.mp4", n)
        return f"frames{n:02d}.mp4"

    make.__name__ = f"frames{n}"
    return make


frames1, frames15, frames16, frames17 = (_frames(n) for n in (1, 15, 16, 17))


def gray(root: Path) -> str:
    path = _encode(root / "gray.mkv", _bars(16), codec="ffv1", pix_fmt="gray")
    return path.name


def yuv444(root: Path) -> str:
    path = _encode(root / "yuv444.mp4", _bars(16), codec="libx264", pix_fmt="yuv444p",
                   options={"crf": "10", "preset": "ultrafast"})
    return path.name


def ten_bit(root: Path) -> str:
    import av

    try:
        path = _encode(root / "ten_bit.mp4", _bars(16), codec="libx264", pix_fmt="yuv420p10le",
                       options={"crf": "10", "preset": "ultrafast"})
    except (av.error.FFmpegError, ValueError) as error:
        raise Unsupported(f"the bundled libx264 cannot write 10-bit video: {error}") from None
    return path.name


def smallest(root: Path) -> str:
    """1x1 with yuv444p (4:2:0 needs even sizes)."""
    path = _encode(root / "one_pixel.mp4", _bars(16, 1, 1), codec="libx264", pix_fmt="yuv444p",
                   options={"crf": "10", "preset": "ultrafast"})
    return path.name


def huge(root: Path) -> str:
    """4000x3000, two frames: one padded clip."""
    path = _encode(root / "huge.mp4", _bars(2, 4000, 3000), codec="libx264", pix_fmt="yuv420p",
                   options={"crf": "30", "preset": "ultrafast"})
    return path.name


def odd_size(root: Path) -> str:
    path = _encode(root / "odd_63x47.avi", _bars(16, 63, 47), codec="ffv1", pix_fmt="yuv444p")
    return path.name


def even_size(root: Path) -> str:
    write_video(root / "even_34x32.mp4", 16, width=34, height=32)
    return "even_34x32.mp4"


def rotated(root: Path) -> str:
    """A 90 degree display matrix in the track header (what phones write)."""
    path = write_video(root / "rotated.mp4", 16)
    data = bytearray(path.read_bytes())
    tkhd = data.index(b"tkhd") - 4
    version = data[tkhd + 8]
    matrix = tkhd + 8 + (52 if version == 1 else 40)
    # 16.16 fixed point a, b, u, c, d, v and 2.30 x, y, w: a 90 degree turn.
    struct.pack_into(">9i", data, matrix, 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path.name


def rotation_of(path: Path) -> float:
    """The display rotation FFmpeg applies to the first frame (0 when none)."""
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return float(getattr(frame, "rotation", 0) or 0)


#: Frame times of the variable-rate video, in milliseconds: bursts and gaps.
VFR_PTS_MS = [0, 10, 20, 30, 200, 210, 220, 600, 610, 620, 630, 640, 900, 1000, 1005, 1010,
              1500, 1510, 1520, 1530]


def variable_rate(root: Path) -> str:
    path = _encode(root / "vfr.mkv", _bars(len(VFR_PTS_MS)), codec="libx264",
                   pix_fmt="yuv420p", options={"crf": "10", "preset": "ultrafast"},
                   pts=VFR_PTS_MS, time_base=Fraction(1, 1000))
    return path.name


def _avi_with_frame_count(root: Path, name: str, claimed: int) -> str:
    path = write_video(root / name, 20, codec="mpeg4")
    data = bytearray(path.read_bytes())
    _patch_avi_frame_counts(data, claimed)
    path.write_bytes(bytes(data))
    return name


def header_overcounts(root: Path) -> str:
    """An AVI that claims 5,000 frames and holds 20."""
    return _avi_with_frame_count(root, "claims_5000.avi", 5000)


def header_undercounts(root: Path) -> str:
    """An AVI that claims 3 frames and holds 20."""
    return _avi_with_frame_count(root, "claims_3.avi", 3)


def corrupt_middle(root: Path) -> str:
    """Noise over the middle third of an AVI's frame data."""
    path = write_video(root / "corrupt_middle.avi", 24, codec="mpeg4")
    data = bytearray(path.read_bytes())
    start = data.index(b"movi") + 4
    end = data.index(b"idx1")
    third = (end - start) // 3
    noise = np.random.default_rng(7).integers(0, 256, third, dtype=np.uint8).tobytes()
    data[start + third:start + 2 * third] = noise
    path.write_bytes(bytes(data))
    return path.name


def strange_name(root: Path) -> str:
    name = "it's a \"clip\" – ünïcødé ñame.mp4"
    write_video(root / name, 16)
    return name


def symlink(root: Path) -> str:
    root = root.resolve()
    target = root.parent / (root.name + "-elsewhere")
    target.mkdir(exist_ok=True)
    write_video(target / "target.mp4", 16)
    os.symlink(target / "target.mp4", root / "link.mp4")
    return "link.mp4"


def broken_symlink(root: Path) -> str:
    os.symlink(root.resolve() / "gone" / "missing.mp4", root / "broken_link.mp4")
    return "broken_link.mp4"


def directory_named_like_a_video(root: Path) -> str:
    """``folder.mp4/`` is a folder: searched, not decoded; the video inside is found."""
    (root / "folder.mp4").mkdir()
    write_video(root / "folder.mp4" / "inside.mp4", 16)
    return "folder.mp4/inside.mp4"


def unreadable(root: Path) -> str:
    if os.geteuid() == 0:
        raise Unsupported("running as root: permissions do not stop root from reading")
    path = write_video(root / "unreadable.mp4", 16)
    os.chmod(path, 0)
    return path.name


def image_named_mp4(root: Path) -> str:
    """A PNG picture with a video extension: FFmpeg reads it as a one-frame video."""
    import cv2

    ok, png = cv2.imencode(".png", moving_bar(0, 64, 48))
    (root / "picture.mp4").write_bytes(png.tobytes())
    return "picture.mp4"


MAKERS = [
    empty, random_bytes, text_file, truncated10, truncated50, truncated90, faststart_truncated,
    no_moov, audio_only, frames1, frames15, frames16, frames17, gray, yuv444, ten_bit, smallest,
    huge, odd_size, even_size, rotated, variable_rate, header_overcounts, header_undercounts,
    corrupt_middle, strange_name, symlink, broken_symlink, directory_named_like_a_video,
    unreadable, image_named_mp4,
]


def build(root: Path) -> Dict[str, str]:
    """Write every kind under ``root``; ``{kind: id}`` and ``{kind: reason}`` for skipped ones."""
    root.mkdir(parents=True, exist_ok=True)
    made: Dict[str, str] = {}
    skipped: Dict[str, str] = {}
    for maker in MAKERS:
        try:
            made[maker.__name__] = maker(root)
        except Unsupported as reason:
            skipped[maker.__name__] = str(reason)
    return made, skipped
