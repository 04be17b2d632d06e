"""FFmpeg's errors as one plain line: its log captured while a file is opened, its codes
named, and why a file that will not open is not a video."""

from __future__ import annotations

import contextlib
import re
from typing import Iterator, List, Optional, Sequence, Tuple

#: Atoms an MP4/MOV file starts with.
MP4_ATOMS = (b"ftyp", b"mdat", b"moov", b"free", b"skip", b"wide", b"pnot")
_TRUNCATED_MP4 = ("the MP4 index (moov atom) is missing: the file is truncated or its "
                  "recording was never finished")


def diagnose_open_failure(path: str) -> str:
    """Why FFmpeg cannot open ``path`` as a video, or "" if PyAV cannot tell."""
    try:
        import av
    except ImportError:
        return ""
    with ffmpeg_log() as log:
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    return "the file has no video stream"
        except av.error.FFmpegError as error:
            return ffmpeg_reason(error, log, path)
        except (OSError, ValueError, UnicodeDecodeError):
            return ""
    return ""


@contextlib.contextmanager
def ffmpeg_log() -> Iterator[List[Tuple[int, str, str]]]:
    """Capture what FFmpeg logs meanwhile (through PyAV): a live list of
    ``(level, component, text)``, read by ``ffmpeg_reason``."""
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


def error_lines(log: Sequence[Tuple[int, str, str]]) -> List[str]:
    import av.logging

    return [f"{name}: {text.strip()}" if name else text.strip()
            for level, name, text in log if level <= av.logging.ERROR and text.strip()]


def ffmpeg_reason(error: BaseException, captured: Sequence[Tuple[int, str, str]] = (),
                  path: Optional[str] = None) -> str:
    """FFmpeg's error text, with the cause FFmpeg logged when there is one.

    ``path`` is given when the error came from opening the file.
    """
    reason = getattr(error, "strerror", None)
    reason = str(reason) if reason else first_line(error)
    log = error_lines(captured) if captured else []
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
            return handle.read(8)[4:] in MP4_ATOMS
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
