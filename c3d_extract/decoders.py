"""Sequential video decoders behind one small interface.

Every backend reads frames in order (never decord's random-access
``get_batch``, which can loop forever on files with a wrong frame count) and
yields RGB uint8 frames; the caller counts them. Backends are imported only
when chosen, and run inside decode worker processes.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Iterator, List

import numpy as np

from c3d_extract.errors import UsageError, VideoReadError


class VideoDecoder:
    """Open a video and yield its frames in order (RGB, H x W x 3, uint8).

    Sizes are taken from the decoded frames, never from the container header.
    """

    name = "base"

    def __init__(self, path: str) -> None:
        self.path = path

    def fps(self) -> float:
        """Average frame rate from the container (0.0 when unknown); informative only."""
        raise NotImplementedError

    def frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder's native resources."""

    def __enter__(self) -> "VideoDecoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DecordDecoder(VideoDecoder):
    name = "decord"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        import decord

        try:
            self._reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        except (RuntimeError, decord.DECORDError) as error:
            # decord's text names no cause (FFmpeg logged it); ask FFmpeg through PyAV.
            raise VideoReadError(diagnose_open_failure(path) or _first_line(error)) from None

    def fps(self) -> float:
        return float(self._reader.get_avg_fps() or 0.0)

    def frames(self) -> Iterator[np.ndarray]:
        import decord

        while True:
            try:
                frame = self._reader.next()
            except StopIteration:
                return
            except (RuntimeError, decord.DECORDError) as error:
                raise VideoReadError(_first_line(error)) from None
            yield frame.asnumpy()

    def close(self) -> None:
        self._reader = None


class PyAVDecoder(VideoDecoder):
    name = "pyav"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        import av

        try:
            self._container = av.open(path)
        except av.error.FFmpegError as error:
            raise VideoReadError(_ffmpeg_reason(error)) from None
        except (OSError, UnicodeDecodeError) as error:
            raise VideoReadError(_first_line(error)) from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoReadError("the file has no video stream")
        self._stream = self._container.streams.video[0]

    def fps(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return float(rate) if rate else 0.0

    def frames(self) -> Iterator[np.ndarray]:
        import av

        try:
            for frame in self._container.decode(self._stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as error:
            raise VideoReadError(_ffmpeg_reason(error)) from None
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


DECODERS: Dict[str, Callable[[str], VideoDecoder]] = {
    "decord": DecordDecoder, "pyav": PyAVDecoder, "torchcodec": TorchCodecDecoder,
}
_MODULES = {"decord": "decord", "pyav": "av", "torchcodec": "torchcodec"}


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
                         f"{'av' if name == 'pyav' else name}){hint}")


def check_readable(path: str) -> None:
    """Fail early, with the plain reason, on missing, empty or unreadable files."""
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except IsADirectoryError:
        raise VideoReadError("it is a directory, not a video file") from None
    except OSError as error:
        raise VideoReadError(f"cannot open the file: {error.strerror}") from None
    if empty:
        raise VideoReadError("the file is empty (0 bytes)")


def open_decoder(name: str, path: str) -> VideoDecoder:
    check_readable(path)
    return DECODERS[name](path)


def diagnose_open_failure(path: str) -> str:
    """Why FFmpeg cannot open ``path`` as a video, or "" if PyAV cannot tell."""
    try:
        import av
    except ImportError:
        return ""
    try:
        with av.open(path) as container:
            if not container.streams.video:
                return "the file has no video stream"
    except av.error.FFmpegError as error:
        return _ffmpeg_reason(error)
    except (OSError, ValueError, UnicodeDecodeError):
        return ""
    return ""


def _ffmpeg_reason(error: BaseException) -> str:
    reason = getattr(error, "strerror", None)
    return str(reason) if reason else _first_line(error)


_NATIVE_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")


def _first_line(error: BaseException) -> str:
    """The informative part of a decoder's error text, on one line.

    decord's messages put the cause last, after a source location:
    ``Error reading x.mp4...[12:00:00] video_reader.cc:83: ERROR opening: x.mp4, <cause>``.
    """
    text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    native = [line for line in lines if "ERROR" in line]
    if native:
        detail = _NATIVE_PREFIX.sub("", native[-1].split("...")[-1])
        cause = detail.rsplit(", ", 1)[-1] if "ERROR opening" in detail else detail
        return cause[:300]
    return lines[0][:300]
