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

Every video file is first probed with PyAV (``probe_video``): what FFmpeg reads
as text, subtitles or a still image is refused by name; the one video stream
every decoder reads is chosen (the container's default video stream, else the
first; cover art is not a video stream); and the frame count the container
declares is read (AVI and MP4/MOV headers; MKV/WebM ``Duration`` x frame rate).
decord decodes only container/codec pairs whose frames a test of ours proved
identical to PyAV's (``DECORD_PROVEN``), and only when its own frame count is
the declared one; every other video goes to PyAV, and the reason is kept
(``VideoDecoder.notes``).

Once the last frame is read the count is judged (``judge_frame_count``): well
short of the declaration is ``VideoTruncatedError``, or "damaged part way" when
the file holds more data after the point where decoding stopped; FFmpeg errors
after the first frame that are followed by more frames are damage too. With
``allow_damaged`` these become ``VideoDecoder.damage`` instead of an error.
Containers that declare neither a count nor a duration (MPEG-PS/TS, FLV, raw
streams...) are judged against FFmpeg's estimated duration only loosely: under
half of it is a warning (``UNDECLARED_WARN_FRACTION``), never an error.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.errors import UsageError, VideoReadError
from c3d_extract.video.frame_folders import list_frames


class DecoderUnsuitableError(VideoReadError):
    """This backend cannot decode this video faithfully; another one may."""


class VideoTruncatedError(VideoReadError):
    """Far fewer frames decoded than the container declares, or damage part way through."""


# ---------------------------------------------------------------- what the container says

#: FFmpeg demuxer names of the containers whose declared frame counts or durations are used.
AVI, MOV, MKV = "avi", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"
#: Demuxers and codecs through which FFmpeg shows text as pictures ("ANSI art").
_TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "idf", "adf"})
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf", "text"})
#: A declared count may exceed the decoded one by this much (dropped or edited-out frames,
#: a duration rounded to milliseconds): at least ``SHORTFALL_FRAMES``, else this fraction.
SHORTFALL_FRACTION = 0.02
SHORTFALL_FRAMES = 2
#: Without a declaration, fewer than this fraction of FFmpeg's estimate is only a warning.
UNDECLARED_WARN_FRACTION = 0.5
#: Decoding that stops with more than this fraction of the file (and 4 KiB) still unread
#: stopped at damage, not at the end of a truncated file.
_UNREAD_FRACTION = 0.1


@dataclass(frozen=True)
class StreamInfo:
    """The video stream every decoder reads, and what its container declares about it."""

    container: str             # FFmpeg's demuxer name ("avi", "mpegts"...)
    codec: str                 # the stream's codec as FFmpeg names it
    stream_index: int          # the stream's index in the container
    n_video_streams: int       # video streams, cover art not counted
    pix_fmt: str
    width: int
    height: int
    rate: Optional[Fraction]   # the declared frame rate, None when unknown
    declared_frames: int       # frames the container declares; 0 when it declares none
    declared_by: str           # "frame count", "duration" or ""
    estimated_frames: int      # FFmpeg's estimate when nothing is declared (0 if none)
    declared_seconds: float = 0.0  # the declared duration behind a "duration" count

    def warnings(self) -> Tuple[str, ...]:
        if self.n_video_streams > 1:
            return (f"the file has {self.n_video_streams} video streams: stream "
                    f"{self.stream_index} ({self.codec} {self.width}x{self.height}) was "
                    "decoded",)
        return ()


def choose_rate(average: Optional[Fraction], guessed: Optional[Fraction]) -> Optional[Fraction]:
    """The stream's frame rate: its average rate unless that is off by more than a factor of
    two from FFmpeg's guessed (declared) rate, as with DV (average 60000 for 25 fps)."""
    average = average if average and average > 0 else None
    guessed = guessed if guessed and guessed > 0 else None
    if average is None or guessed is None:
        return average or guessed
    return average if guessed / 2 <= average <= guessed * 2 else guessed


