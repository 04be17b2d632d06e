"""Predictions drawn on the video: every input frame, re-encoded H.264 with PyAV.

Each frame shows the top-k classes of the window whose centre is nearest to it, and a
strip along the bottom shows the top class of the whole timeline (one colour per
class, a white mark at the current frame). Frames are decoded, drawn and encoded one
at a time, so memory does not grow with the video's length. The file is written
beside its destination and renamed when complete: an error leaves nothing behind.
"""

from __future__ import annotations

import colorsys
import os
from fractions import Fraction
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.atomic_files import make_folders
from c3d_extract.errors import StoreError, UsageError, VideoReadError
from c3d_extract.predict.timeline import Timeline

if TYPE_CHECKING:
    from c3d_extract.video.sources import VideoSource

#: Containers that hold H.264, by file extension, as FFmpeg names them.
OVERLAY_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: Frame rate of videos that state none (frame folders), unless the caller gives one.
DEFAULT_FPS = 25.0
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def check_overlay_path(path: str) -> None:
    """Raise before any work if an overlay cannot be written at ``path``."""
    from c3d_extract.store.rerun_checks import check_output_location

    extension = os.path.splitext(path)[1].lower()
    if extension not in OVERLAY_FORMATS:
        raise UsageError(f"an overlay video must end with one of "
                         f"{', '.join(sorted(OVERLAY_FORMATS))}: {path}")
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory, so the overlay cannot be written there")
    check_output_location(path)


def overlay_destinations(sources: Sequence["VideoSource"], overlay: Optional[str],
                         overlay_dir: Optional[str]) -> Dict[str, str]:
    """Where each video's overlay goes (``{id: path}``), checked before any work:
    ``overlay`` for a single video, or ``overlay_dir/<id>.mp4`` (folders made as needed)."""
    if overlay is not None and overlay_dir is not None:
        raise UsageError("give --overlay (one video) or --overlay-dir (many), not both")
    if overlay is not None:
        if len(sources) != 1:
            raise UsageError(f"--overlay writes one video, but {len(sources)} were given; "
                             "use --overlay-dir DIR")
        paths = {sources[0].id: overlay}
    elif overlay_dir is not None:
        paths = {s.id: overlay_dir_path(overlay_dir, s) for s in sources}
        if len(set(paths.values())) != len(paths):
            raise UsageError("two videos would get the same overlay file name in "
                             "--overlay-dir; give them from one root")
        try:
            for folder in sorted({os.path.dirname(p) for p in paths.values()}):
                make_folders(folder)
        except OSError as error:
            raise StoreError(f"cannot create the overlay folder {error.filename}: "
                             f"{error.strerror}") from None
    else:
        return {}
    inputs = {os.path.realpath(s.path) for s in sources}
    for path in paths.values():
        check_overlay_path(path)
        if os.path.realpath(path) in inputs:
            raise UsageError(f"the overlay {path} would replace an input video")
    return paths


def overlay_dir_path(directory: str, source: "VideoSource") -> str:
    """``DIR/<id>.mp4``, the id's folders kept, ``..`` and a leading ``/`` dropped."""
    parts = [part for part in source.id.split("/") if part not in ("", ".", "..")]
    if not parts:  # the id was "." or ".."
        parts = [os.path.basename(os.path.realpath(source.path)) or "video"]
    return os.path.join(directory, *parts) + ".mp4"


