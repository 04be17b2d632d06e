"""Sequential video decoders behind one small interface.

Every backend reads frames in order (never decord's random-access
``get_batch``, which can loop forever on files with a wrong frame count) and
yields RGB uint8 frames; the caller counts them. Backends are imported only
when chosen, and run inside decode worker processes.

Frames are taken as stored: display rotation metadata is not applied (Caffe's
OpenCV reader did not apply it either), whichever backend decodes. decord
cannot be told so (it turns 180 degree videos and breaks on 90 degree ones),
so rotated videos, and videos decord fails on before its first frame, are
decoded with PyAV instead (``opening.FALLBACK``). decord decodes only
container/codec pairs whose frames a test of ours proved identical to PyAV's
(``DECORD_PROVEN``), and only when its own frame count is the declared one; every
other video goes to PyAV, and the reason is kept (``VideoDecoder.notes``).

The file is probed first (``probe``); ``opening`` chooses the backend and opens it.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterator, List, Optional, Tuple

import numpy as np

from c3d_extract.errors import VideoReadError
from c3d_extract.video.ffmpeg_messages import (diagnose_open_failure, error_lines, ffmpeg_log,
                                               ffmpeg_reason, first_line)
from c3d_extract.video.frame_folders import list_frames
from c3d_extract.video.probe import (AVI, MKV, MOV, UNREAD_FRACTION, StreamInfo,
                                     VideoTruncatedError, describe_stream, display_rotation,
                                     judge_frame_count, presentation_times, undeclared_warning)


class DecoderUnsuitableError(VideoReadError):
    """This backend cannot decode this video faithfully; another one may."""


#: (container, codec) pairs whose frames decord decodes identically to PyAV, as proven by
#: ``tests/video/test_video_checks.py`` (8-bit 4:2:0 of even size, one video stream). Every
#: other video is decoded with PyAV.
DECORD_PROVEN = frozenset({
    (AVI, "h264"), (AVI, "mpeg4"), (AVI, "mjpeg"),
    (MOV, "h264"), (MOV, "mpeg4"),
    (MKV, "h264"), (MKV, "mpeg4"), (MKV, "mpeg2video"), (MKV, "vp8"), (MKV, "vp9"),
})
_DECORD_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p"})


def decord_unsuitable(info: StreamInfo) -> Optional[str]:
    """Why decord must not decode this video (PyAV does instead), or None."""
    if (info.container, info.codec) not in DECORD_PROVEN:
        return f"decord is not proven for {info.codec} in {info.container.split(',')[0]}"
    if info.n_video_streams > 1:
        return "decord cannot be told which of several video streams to decode"
    if info.pix_fmt not in _DECORD_PIXEL_FORMATS:
        return f"decord is not proven for the pixel format {info.pix_fmt or 'unknown'}"
    if info.width % 2 or info.height % 2:
        return f"decord is not proven for odd frame sizes ({info.width}x{info.height})"
    if info.declared_frames <= 0:
        return "the container declares no frame count to check decord's against"
    return None


class VideoDecoder:
    """Open a video and yield its frames in order (RGB, H x W x 3, uint8).

    Sizes are taken from the decoded frames, never from the container header.
    """

    name = "base"
    #: Problems worth reporting that did not stop the decoding (e.g. gaps in frame numbers).
    warnings: Tuple[str, ...] = ()

    def __init__(self, path: str, info: Optional[StreamInfo] = None,
                 allow_damaged: bool = False) -> None:
        self.path = path
        self.info = info
        self.allow_damaged = allow_damaged
        #: Why the video is damaged or short, when ``allow_damaged`` let it pass ("" if not).
        self.damage = ""
        #: How the video came to be read by this backend (decoder choice, fallback): kept
        #: in the video table, not shown as warnings.
        self.notes: Tuple[str, ...] = ()
        if info is not None:
            self.warnings = info.warnings()
        #: Frames yielded so far by ``frames``.
        self.n_decoded = 0

    def fps(self) -> float:
        """The stream's declared frame rate (0.0 when unknown); informative only."""
        rate = self.frame_rate()
        return float(rate) if rate else 0.0

    def frame_rate(self) -> Optional[Fraction]:
        """The declared frame rate as an exact fraction (30000/1001), None when unknown."""
        return self.info.rate if self.info is not None else None

    def declared_frames(self) -> int:
        """The frames the container declares (0 when it declares none)."""
        return self.info.declared_frames if self.info is not None else 0

    def codec(self) -> str:
        """The video stream's codec as FFmpeg names it (``h264``...), "" when unknown."""
        return self.info.codec if self.info is not None else ""

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame in order; at the end the count is judged against the container's
        declaration (``VideoTruncatedError``, or ``damage`` with ``allow_damaged``). With
        ``allow_damaged`` a decoding error after the first frame ends the video there, its
        text kept in ``damage``."""
        self.n_decoded = 0
        try:
            for frame in self._frames():
                self.n_decoded += 1
                yield frame
        except DecoderUnsuitableError:
            raise
        except VideoReadError as error:
            if not (self.allow_damaged and self.n_decoded):
                raise
            self.damage = f"{error} (after {self.n_decoded} decoded frames)"
            return
        problem = self._damage_seen() or (
            judge_frame_count(self.n_decoded, self.info, self._covered_seconds())
            if self.info is not None else None)
        if problem is not None:
            problem = self._explain_shortfall(problem)
            if not self.allow_damaged:
                raise VideoTruncatedError(problem)
            self.damage = problem
        elif self.info is not None:
            warning = undeclared_warning(self.n_decoded, self.info)
            if warning:
                self.warnings += (warning,)

    def _frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def timed_frames(self) -> Iterator[Tuple[float, np.ndarray]]:
        """``(presentation time in seconds, frame)`` in order, for ``--fps``; the same
        times whichever backend decodes (``presentation_times``). Frames beyond the
        stream's timestamps (a damaged stream) continue at the declared rate, with a
        warning."""
        return self._timed(presentation_times(
            self.path, self.info.stream_index if self.info is not None else None))

    def _timed(self, times: Optional[List[float]]) -> Iterator[Tuple[float, np.ndarray]]:
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

    def _damage_seen(self) -> Optional[str]:
        """Damage the backend saw part way (errors followed by more frames), or None."""
        return None

    def _covered_seconds(self) -> Optional[float]:
        """The time the decoded frames span (first to last, plus one frame), if known."""
        return None

    def _explain_shortfall(self, problem: str) -> str:
        return problem

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

    def __init__(self, path: str, info: Optional[StreamInfo] = None,
                 allow_damaged: bool = False) -> None:
        super().__init__(path, info, allow_damaged)
        import decord

        if info is not None:
            unsuitable = decord_unsuitable(info)
            if unsuitable:
                raise DecoderUnsuitableError(unsuitable)
        if os.path.getsize(path) > DECORD_MAX_BYTES:
            raise DecoderUnsuitableError("decord's memory grows with the bytes it reads; "
                                         "long files go to PyAV")
        if display_rotation(path):
            raise DecoderUnsuitableError("decord applies the display rotation of this video "
                                         "inconsistently")
        try:
            self._reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        except (RuntimeError, decord.DECORDError) as error:
            # decord's text names no cause (FFmpeg logged it); ask FFmpeg through PyAV.
            raise VideoReadError(diagnose_open_failure(path) or first_line(error)) from None
        if info is not None and len(self._reader) != info.declared_frames:
            # decord pads up to its own estimate with copies of the last frame (MPEG-TS cut
            # mid-GOP) or stops short: only a count equal to the declared one is trusted.
            count = len(self._reader)
            self._reader = None
            raise DecoderUnsuitableError(f"decord counts {count} frames where the container "
                                         f"declares {info.declared_frames}")

    def _frames(self) -> Iterator[np.ndarray]:
        import decord

        shape = None
        while True:
            try:
                frame = self._reader.next()
            except StopIteration:
                return
            except (RuntimeError, decord.DECORDError) as error:
                raise VideoReadError(f"the video data is damaged or cut short (decord: "
                                     f"{first_line(error)})") from None
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
        times = presentation_times(
            self.path, self.info.stream_index if self.info is not None else None)
        if times is not None and len(times) != len(self._reader):
            raise DecoderUnsuitableError(f"decord counts {len(self._reader)} frames but the "
                                         f"stream has {len(times)} timestamps")
        return self._timed(times)

    def close(self) -> None:
        self._reader = None


class PyAVDecoder(VideoDecoder):
    name = "pyav"

    def __init__(self, path: str, info: Optional[StreamInfo] = None,
                 allow_damaged: bool = False) -> None:
        import av

        with ffmpeg_log() as log:
            try:
                self._container = av.open(path)
            except av.error.FFmpegError as error:
                raise VideoReadError(ffmpeg_reason(error, log, path)) from None
            except (OSError, UnicodeDecodeError) as error:
                raise VideoReadError(first_line(error)) from None
            if info is None:
                try:
                    info = describe_stream(self._container, path)
                except VideoReadError:
                    self._container.close()
                    raise
        super().__init__(path, info, allow_damaged)
        self._stream = self._container.streams[info.stream_index]
        self._end_byte = 0        # where the last packet read ends in the file
        self._damage: Optional[str] = None
        self._times: List[Optional[float]] = [None, None]  # first and last frame's time

    def _frames(self) -> Iterator[np.ndarray]:
        import av

        with ffmpeg_log() as log:
            errors_before = None  # error lines logged before the first frame (a cut GOP...)
            pending: Optional[str] = None  # an error followed by more data: damage if a frame
            seen, lines = 0, []  # log entries looked at, and the error lines among them
            try:
                for packet in self._container.demux(self._stream):
                    if packet.pos is not None and packet.pos >= 0:
                        self._end_byte = max(self._end_byte, packet.pos + packet.size)
                    if packet.size and errors_before is not None and pending is None:
                        # More data after an error (not the decoder's flush at the end).
                        if len(log) != seen:
                            seen, lines = len(log), error_lines(log)
                        if len(lines) > errors_before:
                            pending = (f"after frame {self.n_decoded} "
                                       f"({lines[errors_before][:200]})")
                    for frame in packet.decode():
                        if errors_before is None:
                            if len(log) != seen:
                                seen, lines = len(log), error_lines(log)
                            errors_before = len(lines)
                        elif pending is not None and self._damage is None:
                            self._damage = (f"damaged part way: decoding errors {pending} "
                                            "followed by more frames")
                        if frame.time is not None:
                            if self._times[0] is None:
                                self._times[0] = float(frame.time)
                            self._times[1] = float(frame.time)
                        yield frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError as error:
                raise VideoReadError(ffmpeg_reason(error, log)) from None
            except ValueError as error:
                raise VideoReadError(first_line(error)) from None

    def _damage_seen(self) -> Optional[str]:
        return self._damage

    def _covered_seconds(self) -> Optional[float]:
        first, last = self._times
        if first is None or last is None or not self.info or not self.info.rate:
            return None
        return last - first + float(1 / self.info.rate)

    def _explain_shortfall(self, problem: str) -> str:
        """A shortfall with much of the file unread is damage part way, not a cut end."""
        if not problem.startswith("truncated") or self._end_byte <= 0:
            return problem
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return problem
        unread = size - self._end_byte
        if unread > max(4096, size * UNREAD_FRACTION):
            return (f"damaged part way: decoding stopped at byte {self._end_byte} of {size}; "
                    f"{problem[len('truncated: '):]}")
        return problem

    def close(self) -> None:
        self._container.close()


class TorchCodecDecoder(VideoDecoder):
    name = "torchcodec"

    def __init__(self, path: str, info: Optional[StreamInfo] = None,
                 allow_damaged: bool = False) -> None:
        super().__init__(path, info, allow_damaged)
        from torchcodec.decoders import VideoDecoder as _Decoder

        stream = {"stream_index": info.stream_index} if info is not None else {}
        try:
            self._decoder = _Decoder(path, dimension_order="NHWC", num_ffmpeg_threads=1,
                                     **stream)
        except (RuntimeError, ValueError) as error:
            raise VideoReadError(first_line(error)) from None

    def _frames(self) -> Iterator[np.ndarray]:
        index = 0
        while True:
            try:
                frame = self._decoder.get_frame_at(index)
            except IndexError:
                return
            except RuntimeError as error:
                raise VideoReadError(first_line(error)) from None
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

    def _frames(self) -> Iterator[np.ndarray]:
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
