"""What every format shares: safe output names, atomic writes and ``index.csv``."""

from __future__ import annotations

import csv
import io
import os
import posixpath
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.atomic_files import make_folders, write_atomically
from c3d_extract.errors import ExportError

INDEX_NAME = "index.csv"
INDEX_COLUMNS = ("id", "output", "crop", "frames", "fps", "clips", "segments")


def id_without_extension(video_id: str) -> str:
    """``"Abuse/Abuse001_x264.mp4"`` -> ``"Abuse/Abuse001_x264"``, refusing ids that would
    write outside the output folder."""
    path = posixpath.normpath(video_id)
    if posixpath.isabs(path) or path == ".." or path.startswith("../") or path == ".":
        raise ExportError(f"video {video_id!r}: its id is not a relative path inside the "
                          "input folder, so it names no file inside the output folder")
    stem, extension = posixpath.splitext(path)
    return stem if extension else path


def video_name(video_id: str) -> str:
    """The file name without folder and extension: ``"a/B001_x264.mp4"`` -> ``"B001_x264"``."""
    return posixpath.splitext(posixpath.basename(posixpath.normpath(video_id)))[0]


def check_unique(outputs: Iterable[Tuple[str, str]]) -> None:
    """``(video id, output path)`` pairs: two videos writing one file is an error naming both."""
    owner = {}
    clashes = []
    for video_id, output in outputs:
        if output in owner and owner[output] != video_id:
            clashes.append(f"{owner[output]!r} and {video_id!r} both become {output}")
        owner.setdefault(output, video_id)
    if clashes:
        shown = "; ".join(clashes[:5]) + (f" (and {len(clashes) - 5} more)"
                                          if len(clashes) > 5 else "")
        raise ExportError(f"the format names one file for two videos: {shown}")


def write_output(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``write_atomically``), making its folders first:
    a format may put each video's files in a subfolder."""
    make_folders(os.path.dirname(os.path.abspath(path)))
    write_atomically(path, data)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class IndexRow:
    """One output file: which video, its decoded frames, fps and clips, and the first and
    last frame (0-based, inclusive) of each of its rows or segments."""

    id: str
    output: str
    crop: Optional[int]
    frames: int
    fps: float
    clips: int
    segments: Sequence[Tuple[int, int]]

    def cells(self) -> List[str]:
        return [self.id, self.output, "" if self.crop is None else str(self.crop),
                str(self.frames), f"{self.fps:g}", str(self.clips),
                " ".join(f"{first}-{last}" for first, last in self.segments)]


def index_bytes(rows: Sequence[IndexRow]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for row in rows:
        writer.writerow(row.cells())
    return text.getvalue().encode("utf-8")
