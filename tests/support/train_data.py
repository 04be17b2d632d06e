"""A tiny UCF101-shaped dataset for the training tests: three classes that differ visibly,
groups g01..g04, the official split-file forms, short small videos.

Layout (as UCF101 ships): ``<parent>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and
``<parent>/ucfTrainTestlist/{classInd.txt, trainlist0N.txt, testlist0N.txt}``; split N tests
group ``g0N`` and trains on the other three. Classes differ in colour and in how the content
moves (vertically, horizontally, not at all), all of which survive a horizontal flip. Every
pixel follows from (class, group, clip, frame), so the files are the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from tests.support.videos import write_video

#: classInd.txt order on purpose not alphabetical: class indices must follow classInd.txt.
CLASSES = ("RedDown", "GreenAcross", "BlueStill")
GROUPS = (1, 2, 3, 4)


@dataclass(frozen=True)
class TinyUcf:
    root: Path          # the UCF-101 folder (DATA_ROOT)
    splits_dir: Path    # ucfTrainTestlist
    classes: Tuple[str, ...]
    videos: Dict[str, Tuple[str, int]]  # relative path -> (class, group)
    n_frames: Dict[str, int]            # relative path -> frames written


def frame_count(group: int, clip: int) -> int:
    """12, 16 or 20 frames: some videos shorter than a 16-frame clip."""
    return 12 + 4 * ((group + clip) % 3)


def class_frame(class_name: str, group: int, clip: int):
    """The frame function of one video: a coloured background with a moving band."""
    tint = {"RedDown": (200, 40, 40), "GreenAcross": (40, 190, 50),
            "BlueStill": (40, 60, 200)}[class_name]
    phase = 5 * group + 3 * clip

    def make(index: int, width: int, height: int) -> np.ndarray:
        y, x = np.mgrid[0:height, 0:width]
        texture = ((x * (2 + group) + y * (3 + clip) + phase) % 32).astype(np.int16) - 16
        frame = np.clip(np.asarray(tint, np.int16)[None, None, :] + texture[..., None],
                        0, 255).astype(np.uint8)
        if class_name == "RedDown":
            top = (phase + 4 * index) % (height - 8)
            frame[top:top + 8] = (255, 255, 255)
        elif class_name == "GreenAcross":
            left = (phase + 5 * index) % (width - 8)
            frame[:, left:left + 8] = (0, 0, 0)
        else:
            frame[height // 3:2 * height // 3, width // 3:2 * width // 3] = (255, 255, 0)
        return frame

    return make


def write_tiny_ucf101(parent: Path, *, clips: int = 3, width: int = 86, height: int = 64,
                      classes: Tuple[str, ...] = CLASSES) -> TinyUcf:
    """Write the dataset under ``parent`` (36 videos by default, MPEG-4 in AVI like UCF101)."""
    root = parent / "UCF-101"
    splits = parent / "ucfTrainTestlist"
    splits.mkdir(parents=True)
    videos: Dict[str, Tuple[str, int]] = {}
    counts: Dict[str, int] = {}
    for class_name in classes:
        (root / class_name).mkdir(parents=True)
        for group in GROUPS:
            for clip in range(1, clips + 1):
                relative = f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}.avi"
                counts[relative] = frame_count(group, clip)
                write_video(root / relative, counts[relative], width=width, height=height,
                            codec="mpeg4", frame_fn=class_frame(class_name, group, clip))
                videos[relative] = (class_name, group)
    write_split_files(splits, classes, videos)
    return TinyUcf(root, splits, tuple(classes), videos, counts)


def write_split_files(splits: Path, classes: Tuple[str, ...],
                      videos: Dict[str, Tuple[str, int]]) -> None:
    """classInd.txt (1-based), trainlist0N.txt ("path index"), testlist0N.txt ("path")."""
    (splits / "classInd.txt").write_text(
        "".join(f"{i} {name}\n" for i, name in enumerate(classes, 1)))
    for fold in (1, 2, 3):
        train: List[str] = []
        test: List[str] = []
        for relative, (class_name, group) in videos.items():
            if group == fold:
                test.append(f"{relative}\n")
            else:
                train.append(f"{relative} {classes.index(class_name) + 1}\n")
        (splits / f"trainlist{fold:02d}.txt").write_text("".join(train))
        (splits / f"testlist{fold:02d}.txt").write_text("".join(test))
