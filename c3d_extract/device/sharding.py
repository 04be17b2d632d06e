"""Which share of the videos a process handles, and the file it writes them to.

A video belongs to shard ``shard_of(id, count)``: the first 8 bytes of the
SHA-256 of its UTF-8 id, as a big-endian integer, modulo ``count``. The
assignment depends only on the id and the count, so it is the same on every
machine and every run, and adding videos never moves the old ones to another
shard (a rerun of a shard resumes its own file).

Shard ``i`` of ``n`` of the output ``feats.h5`` is written to
``feats.shard-0000i-of-0000n.h5`` in the same folder (index and count with at
least five digits; the output's extension, if any, is kept last).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from c3d_extract.errors import UsageError

_SHARD_TEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_SHARD_NAME = re.compile(r"^(?P<stem>.*)\.shard-(?P<index>\d{5,})-of-(?P<count>\d{5,})"
                         r"(?P<ext>(\.[^./]*)?)$")

T = TypeVar("T")


def shard_of(video_id: str, count: int) -> int:
    """The shard (``0 <= shard < count``) of a video id; stable across runs and machines."""
    if count < 1:
        raise ValueError(f"a shard count must be at least 1, got {count}")
    digest = hashlib.sha256(video_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"shard {self.index}/{self.count} does not exist: the index "
                             "must be between 0 and the count minus 1")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def contains(self, video_id: str) -> bool:
        return shard_of(video_id, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """``"1/4"`` -> ``Shard(1, 4)``."""
    match = _SHARD_TEXT.match(text)
    if match is None:
        raise UsageError(f"a shard is written INDEX/COUNT, e.g. 0/4, not {text!r}")
    return Shard(int(match.group(1)), int(match.group(2)))


def select(videos: Sequence[T], shard: Shard,
           id_of: Callable[[T], str] = lambda video: video.id) -> List[T]:
    """The videos of ``shard``, in their input order."""
    return [video for video in videos if shard_of(id_of(video), shard.count) == shard.index]


def shard_path(output: str, shard: Shard) -> str:
    """``feats.h5`` -> ``feats.shard-00001-of-00004.h5`` for shard 1 of 4."""
    directory, name = os.path.split(output)
    stem, ext = os.path.splitext(name)
    return os.path.join(directory, f"{stem}.shard-{shard.index:05d}-of-{shard.count:05d}{ext}")


def parse_shard_path(path: str) -> Optional[Tuple[str, Shard]]:
    """``(output, shard)`` of a shard file's name, or None if the name is not one."""
    directory, name = os.path.split(path)
    match = _SHARD_NAME.match(name)
    if match is None:
        return None
    index, count = int(match.group("index")), int(match.group("count"))
    if count < 1 or index >= count:
        return None
    return (os.path.join(directory, match.group("stem") + match.group("ext")),
            Shard(index, count))


def shard_files(output: str) -> Dict[int, Dict[int, str]]:
    """The shard files of ``output`` in its folder: ``{count: {index: path}}``."""
    directory = os.path.dirname(output) or "."
    target = os.path.normpath(output)
    found: Dict[int, Dict[int, str]] = {}
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return found
    for entry in entries:
        path = os.path.join(os.path.dirname(output), entry)
        parsed = parse_shard_path(path)
        if parsed is not None and os.path.normpath(parsed[0]) == target \
                and os.path.isfile(path):
            found.setdefault(parsed[1].count, {})[parsed[1].index] = path
    return found