def judge_frame_count(decoded: int, info: StreamInfo,
                      covered_seconds: Optional[float] = None) -> Optional[str]:
    """Why ``decoded`` frames are too few for what the container declares, or None.

    A declared count is missed by more than ``max(SHORTFALL_FRAMES, SHORTFALL_FRACTION x
    declared)`` frames: ``truncated: D of N frames decoded``. A count derived from a declared
    duration is an estimate (variable frame rates): when the decoded frames' timestamps
    (``covered_seconds``, first to last frame plus one frame) reach the duration within the
    same tolerance, the video is whole whatever its count.
    """
    declared = info.declared_frames
    if declared <= 0:
        return None
    allowed = max(SHORTFALL_FRAMES, math.floor(declared * SHORTFALL_FRACTION))
    if declared - decoded <= allowed:
        return None
    if info.declared_by == "duration" and covered_seconds is not None and info.rate \
            and info.declared_seconds - covered_seconds <= allowed / info.rate:
        return None
    kind = _SHORT_NAMES.get(info.container, info.container.split(",")[0])
    what = {"frame count": f"declared by the {kind} header", "index": f"listed in the {kind} index",
            "duration": f"the {kind} duration x frame rate"}.get(info.declared_by, "declared")
    return f"truncated: {decoded} of {declared} frames decoded ({what})"


def undeclared_warning(decoded: int, info: StreamInfo) -> Optional[str]:
    """A warning when a container that declares nothing gave far fewer frames than FFmpeg
    estimates from its duration; None otherwise."""
    if info.declared_frames > 0 or info.estimated_frames <= 0:
        return None
    if decoded >= info.estimated_frames * UNDECLARED_WARN_FRACTION:
        return None
    return (f"only {decoded} frames decoded where the duration suggests about "
            f"{info.estimated_frames}; the {info.container} container declares no frame "
            "count, so the video may be truncated")


def probe_video(path: str) -> StreamInfo:
    """Open ``path`` with PyAV and describe the video stream to decode.

    Raises ``VideoReadError`` for files FFmpeg cannot open and for what is not a video
    (text, subtitles, audio, still images), naming what FFmpeg reads it as.
    """
    import av

    with _ffmpeg_log() as log:
        try:
            container = av.open(path)
        except av.error.FFmpegError as error:
            raise VideoReadError(_ffmpeg_reason(error, log, path)) from None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise VideoReadError(first_line(error)) from None
        with container:
            return _describe(container, path)


def _describe(container, path: str) -> StreamInfo:
    import av

    name = os.path.basename(path)
    fmt = str(container.format.name or "")
    videos = [s for s in container.streams.video
              if not (s.disposition & av.stream.Disposition.attached_pic)]
    codecs = [str(s.codec_context.name or "") for s in videos]
    if fmt in _TEXT_FORMATS or any(c in _TEXT_CODECS for c in codecs):
        raise VideoReadError(f"{name}: not a video (FFmpeg reads it as {fmt}/"
                             f"{'/'.join(codecs) or 'text'} text)")
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise VideoReadError(f"{name}: not a video (FFmpeg reads it as a still "
                             f"{'/'.join(codecs) or fmt} image)")
    if not videos:
        kinds = sorted({s.type for s in container.streams if s.type != "video"})
        if "subtitle" in kinds and "audio" not in kinds:
            raise VideoReadError(f"{name}: not a video (FFmpeg reads it as {fmt} subtitles)")
        if container.streams.video:
            raise VideoReadError("the file has no video stream (only cover art)")
        return_kinds = f" ({', '.join(kinds)} only)" if kinds else ""
        raise VideoReadError(f"the file has no video stream{return_kinds}")
    default = [s for s in videos if s.disposition & av.stream.Disposition.default]
    stream = (default or videos)[0]
    context = stream.codec_context
    rate = choose_rate(_fraction(stream.average_rate), _fraction(stream.guessed_rate))
    declared, declared_by, estimated, seconds_declared = 0, "", 0, 0.0
    indexed = avi_index_frames(path, stream.index) if fmt == AVI else None
    if indexed is not None:
        declared, declared_by = indexed, "index"
    elif fmt in (AVI, MOV) and int(stream.frames or 0) > 0:
        declared, declared_by = int(stream.frames), "frame count"
    elif fmt == MKV and container.duration and rate:
        declared = int(round(Fraction(container.duration, 1_000_000) * rate))
        declared_by, seconds_declared = "duration", container.duration / 1_000_000
    elif rate:
        seconds = None
        if stream.duration and stream.time_base:
            seconds = stream.duration * stream.time_base
        elif container.duration:
            seconds = Fraction(container.duration, 1_000_000)
        if seconds:
            estimated = int(round(seconds * rate))
    return StreamInfo(container=fmt, codec=str(context.name or ""), stream_index=stream.index,
                      n_video_streams=len(videos), pix_fmt=str(context.pix_fmt or ""),
                      width=int(context.width or 0), height=int(context.height or 0),
                      rate=rate, declared_frames=declared, declared_by=declared_by,
                      estimated_frames=estimated, declared_seconds=seconds_declared)


