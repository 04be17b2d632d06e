"""What a video file declares, read with PyAV before any frame is decoded, and the judgement
of the decoded frame count against it.

Every video file is first probed with PyAV (``probe_video``): what FFmpeg reads
as text, subtitles or a still image is refused by name; the one video stream
every decoder reads is chosen (the container's default video stream, else the
first; cover art is not a video stream); and the frame count the container
declares is read (AVI and MP4/MOV headers; MKV/WebM ``Duration`` x frame rate).

Once the last frame is read the count is judged (``judge_frame_count``): well
short of the declaration is ``VideoTruncatedError``, or "damaged part way" when
the file holds more data after the point where decoding stopped; FFmpeg errors
after the first frame that are followed by more frames are damage too. With
``allow_damaged`` these become the decoder's ``damage`` (``decoders.VideoDecoder``)
instead of an error.
Containers that declare neither a count nor a duration (MPEG-PS/TS, FLV, raw
streams...) are judged against FFmpeg's estimated duration only loosely: under
half of it is a warning (``UNDECLARED_WARN_FRACTION``), never an error.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import List, Optional, Tuple

from c3d_extract.errors import VideoReadError
from c3d_extract.video.ffmpeg_messages import MP4_ATOMS, ffmpeg_log, ffmpeg_reason, first_line


class VideoTruncatedError(VideoReadError):
    """Far fewer frames decoded than the container declares, or damage part way through."""


#: FFmpeg demuxer names of the containers whose declared frame counts or durations are used.
AVI, MOV, MKV = "avi", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"
_SHORT_NAMES = {AVI: "AVI", MOV: "MP4/MOV", MKV: "MKV/WebM"}


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
UNREAD_FRACTION = 0.1


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

    with ffmpeg_log() as log:
        try:
            container = av.open(path)
        except av.error.FFmpegError as error:
            raise VideoReadError(ffmpeg_reason(error, log, path)) from None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise VideoReadError(first_line(error)) from None
        with container:
            return describe_stream(container, path)


def describe_stream(container, path: str) -> StreamInfo:
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
            if head[4:8] in MP4_ATOMS:
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

    with ffmpeg_log() as log:
        try:
            with av.open(path) as container:
                stream = (container.streams[stream_index] if stream_index is not None
                          else container.streams.video[0])
                base = stream.time_base
                pts = [packet.pts for packet in container.demux(stream)
                       if packet.size and not packet.is_discard]
        except av.error.FFmpegError as error:
            raise VideoReadError(ffmpeg_reason(error, log, path)) from None
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
    with ffmpeg_log():
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    return 0.0
                for frame in container.decode(container.streams.video[0]):
                    return float(getattr(frame, "rotation", 0) or 0)
        except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
            return 0.0
    return 0.0
