"""Folders of numbered images as videos: which folders count, and their frames in order.

A folder is a frame folder when it holds only JPEG/PNG files whose names contain a
number (hidden files aside) and nothing else: no subfolders, no other files. Its
frames are read in the order of the last number in each name (``frame2`` before
``frame10``), names with equal numbers in natural order. Gaps in the numbering,
repeated numbers and a mix of file types are reported, never silently accepted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
_DIGITS = re.compile(r"(\d+)")
#: How many names or numbers a warning lists before it says "..."
_SHOWN = 5


@dataclass(frozen=True)
class FrameListing:
    """A frame folder's frame files in playing order, and what looked wrong with them."""

    paths: Tuple[str, ...]
    warnings: Tuple[str, ...]


def frame_number(name: str) -> int:
    """The last number in a file name (``img_0012.jpg`` -> 12); -1 when it has none."""
    numbers = _DIGITS.findall(os.path.splitext(name)[0])
    return int(numbers[-1]) if numbers else -1


def natural_key(name: str) -> Tuple[Union[int, str], ...]:
    """``frame2`` < ``frame10``: digit runs compare as numbers, the rest as text."""
    return tuple(int(part) if part.isdigit() else part.lower()
                 for part in _DIGITS.split(name) if part)


def is_frame_name(name: str) -> bool:
    """A JPEG or PNG file name that contains a number."""
    stem, extension = os.path.splitext(name)
    return extension.lower() in IMAGE_EXTENSIONS and _DIGITS.search(stem) is not None


def _visible(names: Sequence[str]) -> List[str]:
    return [name for name in names if not name.startswith(".")]


def is_frame_folder_listing(files: Sequence[str], subdirectories: Sequence[str]) -> bool:
    """Whether a folder with these entries is a frame folder (see the module docstring)."""
    files, subdirectories = _visible(files), _visible(subdirectories)
    return bool(files) and not subdirectories and all(is_frame_name(n) for n in files)


def is_frame_folder(path: str) -> bool:
    """Whether the folder at ``path`` is a frame folder; False for anything unreadable."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    files = [e.name for e in entries if not e.is_dir()]
    return is_frame_folder_listing(files, [e.name for e in entries if e.is_dir()])


def list_frames(folder: str) -> FrameListing:
    """The frame files of ``folder`` in playing order; raises ``OSError`` if it cannot be
    listed. Files that are not numbered JPEG/PNG images are left out, with a warning."""
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".") and not e.is_dir())
    frames = [name for name in names if is_frame_name(name)]
    frames.sort(key=lambda name: (frame_number(name), natural_key(name)))
    warnings = []
    others = [name for name in names if not is_frame_name(name)]
    if others and frames:
        warnings.append(f"left out {_count(len(others), 'file')} not named as numbered "
                        f"JPEG/PNG frames: {_shown(others)}")
    extensions = sorted({os.path.splitext(name)[1].lower() for name in frames})
    if len(extensions) > 1:
        counts = [f"{sum(os.path.splitext(n)[1].lower() == e for n in frames)} {e}"
                  for e in extensions]
        warnings.append(f"mixed image types: {', '.join(counts)}")
    warnings.extend(numbering_problems([frame_number(name) for name in frames]))
    return FrameListing(tuple(os.path.join(folder, name) for name in frames), tuple(warnings))


def numbering_problems(numbers: Sequence[int]) -> List[str]:
    """Gaps and repeats in sorted frame numbers, as warning texts."""
    gaps = [(a, b) for a, b in zip(numbers, numbers[1:]) if b > a + 1]
    repeated = sorted({b for a, b in zip(numbers, numbers[1:]) if b == a})
    problems = []
    if gaps:
        missing = sum(b - a - 1 for a, b in gaps)
        problems.append(f"gaps in the frame numbering ({_count(missing, 'number')} missing): "
                        + _shown([f"{a} -> {b}" for a, b in gaps]))
    if repeated:
        problems.append(f"frame numbers used by more than one file: "
                        f"{_shown([str(n) for n in repeated])}")
    return problems


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shown(items: Sequence[str]) -> str:
    text = ", ".join(items[:_SHOWN])
    return text + (f" ... ({len(items)} in all)" if len(items) > _SHOWN else "")
