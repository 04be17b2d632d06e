"""Sequential video decoders behind one small interface.

Every backend reads frames in order (never decord's random-access
``get_batch``, which can loop forever on files with a wrong frame count) and
yields RGB uint8 frames; the caller counts them. Backends are imported only
when chosen, and run inside decode worker processes.

Frames are taken as stored: display rotation metadata is not applied (Caffe's
OpenCV reader did not apply it either), whichever backend decodes. decord
cannot be told so (it turns 180 degree videos and breaks on 90 degree ones),
so rotated videos, and videos decord fails on before its first frame, are
decoded with PyAV instead (``FALLBACK``).
"""

from __future__ import annotations

import contextlib
import os
import re
from fractions import Fraction
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.errors import UsageError, VideoReadError
from c3d_extract.frame_folders import list_frames


class DecoderUnsuitableError(VideoReadError):
    """This backend cannot decode this video faithfully; another one may."""


class VideoDecoder:
    """Open a video and yield its frames in order (RGB, H x W x 3, uint8).

    Sizes are taken from the decoded frames, never from the container header.
    """

    name = "base"
    #: Problems worth reporting that did not stop the decoding (e.g. gaps in frame numbers).
    warnings: Tuple[str, ...] = ()

    def __init__(self, path: str) -> None:
        self.path = path

    def fps(self) -> float:
        """Average frame rate from the container (0.0 when unknown); informative only."""
        raise NotImplementedError

    def frame_rate(self) -> Optional[Fraction]:
        """The average frame rate as an exact fraction (30000/1001), None when unknown."""
        fps = self.fps()
        return Fraction(fps).limit_denominator(1001) if fps > 0 else None

    def codec(self) -> str:
        """The video stream's codec as FFmpeg names it (``h264``...), "" when unknown."""
        return stream_codec(self.path)

    def frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def timed_frames(self) -> Iterator[Tuple[float, np.ndarray]]:
        """``(presentation time in seconds, frame)`` in order, for ``--fps``; the same
        times whichever backend decodes (``presentation_times``). Frames beyond the
        stream's timestamps (a damaged stream) continue at the declared rate, with a
        warning."""
        times = presentation_times(self.path)
        rate = self.frame_rate()
        if times is None and not rate:
            raise VideoReadError("the video has neither timestamps nor a declared frame "
                                 "rate to resample it by (--fps)")
        index = -1
        for index, frame in enumerate(self.frames()):
            if times is None:
                yield float(index / rate), frame  # type: ignore[operator]
            elif index < len(times):
                yield times[index], frame
            else:
                step = float(1 / rate) if rate else (times[-1] - times[0]) / max(1, len(times) - 1)
                yield times[-1] + (index - len(times) + 1) * step, frame
        if times is not None and index + 1 != len(times):
            self.warnings = self.warnings + (
                f"--fps: {index + 1} frames decoded but the stream has {len(times)} "
                "timestamps; the frames after a lost or extra one are timed one frame off",)

    def close(self) -> None:
        """Release the decoder's native resources."""

    def __enter__(self) -> "VideoDecoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: decord 0.6.0 holds native memory in proportion to the compressed bytes it has read
#: (about half of them, until the reader closes; dmlc/decord #1). Larger files are
#: decoded with PyAV, whose memory stays flat, so memory never grows with video length.
DECORD_MAX_BYTES = 64 << 20


