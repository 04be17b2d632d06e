"""Which videos a run covers, and their ids.

A video's id is its path relative to the input root (the directory given, or
the folder of a ``--list`` file), with POSIX separators. Ids are unique and
the same on every run with the same inputs.

A video is a file with a video extension (``VIDEO_EXTENSIONS``, any case: the
extensions FFmpeg's demuxers commonly meet for video) or a frame folder
(``frame_folders``): a folder holding only JPEG/PNG files named with a number.
Searching a directory finds both; a frame folder is one video and is not
searched further; other files are skipped and counted by extension
(``Discovery.skipped``). A file named directly or in a list file is taken
whatever its extension (the decoder then says if it is no video). A folder
given by name that holds images but no subfolder and no video file is taken as a
frame folder, so that one without usable frames is reported instead of ignored. A
folder given by name in which nothing of this is found is a mistake ("no videos
found in DIR"), not a video.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from c3d_extract.errors import InputNotFoundError, UsageError
from c3d_extract.video.frame_folders import IMAGE_EXTENSIONS, is_frame_folder_listing

VIDEO_EXTENSIONS = frozenset({
    ".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv", ".3gp",
    # MPEG program and transport streams: DVD, camcorders (AVCHD), broadcast
    ".ts", ".mts", ".m2ts", ".vob", ".m2v", ".m1v", ".mpe", ".tod", ".mod",
    ".ogv", ".asf", ".3g2", ".qt", ".f4v", ".divx", ".xvid", ".mxf", ".dv", ".mk3d",
    ".rm", ".rmvb", ".nut", ".y4m", ".ivf", ".h264", ".264", ".hevc", ".h265", ".wtv",
})


@dataclass(frozen=True)
class VideoSource:
    id: str
    path: str


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _as_id(relative_path: str) -> str:
    """POSIX separators, and valid UTF-8 even for file names that are not."""
    posix = relative_path.replace(os.sep, "/")
    return posix.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class Discovery:
    """The videos found, and the files a directory search passed over."""

    sources: List[VideoSource] = field(default_factory=list)
    #: Files skipped by directory searches, by extension ("" for none); hidden files are
    #: not counted.
    skipped: Counter = field(default_factory=Counter)

    def skipped_line(self) -> str:
        """``skipped 3 files not named like videos (2 .txt, 1 with no extension); ...``, or
        "" when none was skipped."""
        total = sum(self.skipped.values())
        if not total:
            return ""
        kinds = ", ".join(f"{count} {extension or 'with no extension'}"
                          for extension, count in sorted(self.skipped.items(),
                                                         key=lambda item: (-item[1], item[0])))
        files = "1 file" if total == 1 else f"{total} files"
        return (f"skipped {files} not named like videos ({kinds}); name a file directly or "
                "in --list to read it anyway")


def scan_directory(root: str, skipped: Optional[Counter] = None) -> List[VideoSource]:
    """Every file under ``root`` (recursively) with a video extension and every frame folder
    below ``root``, sorted by id; other files are counted by extension in ``skipped``.

    Directories named like videos are not videos; symbolic links to files are followed.
    """
    found = []
    for directory, subdirectories, files in os.walk(root, onerror=_raise_walk_error):
        subdirectories.sort()
        if directory != root and is_frame_folder_listing(files, subdirectories):
            found.append(VideoSource(_as_id(os.path.relpath(directory, root)), directory))
            continue
        for name in sorted(files):
            if is_video_name(name):
                path = os.path.join(directory, name)
                found.append(VideoSource(_as_id(os.path.relpath(path, root)), path))
            elif skipped is not None and not name.startswith("."):
                skipped[os.path.splitext(name)[1].lower()] += 1
    return found


def _raise_walk_error(error: OSError) -> None:
    raise InputNotFoundError(f"cannot read the directory {error.filename}: {error.strerror}")


def read_list_file(list_file: str) -> List[VideoSource]:
    """One path per line (blank lines and ``#`` comments ignored); relative paths are taken
    from the list file's folder, and the id is the path as written."""
    try:
        with open(list_file, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise InputNotFoundError(f"no such list file: {list_file}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the list file {list_file}: {error}") from None
    base = os.path.dirname(os.path.abspath(list_file))
    sources = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = entry if os.path.isabs(entry) else os.path.join(base, entry)
        sources.append(VideoSource(_as_id(os.path.normpath(entry)), path))
    return sources


def discover(inputs: Sequence[str], list_file: Optional[str] = None) -> List[VideoSource]:
    """The videos named by directories, files and a list file, each id once."""
    return find_videos(inputs, list_file).sources


def find_videos(inputs: Sequence[str], list_file: Optional[str] = None) -> Discovery:
    """``discover``, with the files directory searches skipped."""
    if not inputs and list_file is None:
        raise UsageError("give at least one video, directory or --list FILE")
    collected: List[VideoSource] = []
    skipped: Counter = Counter()
    for item in inputs:
        if os.path.isdir(item) and _given_frame_folder(item):
            collected.append(VideoSource(_as_id(os.path.normpath(item)), item))
        elif os.path.isdir(item):
            seen = Counter()
            found = scan_directory(item, seen)
            if not found:
                others = sum(seen.values())
                raise InputNotFoundError(
                    f"no videos found in {item} (videos are files with a video extension "
                    "such as .mp4 .avi .mkv .ts, and folders of JPEG/PNG frames named with a "
                    f"number{f'; {others} other files were skipped' if others else ''})")
            skipped.update(seen)
            collected.extend(found)
        elif os.path.exists(item) or os.path.islink(item):
            collected.append(VideoSource(_as_id(os.path.normpath(item)), item))
        else:
            raise InputNotFoundError(f"no such file or directory: {item}")
    if list_file is not None:
        collected.extend(read_list_file(list_file))
    return Discovery(_unique(collected), skipped)


def _given_frame_folder(path: str) -> bool:
    """A folder named as an input is one video if it holds images, and no subfolder and no
    video file."""
    try:
        with os.scandir(path) as scan:
            entries = [e for e in scan if not e.name.startswith(".")]
    except OSError as error:
        raise InputNotFoundError(f"cannot read the directory {path}: {error.strerror}") from None
    return not any(e.is_dir() or is_video_name(e.name) for e in entries) and \
        any(os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS for e in entries)


def _unique(sources: Iterable[VideoSource]) -> List[VideoSource]:
    by_id: Dict[str, VideoSource] = {}
    for source in sources:
        earlier = by_id.get(source.id)
        if earlier is None:
            by_id[source.id] = source
        elif os.path.realpath(earlier.path) != os.path.realpath(source.path):
            raise UsageError(f"two different inputs have the same id {source.id!r}: "
                             f"{earlier.path} and {source.path}; give them from one root")
    return list(by_id.values())