def avi_index_frames(path: str, stream_number: int) -> Optional[int]:
    """The frames of stream ``stream_number`` listed in a complete AVI ``idx1`` index (chunks
    of size 0, dropped frames, not counted); None when the file has no complete index, as a
    truncated AVI has not. A complete index outranks the header's count, which may be wrong."""
    import struct

    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
                return None
            size = os.fstat(handle.fileno()).st_size
            offset = 12
            while offset + 8 <= size:
                handle.seek(offset)
                chunk = handle.read(8)
                kind, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if kind == b"idx1":
                    if offset + 8 + length > size:
                        return None
                    entries = handle.read(length - length % 16)
                    wanted = (b"%02d" % stream_number)
                    return sum(1 for i in range(0, len(entries), 16)
                               if entries[i:i + 2] == wanted and entries[i + 2:i + 4] in
                               (b"dc", b"db") and struct.unpack_from("<I", entries, i + 12)[0])
                offset += 8 + length + (length & 1)
    except (OSError, struct.error):
        return None
    return None


def cut_short(path: str) -> Optional[str]:
    """Why the file is shorter than its own container structure says, or None: the cheap
    check of a dataset scan, reading a few header bytes and no frame.

    AVI: the RIFF size runs past the end; MP4/MOV: a top-level atom (usually ``mdat``) runs
    past the end; MKV/WebM: the Segment's size runs past the end (a live recording's
    "unknown size" is not judged). A cut file is caught by the frame count check too, but
    only once it is decoded to its end.
    """
    import struct

    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(16)
            if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
                end = 8 + struct.unpack("<I", head[4:8])[0]
                return _past_end("AVI", "RIFF header", end, size)
            if head[4:8] in _MP4_ATOMS:
                return _mp4_cut_short(handle, size)
            if head[:4] == b"\x1a\x45\xdf\xa3":
                return _mkv_cut_short(handle, size)
    except (OSError, struct.error):
        return None
    return None


def _past_end(kind: str, what: str, end: int, size: int) -> Optional[str]:
    if end <= size:
        return None
    return (f"truncated: the {kind} {what} says the file has {end} bytes, it has {size} "
            f"({100 * size // end} %)")


def _mp4_cut_short(handle, size: int) -> Optional[str]:
    import struct

    offset = 0
    while offset + 8 <= size:
        handle.seek(offset)
        head = handle.read(16)
        length, kind = struct.unpack(">I", head[:4])[0], head[4:8]
        if length == 1 and len(head) == 16:
            length = struct.unpack(">Q", head[8:16])[0]
        elif length == 0:
            return None  # runs to the end of the file, whatever that is
        if length < 8:
            return None  # not an atom: leave it to FFmpeg
        if offset + length > size:
            return _past_end("MP4", f"atom {kind.decode('latin-1')!r}", offset + length, size)
        offset += length
    return None


def _mkv_cut_short(handle, size: int) -> Optional[str]:
    handle.seek(4)
    header_size, used = _ebml_number(handle.read(8))
    if header_size is None:
        return None
    handle.seek(4 + used + header_size)
    if handle.read(4) != b"\x18\x53\x80\x67":  # Segment
        return None
    start = handle.tell()
    segment_size, used = _ebml_number(handle.read(8))
    if segment_size is None:
        return None
    return _past_end("MKV/WebM", "Segment", start + used + segment_size, size)


def _ebml_number(data: bytes) -> Tuple[Optional[int], int]:
    """An EBML variable-size integer: (value, bytes used); value None when unknown/invalid."""
    if not data or data[0] == 0:
        return None, 0
    length = 8 - data[0].bit_length() + 1
    if len(data) < length:
        return None, 0
    value = data[0] & ((1 << (8 - length)) - 1)
    for byte in data[1:length]:
        value = (value << 8) | byte
    if value == (1 << (7 * length)) - 1:
        return None, length  # "unknown size" (live streams)
    return value, length


def _fraction(value) -> Optional[Fraction]:
    return Fraction(value) if value else None