class DecordDecoder(VideoDecoder):
    name = "decord"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        import decord

        if display_rotation(path):
            raise DecoderUnsuitableError("decord applies the display rotation of this video "
                                         "inconsistently")
        if os.path.getsize(path) > DECORD_MAX_BYTES:
            raise DecoderUnsuitableError("decord's memory grows with the bytes it reads; "
                                         "long files go to PyAV")
        try:
            self._reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        except (RuntimeError, decord.DECORDError) as error:
            # decord's text names no cause (FFmpeg logged it); ask FFmpeg through PyAV.
            raise VideoReadError(diagnose_open_failure(path) or _first_line(error)) from None

    def fps(self) -> float:
        return float(self._reader.get_avg_fps() or 0.0)

    def frames(self) -> Iterator[np.ndarray]:
        import decord

        shape = None
        while True:
            try:
                frame = self._reader.next()
            except StopIteration:
                return
            except (RuntimeError, decord.DECORDError) as error:
                raise VideoReadError(_first_line(error)) from None
            array = frame.asnumpy()
            if shape is None:
                shape = array.shape
            if array.ndim != 3 or array.shape[2] != 3 or array.shape != shape:
                # Seen on 1x1 videos: decord's frame buffer then holds padding, not pixels.
                raise DecoderUnsuitableError(f"decord returned a malformed frame of shape "
                                             f"{array.shape}")
            yield array

    def timed_frames(self) -> Iterator[Tuple[float, np.ndarray]]:
        """The shared timestamps (``presentation_times``), not decord's own
        ``get_frame_timestamp``: that is float32 (1/60 s reads 0.016666668), too coarse to
        pick the same frames as PyAV an hour into a video. A video whose timestamp count
        is not decord's frame count goes to PyAV before its first frame."""
        times = presentation_times(self.path)
        if times is not None and len(times) != len(self._reader):
            raise DecoderUnsuitableError(f"decord counts {len(self._reader)} frames but the "
                                         f"stream has {len(times)} timestamps")
        return super().timed_frames()

    def close(self) -> None:
        self._reader = None


class PyAVDecoder(VideoDecoder):
    name = "pyav"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        import av

        with _ffmpeg_log() as log:
            try:
                self._container = av.open(path)
            except av.error.FFmpegError as error:
                raise VideoReadError(_ffmpeg_reason(error, log, path)) from None
            except (OSError, UnicodeDecodeError) as error:
                raise VideoReadError(_first_line(error)) from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoReadError("the file has no video stream")
        self._stream = self._container.streams.video[0]

    def fps(self) -> float:
        rate = self.frame_rate()
        return float(rate) if rate else 0.0

    def frame_rate(self) -> Optional[Fraction]:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return Fraction(rate) if rate else None

    def codec(self) -> str:
        return str(self._stream.codec_context.name or "")

    def frames(self) -> Iterator[np.ndarray]:
        import av

        with _ffmpeg_log() as log:
            try:
                for frame in self._container.decode(self._stream):
                    yield frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError as error:
                raise VideoReadError(_ffmpeg_reason(error, log)) from None
            except ValueError as error:
                raise VideoReadError(_first_line(error)) from None

    def close(self) -> None:
        self._container.close()


class TorchCodecDecoder(VideoDecoder):
    name = "torchcodec"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        from torchcodec.decoders import VideoDecoder as _Decoder

        try:
            self._decoder = _Decoder(path, dimension_order="NHWC", num_ffmpeg_threads=1)
        except (RuntimeError, ValueError) as error:
            raise VideoReadError(_first_line(error)) from None

    def fps(self) -> float:
        return float(self._decoder.metadata.average_fps or 0.0)

    def frames(self) -> Iterator[np.ndarray]:
        index = 0
        while True:
            try:
                frame = self._decoder.get_frame_at(index)
            except IndexError:
                return
            except RuntimeError as error:
                raise VideoReadError(_first_line(error)) from None
            yield frame.data.numpy()
            index += 1


class FrameFolderDecoder(VideoDecoder):
    """A folder of numbered JPEG/PNG frames (``frame_folders``), read with OpenCV.

    ``warnings`` lists what looked wrong with the numbering or the file types.
    """

    name = "frames"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            listing = list_frames(path)
        except OSError as error:
            raise VideoReadError(f"cannot list the frame folder: {error.strerror}") from None
        if not listing.paths:
            raise VideoReadError("the folder holds no frames (JPEG/PNG files named with a "
                                 "number)")
        self.frame_paths = listing.paths
        self.warnings = listing.warnings

    def fps(self) -> float:
        return 0.0  # a folder of images has no frame rate

    def timed_frames(self) -> Iterator[Tuple[float, np.ndarray]]:
        raise VideoReadError("a frame folder has no frame rate to resample it by (--fps)")

    def codec(self) -> str:
        """The image formats of the frames, e.g. ``png`` or ``jpeg+png``."""
        kinds = {os.path.splitext(p)[1].lower().lstrip(".") for p in self.frame_paths}
        return "+".join(sorted("jpeg" if k == "jpg" else k for k in kinds))

    def frames(self) -> Iterator[np.ndarray]:
        import cv2

        shape = None
        for path in self.frame_paths:
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            name = os.path.basename(path)
            if bgr is None:
                raise VideoReadError(f"cannot read the frame {name} (missing, unreadable or "
                                     "not a JPEG/PNG image)")
            if shape is not None and bgr.shape != shape:
                raise VideoReadError(f"the frame {name} is {bgr.shape[1]}x{bgr.shape[0]}, the "
                                     f"frames before it {shape[1]}x{shape[0]}")
            shape = bgr.shape
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _nvdec(path: str) -> VideoDecoder:
    from c3d_extract.nvdec import NvdecDecoder  # NVDEC through torchcodec (its own module)

    return NvdecDecoder(path)