def class_colour(index: int) -> Tuple[int, int, int]:
    """A distinct, stable RGB colour per class (golden-ratio hues)."""
    red, green, blue = colorsys.hsv_to_rgb((index * 0.6180339887) % 1.0, 0.75, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def strip_colours(timeline: Timeline, width: int, n_frames: int) -> np.ndarray:
    """(width, 3) uint8: column x shows the top class at frame x * n_frames / width."""
    frames = (np.arange(width) * max(n_frames, 1)) // max(width, 1)
    return np.array([class_colour(int(timeline.top_index[timeline.window_at(f), 0]))
                     for f in frames], np.uint8).reshape(width, 3)


def draw_predictions(frame: np.ndarray, lines: Sequence[Tuple[str, float, int]],
                     strip: np.ndarray, position: float) -> np.ndarray:
    """Draw ``(label, probability, class index)`` lines top left and the timeline strip at
    the bottom, with a mark at ``position`` (0..1), on an RGB frame (in place)."""
    import cv2

    height, width = frame.shape[:2]
    scale = max(0.3, min(height, width) / 500.0)
    thickness = max(1, int(round(scale * 1.5)))
    line_height = int(round(26 * scale)) + 2
    swatch = max(3, line_height // 2)
    for row, (label, probability, index) in enumerate(lines):
        text = f"{label}  {probability:.1%}"
        (text_width, _), _ = cv2.getTextSize(text, _FONT, scale, thickness)
        top, bottom = row * line_height, (row + 1) * line_height
        right = min(width, 3 * swatch + text_width + 4)
        frame[top:bottom, :right] = frame[top:bottom, :right] // 3  # a dark box behind
        middle = (top + bottom) // 2
        frame[middle - swatch // 2:middle - swatch // 2 + swatch, swatch:2 * swatch] = \
            class_colour(index)
        cv2.putText(frame, text, (3 * swatch, bottom - line_height // 4), _FONT, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    strip_height = max(3, height // 24)
    frame[height - strip_height:] = strip[None, :, :]
    mark = min(width - 1, int(position * width))
    frame[height - strip_height - max(2, strip_height // 2):, mark] = 255
    return frame


def write_overlay(path: str, timeline: Timeline, output: str, *,
                  fps: Optional[float] = None) -> int:
    """Re-encode the video (or frame folder) at ``path`` with ``timeline`` drawn on every
    frame into ``output``; returns the number of frames written.

    The frame rate is the video's own; ``fps`` (default 25) serves videos that have none.
    Raises ``VideoReadError`` if the video cannot be decoded, ``StoreError`` if the output
    cannot be written.
    """
    import av

    from c3d_extract.atomic_files import replaced_atomically
    from c3d_extract.video.opening import open_decoder

    check_overlay_path(output)
    container_format = OVERLAY_FORMATS[os.path.splitext(output)[1].lower()]
    written = 0
    with replaced_atomically(output, growth_bound=0) as temporary:
        with open_decoder("pyav", path) as video:
            rate = video.frame_rate() or Fraction(fps or DEFAULT_FPS).limit_denominator(1001)
            try:
                with av.open(temporary, "w", format=container_format) as container:
                    stream = container.add_stream("libx264", rate=rate)
                    strip = None
                    for frame in video.frames():
                        if strip is None:
                            strip = _configure(stream, frame.shape, timeline)
                        if frame.shape[:2] != (stream.height, stream.width):
                            raise VideoReadError(f"frame {written} of {path} is "
                                                 f"{frame.shape[1]}x{frame.shape[0]}, the "
                                                 f"first {stream.width}x{stream.height}")
                        _draw_frame(frame, timeline, written, strip)
                        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")):
                            container.mux(packet)
                        written += 1
                    if not written:
                        raise VideoReadError(f"no frames could be decoded from {path}")
                    for packet in stream.encode():
                        container.mux(packet)
            except av.error.FFmpegError as error:
                raise StoreError(f"cannot encode the overlay {output}: {error}") from None
    return written


def _configure(stream, shape: Tuple[int, ...], timeline: Timeline) -> np.ndarray:
    """Size and pixel format from the first frame; x264's 4:2:0 needs even sizes, so odd
    sizes are kept with 4:4:4. Returns the strip's colours."""
    height, width = shape[:2]
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    stream.options = {"crf": "20", "preset": "veryfast"}
    return strip_colours(timeline, width, max(timeline.n_frames, 1))


def _draw_frame(frame: np.ndarray, timeline: Timeline, number: int, strip: np.ndarray) -> None:
    window = timeline.window_at(number)
    lines = [(timeline.label(int(index)), float(probability), int(index))
             for index, probability in zip(timeline.top_index[window],
                                           timeline.top_probability[window])]
    draw_predictions(frame, lines, strip, number / max(timeline.n_frames, 1))
