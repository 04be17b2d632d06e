"""What one video is on disk for training (a video file or a folder of numbered frames) and
reading a range of its frames.

Frame folders are those of ``c3d_extract.video.frame_folders`` (numbered JPEG/PNG files, frames in
numeric order). Video files are decoded sequentially with the project's decoders
(``c3d_extract.video.decoders``), up to the last frame a clip needs; frame folders read only the
images a clip needs.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

import numpy as np

from c3d_extract.errors import VideoReadError
from c3d_extract.video.frame_folders import is_frame_folder, list_frames
from c3d_extract.video.opening import FALLBACK, available_decoders, open_decoder
from c3d_extract.video.sources import is_video_name


def is_video(path: str) -> bool:
    """A video file (by extension) or a frame folder."""
    if os.path.isdir(path):
        return is_frame_folder(path)
    return os.path.isfile(path) and is_video_name(path)


def resolve_video(path: str) -> Optional[str]:
    """``path`` if it is a video file or frame folder, else the frame folder named like the file
    without its extension (datasets whose frames were extracted beside the split files); else None.
    """
    if os.path.isfile(path) or (os.path.isdir(path) and is_frame_folder(path)):
        return path
    stem, extension = os.path.splitext(path)
    if extension and os.path.isdir(stem) and is_frame_folder(stem):
        return stem
    return None


def frame_count_hint(path: str) -> Optional[int]:
    """The number of frames a video has: exact for frame folders, the container's count
    (which can be wrong) for files, None when unknown."""
    if os.path.isdir(path):
        try:
            return len(list_frames(path).paths)
        except OSError:
            return None
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as container:
            if not container.streams.video:
                return None
            count = int(container.streams.video[0].frames or 0)
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return None
    return count if count > 0 else None


Transform = Callable[[np.ndarray], np.ndarray]


def read_frames(path: str, start: int = 0, stop: Optional[int] = None, decoder: str = "pyav",
                transform: Optional[Transform] = None) -> Tuple[List[np.ndarray], Optional[int]]:
    """RGB uint8 frames ``start .. stop - 1`` (all from ``start`` when ``stop`` is None), each
    passed through ``transform`` as it is read (so only transformed frames are held), and the
    video's true frame count when the read reached its end (else None).

    Fewer frames than asked come back when the video is shorter. A backend that fails before
    its first frame hands over to its fallback (``opening.FALLBACK``), as extraction does.
    Raises ``VideoReadError`` naming the video when it cannot be read.
    """
    if os.path.isdir(path):
        return _read_frame_folder(path, start, stop, transform)
    try:
        return _decode_range(decoder, path, start, stop, transform)
    except _DecodeFailed as failure:
        fallback = FALLBACK.get(decoder)
        if failure.frames_read or fallback is None or fallback not in available_decoders():
            raise VideoReadError(f"{path}: {failure}") from None
    try:
        return _decode_range(fallback, path, start, stop, transform)
    except _DecodeFailed as failure:
        raise VideoReadError(f"{path}: {failure}") from None


class _DecodeFailed(Exception):
    """A backend's failure, with how many frames it had decoded before."""

    def __init__(self, message: str, frames_read: int) -> None:
        super().__init__(message)
        self.frames_read = frames_read


def _decode_range(decoder: str, path: str, start: int, stop: Optional[int],
                  transform: Optional[Transform]) -> Tuple[List[np.ndarray], Optional[int]]:
    frames: List[np.ndarray] = []
    index = 0
    try:
        with open_decoder(decoder, path) as video:
            for frame in video.frames():
                if stop is not None and index >= stop:
                    return frames, None
                if index >= start:
                    frames.append(transform(frame) if transform else frame)
                index += 1
    except VideoReadError as error:
        raise _DecodeFailed(str(error), index) from None
    except (OSError, ValueError, MemoryError) as error:
        raise _DecodeFailed(f"{type(error).__name__}: {error}", index) from None
    if index == 0:
        raise _DecodeFailed("no frames could be decoded", 0)
    return frames, index


def _read_frame_folder(folder: str, start: int, stop: Optional[int],
                       transform: Optional[Transform]) -> Tuple[List[np.ndarray], Optional[int]]:
    import cv2

    try:
        files = list_frames(folder).paths
    except OSError as error:
        raise VideoReadError(f"{folder}: cannot list the frame folder: {error.strerror}") from None
    if not files:
        raise VideoReadError(f"{folder}: the frame folder holds no numbered images")
    end = len(files) if stop is None else min(stop, len(files))
    frames = []
    for name in files[start:end]:
        image = cv2.imread(name, cv2.IMREAD_COLOR)
        if image is None:
            raise VideoReadError(f"{folder}: cannot read the frame {os.path.basename(name)}")
        frame = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        frames.append(transform(frame) if transform else frame)
    return frames, len(files) if stop is None or stop >= len(files) else None