DECODERS: Dict[str, Callable[[str], VideoDecoder]] = {
    "decord": DecordDecoder, "pyav": PyAVDecoder, "torchcodec": TorchCodecDecoder,
    "nvdec": _nvdec,
}
#: The backend that decodes a video when the chosen one fails before its first frame.
FALLBACK: Dict[str, str] = {"decord": "pyav"}
_MODULES = {"decord": "decord", "pyav": "av", "torchcodec": "torchcodec", "nvdec": "torchcodec"}


def available_decoders() -> List[str]:
    import importlib.util

    return [name for name, module in _MODULES.items() if importlib.util.find_spec(module)]


def check_decoder(name: str) -> None:
    """Raise ``UsageError`` if the backend is unknown or not installed."""
    if name not in DECODERS:
        raise UsageError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    if name not in available_decoders():
        others = [d for d in available_decoders() if d != name]
        hint = f"; installed: {', '.join(others)}" if others else ""
        raise UsageError(f"the {name} decoder is not installed (pip install "
                         f"{_MODULES[name]}){hint}")
    if name == "nvdec":
        from c3d_extract.nvdec import check_nvdec

        check_nvdec()


def check_readable(path: str) -> None:
    """Fail early, with the plain reason, on missing, empty or unreadable files."""
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except IsADirectoryError:
        raise VideoReadError("it is a directory, not a video file") from None
    except FileNotFoundError:
        if os.path.islink(path):
            raise VideoReadError(f"broken symbolic link: its target {os.readlink(path)} "
                                 "does not exist") from None
        raise VideoReadError("the file does not exist (anymore)") from None
    except OSError as error:
        raise VideoReadError(f"cannot open the file: {error.strerror}") from None
    if empty:
        raise VideoReadError("the file is empty (0 bytes)")


def open_decoder(name: str, path: str) -> VideoDecoder:
    """Backend ``name`` on the video file ``path``; a folder is read as a frame folder."""
    if os.path.isdir(path):
        return FrameFolderDecoder(path)
    check_readable(path)
    return DECODERS[name](path)


def presentation_times(path: str) -> Optional[List[float]]:
    """The presentation time (seconds) of each frame in display order, for ``--fps``: the
    pts of the first video stream's packets (read with PyAV, no decoding) times the time
    base, sorted; frame i of any decoder gets the i-th. None when a packet has no pts
    (then frame i is at i / the declared rate).

    Not the decoded frames' own ``frame.time``: in an AVI with B-frames those follow the
    packets' decoding order (measured: 0.04, 0.12, 0.16, 0.08 s...); sorted, they are the
    display times. Packets FFmpeg discards (before an edit list's start) and empty ones
    are left out, as no frame comes of them.
    """
    import av

    with _ffmpeg_log() as log:
        try:
            with av.open(path) as container:
                stream = container.streams.video[0]
                base = stream.time_base
                pts = [packet.pts for packet in container.demux(stream)
                       if packet.size and not packet.is_discard]
        except av.error.FFmpegError as error:
            raise VideoReadError(_ffmpeg_reason(error, log, path)) from None
        except IndexError:
            raise VideoReadError("the file has no video stream") from None
    if not pts or any(value is None for value in pts) or base is None:
        return None
    return [float(value * base) for value in sorted(pts)]


def stream_codec(path: str) -> str:
    """The codec of the first video stream, read with PyAV; "" if PyAV cannot tell."""
    try:
        import av
    except ImportError:
        return ""
    with _ffmpeg_log():
        try:
            with av.open(path) as container:
                if container.streams.video:
                    return str(container.streams.video[0].codec_context.name or "")
        except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
            pass
    return ""


