"""Synthetic video corpora written with PyAV, cached in the output folder.

The content is meant to cost a decoder what real footage costs: a textured
scene that pans, objects that move across it, and a little sensor noise, so
that inter-frame prediction has real work to do. Encoder settings are ordinary
ones (x264 ``veryfast`` at CRF 23; MPEG-4 Part 2 at a UCF101-like bit rate).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np


@dataclass(frozen=True)
class CorpusSpec:
    """``n_videos`` videos of ``n_frames`` frames; codecs are used in turn."""

    name: str
    n_videos: int
    n_frames: int
    width: int
    height: int
    fps: int = 25
    codecs: Tuple[str, ...] = ("libx264",)

    @property
    def files(self) -> List[str]:
        return [f"{self.name}-{i:02d}{_EXTENSION[self.codec_of(i)]}"
                for i in range(self.n_videos)]

    def codec_of(self, index: int) -> str:
        return self.codecs[index % len(self.codecs)]


_EXTENSION = {"libx264": ".mp4", "mpeg4": ".avi"}

#: UCF101 is 320 x 240 at 25 fps, about 7 s a video, MPEG-4 Part 2 in AVI.
CORPORA = {
    "full": (
        CorpusSpec("ucf", 8, 175, 320, 240, codecs=("libx264", "mpeg4")),
        CorpusSpec("hd", 2, 175, 1280, 720),
    ),
    "quick": (
        CorpusSpec("ucf-quick", 3, 64, 320, 240, codecs=("libx264", "mpeg4")),
        CorpusSpec("hd-quick", 1, 48, 1280, 720),
    ),
}
#: The CPU speed comparison (issue 14): 8 UCF-like H.264 videos of 64 frames, 56 clips.
SPEED_CORPUS = CorpusSpec("ucf64", 8, 64, 320, 240)


def ensure_corpus(spec: CorpusSpec, root: Path) -> Path:
    """The folder holding ``spec``'s videos, written on first use and reused afterwards."""
    folder = root / spec.name
    stamp = folder / "corpus.json"
    description = json.dumps(asdict(spec), sort_keys=True)
    if stamp.exists() and stamp.read_text() == description:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for index, name in enumerate(spec.files):
        write_video(folder / name, spec, index)
    stamp.write_text(description)
    return folder


def write_video(path: Path, spec: CorpusSpec, index: int) -> None:
    import av

    codec = spec.codec_of(index)
    scene = SyntheticScene(spec.width, spec.height, seed=index)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast"}
        else:
            stream.bit_rate = int(spec.width * spec.height * spec.fps * 0.25)
        for frame_index in range(spec.n_frames):
            frame = av.VideoFrame.from_ndarray(scene.frame(frame_index), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class SyntheticScene:
    """A panning textured background with moving discs, plus noise; RGB uint8 frames."""

    def __init__(self, width: int, height: int, seed: int = 0) -> None:
        import cv2

        self.width, self.height = width, height
        self.rng = np.random.default_rng(seed)
        margin = 4 * max(width, height) // 10
        coarse = self.rng.integers(0, 256, (height // 16 + 8, width // 16 + 8, 3), np.uint8)
        fine = self.rng.integers(0, 256, ((height + margin) // 4, (width + margin) // 4, 3),
                                 np.uint8)
        size = (width + margin, height + margin)
        texture = (0.7 * cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)
                   + 0.3 * cv2.resize(fine, size, interpolation=cv2.INTER_LINEAR))
        self.texture = texture.astype(np.uint8)
        self.margin = margin
        self.pan = self.rng.uniform(-1.5, 1.5, 2) * max(width, height) / 320
        self.discs = [(self.rng.uniform(0, width), self.rng.uniform(0, height),
                       self.rng.uniform(-4, 4) * width / 320,
                       self.rng.uniform(-3, 3) * height / 240,
                       int(self.rng.integers(height // 20, height // 6)),
                       tuple(int(c) for c in self.rng.integers(0, 256, 3)))
                      for _ in range(4)]

    def frame(self, index: int) -> np.ndarray:
        import cv2

        half = self.margin // 2
        dx, dy = (np.round(self.pan * index).astype(int) % self.margin) - half
        top, left = half + dy, half + dx
        frame = np.ascontiguousarray(
            self.texture[top:top + self.height, left:left + self.width])
        for x, y, vx, vy, radius, colour in self.discs:
            centre = (int(x + vx * index) % self.width, int(y + vy * index) % self.height)
            cv2.circle(frame, centre, radius, colour, thickness=-1)
        noise = self.rng.integers(-6, 7, frame.shape, np.int16)
        return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