#: (container, codec) pairs whose frames decord decodes identically to PyAV, as proven by
#: ``tests/test_decoder_choice.py`` (8-bit 4:2:0 of even size, one video stream). Every
#: other video is decoded with PyAV.
DECORD_PROVEN = frozenset({
    (AVI, "h264"), (AVI, "mpeg4"), (AVI, "mjpeg"),
    (MOV, "h264"), (MOV, "mpeg4"),
    (MKV, "h264"), (MKV, "mpeg4"), (MKV, "mpeg2video"), (MKV, "vp8"), (MKV, "vp9"),
})
_SHORT_NAMES = {AVI: "AVI", MOV: "MP4/MOV", MKV: "MKV/WebM"}
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

        with _ffmpeg_log() as log:
            try:
                self._container = av.open(path)
            except av.error.FFmpegError as error:
                raise VideoReadError(_ffmpeg_reason(error, log, path)) from None
            except (OSError, UnicodeDecodeError) as error:
                raise VideoReadError(first_line(error)) from None
            if info is None:
                try:
                    info = _describe(self._container, path)
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

        with _ffmpeg_log() as log:
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
                            seen, lines = len(log), _error_lines(log)
                        if len(lines) > errors_before:
                            pending = (f"after frame {self.n_decoded} "
                                       f"({lines[errors_before][:200]})")
                    for frame in packet.decode():
                        if errors_before is None:
                            if len(log) != seen:
                                seen, lines = len(log), _error_lines(log)
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
                raise VideoReadError(_ffmpeg_reason(error, log)) from None
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
        if unread > max(4096, size * _UNREAD_FRACTION):
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


def _nvdec(path: str, info: Optional[StreamInfo] = None,
           allow_damaged: bool = False) -> VideoDecoder:
    from c3d_extract.video.nvdec import NvdecDecoder  # NVDEC through torchcodec (its own module)

    return NvdecDecoder(path, info, allow_damaged)


DECODERS: Dict[str, Callable[..., VideoDecoder]] = {
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
        from c3d_extract.video.nvdec import check_nvdec

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


def open_decoder(name: str, path: str, allow_damaged: bool = False) -> VideoDecoder:
    """Backend ``name`` on the video file ``path``; a folder is read as a frame folder.

    The file is probed first (``probe_video``). When decord is asked for a video it is not
    proven on (``decord_unsuitable``) or cannot decode faithfully (its frame count is not the
    declared one, rotation...), PyAV decodes it and says why in ``notes``.
    """
    if os.path.isdir(path):
        return FrameFolderDecoder(path)
    check_readable(path)
    info = probe_video(path)
    note = ""
    if name == "decord":
        reason = decord_unsuitable(info)
        if reason is not None and "pyav" in available_decoders():
            name, note = "pyav", f"decoded with PyAV: {reason}"
    try:
        decoder = DECODERS[name](path, info, allow_damaged)
    except DecoderUnsuitableError as error:
        fallback = FALLBACK.get(name)
        if fallback is None or fallback not in available_decoders():
            raise
        name, note = fallback, f"decoded with PyAV: {error}"
        decoder = DECODERS[name](path, info, allow_damaged)
    if note:
        decoder.notes += (note,)
    return decoder


def presentation_times(path: str,
                       stream_index: Optional[int] = None) -> Optional[List[float]]:
    """The presentation time (seconds) of each frame in display order, for ``--fps``: the
    pts of the video stream's packets (stream ``stream_index``, else the first video
    stream; read with PyAV, no decoding) times the time base, sorted; frame i of any
    decoder gets the i-th. None when a packet has no pts (then frame i is at i / the
    declared rate).

    Not the decoded frames' own ``frame.time``: in an AVI with B-frames those follow the
    packets' decoding order (measured: 0.04, 0.12, 0.16, 0.08 s...); sorted, they are the
    display times. Packets FFmpeg discards (before an edit list's start) and empty ones
    are left out, as no frame comes of them.
    """
    import av

    with _ffmpeg_log() as log:
        try:
            with av.open(path) as container:
                stream = (container.streams[stream_index] if stream_index is not None
                          else container.streams.video[0])
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
    reason = str(reason) if reason else first_line(error)
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
_DECORD_FFMPEG_CODE = re.compile(r"(?:failed with |\()(-?\d{5,})")


_NATIVE_PREFIX = re.compile(r"^(?:\[[0-9:]+\] \S+:\d+: )+")


def first_line(error: BaseException) -> str:
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
    return _NATIVE_PREFIX.sub("", lines[0])[:300]


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