def display_rotation(path: str) -> float:
    """The rotation (degrees) a player would apply to the first frame; 0 if none or unknown."""
    try:
        import av
    except ImportError:
        return 0.0
    with _ffmpeg_log():
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    return 0.0
                for frame in container.decode(container.streams.video[0]):
                    return float(getattr(frame, "rotation", 0) or 0)
        except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
            return 0.0
    return 0.0


def diagnose_open_failure(path: str) -> str:
    """Why FFmpeg cannot open ``path`` as a video, or "" if PyAV cannot tell."""
    try:
        import av
    except ImportError:
        return ""
    with _ffmpeg_log() as log:
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    return "the file has no video stream"
        except av.error.FFmpegError as error:
            return _ffmpeg_reason(error, log, path)
        except (OSError, ValueError, UnicodeDecodeError):
            return ""
    return ""


@contextlib.contextmanager
def _ffmpeg_log() -> Iterator[List[Tuple[int, str, str]]]:
    """Capture what FFmpeg logs meanwhile (through PyAV): a live list of
    ``(level, component, text)``, read by ``_ffmpeg_reason``."""
    try:
        import av.logging
    except ImportError:
        yield []
        return
    if av.logging.get_level() is None or av.logging.get_level() < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # else a cause seen for an earlier video goes missing
    with av.logging.Capture() as captured:
        yield captured


def _error_lines(log: Sequence[Tuple[int, str, str]]) -> List[str]:
    import av.logging

    return [f"{name}: {text.strip()}" if name else text.strip()
            for level, name, text in log if level <= av.logging.ERROR and text.strip()]


_MP4_ATOMS = (b"ftyp", b"mdat", b"moov", b"free", b"skip", b"wide", b"pnot")
_TRUNCATED_MP4 = ("the MP4 index (moov atom) is missing: the file is truncated or its "
                  "recording was never finished")


def _ffmpeg_reason(error: BaseException, captured: Sequence[Tuple[int, str, str]] = (),
                   path: Optional[str] = None) -> str:
    """FFmpeg's error text, with the cause FFmpeg logged when there is one.

    ``path`` is given when the error came from opening the file.
    """
    reason = getattr(error, "strerror", None)
    reason = str(reason) if reason else _first_line(error)
    log = _error_lines(captured) if captured else []
    detail = f"{reason}; {log[-1][:200]}" if log else reason
    if path is not None and any("moov atom not found" in line for line in log) \
            and _starts_like_mp4(path):
        return f"{_TRUNCATED_MP4} ({detail})"
    if getattr(error, "errno", None) == _AVERROR_INVALIDDATA:
        if path is not None:
            return f"FFmpeg does not recognise the file as a video ({detail})"
        return f"the video data is damaged or cut short ({detail})"
    return detail


def _starts_like_mp4(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(8)[4:] in _MP4_ATOMS
    except OSError:
        return False


_AVERROR_INVALIDDATA = 0x41444E49  # FFERRTAG('I', 'N', 'D', 'A'), as PyAV reports it
_DECORD_FFMPEG_CODE = re.compile(r"failed with (-?\d+)")


_NATIVE_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")


def _first_line(error: BaseException) -> str:
    """The informative part of a decoder's error text, on one line.

    decord's messages put the cause last, after a source location:
    ``Error reading x.mp4...[12:00:00] video_reader.cc:83: ERROR opening: x.mp4, <cause>``.
    """
    text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    native = [line for line in lines if "ERROR" in line.upper()]
    if native:
        detail = _NATIVE_PREFIX.sub("", native[-1].split("...")[-1])
        cause = detail.rsplit(", ", 1)[-1] if "ERROR opening" in detail else detail
        return _name_ffmpeg_code(cause)[:300]
    return lines[0][:300]


def _name_ffmpeg_code(text: str) -> str:
    """``av_read_frame failed with 1094995529`` -> ``... (Invalid data found ...)``."""
    match = _DECORD_FFMPEG_CODE.search(text)
    if match is None:
        return text
    try:
        import av

        av.error.err_check(-abs(int(match.group(1))))
    except ImportError:
        return text
    except av.error.FFmpegError as error:
        return f"{text.replace('Error: ', '')} ({error.strerror})"
    return text
