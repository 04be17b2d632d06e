"""Labels and splits: the three file formats, and matching their videos to a feature file.

Formats:

* ``labels.csv``: header ``video,label`` and optionally ``split`` (``train`` or
  ``test``); other columns are ignored. Labels may be names or integers; they
  are kept as text.
* UCF101 (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``).
* HMDB51 (``<action>_test_splitN.txt``: ``<video> <id>``, 1 train, 2 test, 0 unused).

A label's ``video`` matches a feature id when it equals the id, or the id's
file name without extension, or (for paths such as UCF101's
``ApplyEyeMakeup/v_..._c01.avi``) when both file names without extension are
equal, provided that only one feature id fits. Everything that does not match
is reported, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.errors import InputNotFoundError, LabelsError
from c3d_extract.store.records import WITH_FEATURES

SPLITS = ("train", "test", "unused")
#: How many examples each problem line names.
EXAMPLES = 3


# ---------------------------------------------------------------- the label table

@dataclass(frozen=True)
class Labels:
    """One row per labelled video; ``splits`` is None when the source has no split."""

    videos: Tuple[str, ...]
    labels: Tuple[str, ...]
    splits: Optional[Tuple[str, ...]]
    classes: Tuple[str, ...]  # every class, in the order tables and plots list them
    source: str

    @property
    def has_split(self) -> bool:
        return self.splits is not None

    def __len__(self) -> int:
        return len(self.videos)


def class_order(labels: Sequence[str]) -> Tuple[str, ...]:
    """Distinct labels, numerically when all are integers, else alphabetically."""
    distinct = set(labels)
    if distinct and all(re.fullmatch(r"[+-]?\d+", label) for label in distinct):
        return tuple(sorted(distinct, key=lambda label: (int(label), label)))
    return tuple(sorted(distinct))


# ---------------------------------------------------------------- CSV

def read_csv_table(path: str, required: Sequence[str],
                   optional: Sequence[str] = ()) -> List[Tuple[int, Dict[str, str]]]:
    """``[(line_number, {column: value})]`` of a CSV file with a header.

    Every malformed line raises ``LabelsError`` naming the file and line.
    """
    if not os.path.isfile(path):
        raise InputNotFoundError(f"no such file: {path}")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise LabelsError(f"cannot read {path}: {error}") from None
    return parse_csv_table(data, required, optional, name=path)


def parse_csv_table(data: bytes, required: Sequence[str], optional: Sequence[str] = (), *,
                    name: str = "<csv>") -> List[Tuple[int, Dict[str, str]]]:
    """The parser behind ``read_csv_table``, on bytes (so tests can feed it anything)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise LabelsError(f"{name} line {line}: not valid UTF-8") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise LabelsError(f"{name} line {line}: contains a NUL character")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: List[Tuple[int, Dict[str, str]]] = []
    header: Optional[List[str]] = None
    lines_read = 0
    try:
        for fields in reader:
            line, lines_read = lines_read + 1, reader.line_num  # a record may span lines
            if not fields or all(not field.strip() for field in fields):
                continue
            if header is None:
                header = [field.strip().lower() for field in fields]
                _check_header(header, required, optional, name, line)
            elif len(fields) != len(header):
                raise LabelsError(f"{name} line {line}: expected {len(header)} fields "
                                  f"({','.join(header)}), got {len(fields)}")
            else:
                rows.append((line, {column: value.strip()
                                    for column, value in zip(header, fields)}))
    except csv.Error as error:
        raise LabelsError(f"{name} line {reader.line_num}: malformed CSV ({error})") from None
    if header is None:
        raise LabelsError(f"{name} is empty: expected a header line "
                          f"{','.join(list(required) + list(optional))}")
    return rows


def _check_header(header: List[str], required: Sequence[str], optional: Sequence[str],
                  name: str, line: int) -> None:
    missing = [column for column in required if column not in header]
    if missing:
        raise LabelsError(f"{name} line {line}: the header {','.join(header)!r} lacks "
                          f"{', '.join(missing)} (expected {','.join(required)}"
                          f"{''.join(',[' + c + ']' for c in optional)})")
    seen = set()
    for column in header:
        if column in seen and column in list(required) + list(optional):
            raise LabelsError(f"{name} line {line}: column {column!r} appears twice in the header")
        seen.add(column)


def read_labels_csv(path: str) -> Labels:
    """``labels.csv``: ``video,label[,split]`` with ``split`` ``train`` or ``test``."""
    return labels_from_table(read_csv_table(path, ("video", "label"), ("split",)), name=path)


def labels_from_table(rows: List[Tuple[int, Dict[str, str]]], *, name: str) -> Labels:
    """Validate parsed ``video,label[,split]`` rows into ``Labels``."""
    videos, labels, splits = [], [], []
    has_split = bool(rows) and "split" in rows[0][1]
    for line, row in rows:
        if not row["video"]:
            raise LabelsError(f"{name} line {line}: empty video")
        if not row["label"]:
            raise LabelsError(f"{name} line {line}: empty label for video {row['video']!r}")
        videos.append(row["video"])
        labels.append(row["label"])
        if has_split:
            split = row["split"].lower()
            if split not in ("train", "test"):
                raise LabelsError(f"{name} line {line}: split must be train or test, "
                                  f"not {row['split']!r}")
            splits.append(split)
    if not videos:
        raise LabelsError(f"{name} has a header but no labelled videos")
    return Labels(tuple(videos), tuple(labels), tuple(splits) if has_split else None,
                  class_order(labels), name)


# ---------------------------------------------------------------- UCF101 and HMDB51

def _read_lines(path: str) -> List[Tuple[int, str]]:
    try:
        with open(path, "r", encoding="utf-8-sig") as handle:
            return [(n, line.strip()) for n, line in enumerate(handle, 1) if line.strip()]
    except UnicodeDecodeError:
        raise LabelsError(f"{path}: not valid UTF-8") from None
    except OSError as error:
        raise LabelsError(f"cannot read {path}: {error}") from None


def _find_split_dir(directory: str, probe: str, subdirectory: str) -> str:
    """The folder holding ``probe``: ``directory`` itself or its official subfolder."""
    if not os.path.isdir(directory):
        raise InputNotFoundError(f"no such directory: {directory}")
    for candidate in (directory, os.path.join(directory, subdirectory)):
        if os.path.exists(os.path.join(candidate, probe)):
            return candidate
    raise LabelsError(f"{directory} has no {probe} (nor {subdirectory}/{probe})")


def _check_fold(fold: int) -> None:
    if fold not in (1, 2, 3):
        raise LabelsError(f"fold must be 1, 2 or 3, not {fold}")


def read_ucf101(directory: str, fold: int = 1) -> Labels:
    """UCF101's ``classInd.txt``, ``trainlist0<fold>.txt`` and ``testlist0<fold>.txt``.

    ``directory`` is the folder holding them or its parent (``ucfTrainTestlist/``).
    Training rows carry a 1-based class index; test rows take the class from the
    path's folder.
    """
    _check_fold(fold)
    folder = _find_split_dir(directory, "classInd.txt", "ucfTrainTestlist")
    class_path = os.path.join(folder, "classInd.txt")
    classes: Dict[int, str] = {}
    for line, text in _read_lines(class_path):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise LabelsError(f"{class_path} line {line}: expected '<index> <ClassName>', "
                              f"got {text!r}")
        classes[int(parts[0])] = parts[1]
    if not classes:
        raise LabelsError(f"{class_path} lists no classes")
    by_name = {name.lower(): name for name in classes.values()}
    videos, labels, splits = [], [], []
    for split in ("train", "test"):
        list_path = os.path.join(folder, f"{split}list{fold:02d}.txt")
        if not os.path.exists(list_path):
            raise LabelsError(f"{folder} has no {os.path.basename(list_path)}")
        for line, text in _read_lines(list_path):
            parts = text.split()
            video = parts[0]
            folder_class = PurePosixPath(video.replace("\\", "/")).parent.name
            if len(parts) == 2 and split == "train":
                if not parts[1].isdigit() or int(parts[1]) not in classes:
                    raise LabelsError(f"{list_path} line {line}: class index {parts[1]!r} "
                                      f"is not in {os.path.basename(class_path)}")
                label = classes[int(parts[1])]
            elif len(parts) == 1 and folder_class.lower() in by_name:
                label = by_name[folder_class.lower()]
            elif len(parts) == 1:
                raise LabelsError(f"{list_path} line {line}: the folder {folder_class!r} of "
                                  f"{video!r} is no class of {os.path.basename(class_path)}")
            else:
                expected = "'<path> <index>'" if split == "train" else "'<path>'"
                raise LabelsError(f"{list_path} line {line}: expected {expected}, got {text!r}")
            videos.append(video)
            labels.append(label)
            splits.append(split)
    ordered = tuple(classes[index] for index in sorted(classes))
    return Labels(tuple(videos), tuple(labels), tuple(splits), ordered,
                  f"UCF101 split {fold} in {folder}")


_HMDB_FILE = re.compile(r"^(?P<action>.+)_test_split(?P<fold>[123])\.txt$")
_HMDB_SPLIT = {"0": "unused", "1": "train", "2": "test"}


def read_hmdb51(directory: str, fold: int = 1) -> Labels:
    """HMDB51's ``<action>_test_split<fold>.txt``: ``<video> <id>``, 1 train, 2 test, 0 unused.

    ``directory`` is the folder holding them or its parent
    (``testTrainMulti_7030_splits/``). Unused videos keep their label with split
    ``unused``: they are neither trained nor tested on.
    """
    _check_fold(fold)
    if not os.path.isdir(directory):
        raise InputNotFoundError(f"no such directory: {directory}")
    folder = directory
    if not _hmdb_files(folder, fold):
        nested = os.path.join(directory, "testTrainMulti_7030_splits")
        if os.path.isdir(nested) and _hmdb_files(nested, fold):
            folder = nested
        else:
            raise LabelsError(f"{directory} has no *_test_split{fold}.txt files")
    videos, labels, splits = [], [], []
    actions = []
    for file_name, action in _hmdb_files(folder, fold):
        path = os.path.join(folder, file_name)
        actions.append(action)
        for line, text in _read_lines(path):
            parts = text.split()
            if len(parts) != 2 or parts[1] not in _HMDB_SPLIT:
                raise LabelsError(f"{path} line {line}: expected '<video> <0|1|2>', got {text!r}")
            videos.append(parts[0])
            labels.append(action)
            splits.append(_HMDB_SPLIT[parts[1]])
    return Labels(tuple(videos), tuple(labels), tuple(splits), tuple(sorted(actions)),
                  f"HMDB51 split {fold} in {folder}")


def _hmdb_files(folder: str, fold: int) -> List[Tuple[str, str]]:
    found = []
    for name in sorted(os.listdir(folder)):
        match = _HMDB_FILE.match(name)
        if match and int(match.group("fold")) == fold:
            found.append((name, match.group("action")))
    return found


# ---------------------------------------------------------------- matching to features

def _stem(name: str) -> str:
    base = PurePosixPath(name.replace("\\", "/")).name
    stem, dot, _ = base.rpartition(".")
    return stem if dot and stem else base


class IdResolver:
    """Finds the feature-file row a name refers to (exact id, then file names without extension)."""

    NOT_FOUND = -1
    AMBIGUOUS = -2

    def __init__(self, feature_ids: Sequence[str]) -> None:
        self.exact = {video_id: row for row, video_id in enumerate(feature_ids)}
        self.by_stem: Dict[str, List[int]] = {}
        for row, video_id in enumerate(feature_ids):
            self.by_stem.setdefault(_stem(video_id), []).append(row)

    def resolve(self, name: str) -> int:
        """The row, ``NOT_FOUND`` or ``AMBIGUOUS``."""
        if name in self.exact:
            return self.exact[name]
        for key in (name, _stem(name)):
            rows = self.by_stem.get(key, [])
            if len(rows) == 1:
                return rows[0]
            if len(rows) > 1:
                return self.AMBIGUOUS
        return self.NOT_FOUND


def examples(items: Sequence[str], count: int = EXAMPLES) -> str:
    shown = ", ".join(repr(item) for item in items[:count])
    return shown + (", ..." if len(items) > count else "")


@dataclass(frozen=True)
class MatchReport:
    """What matching labels to features found; ``problems`` is empty when all is well."""

    n_label_rows: int
    n_features: int
    n_matched: int
    unmatched: Tuple[str, ...]       # label rows whose video is no feature id
    ambiguous: Tuple[str, ...]       # label rows that fit several feature ids
    duplicates: Tuple[str, ...]      # videos labelled more than once
    conflicting: Tuple[str, ...]     # duplicates with different labels or splits: dropped
    unlabelled: Tuple[str, ...]      # feature ids no label row names
    without_features: Tuple[Tuple[str, str], ...]  # labelled videos that failed or were skipped

    def problems(self) -> List[str]:
        lines = []
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} label rows match no video in the feature file "
                         f"(e.g. {examples(self.unmatched)})")
        if self.ambiguous:
            lines.append(f"{len(self.ambiguous)} label rows match several videos by file name "
                         f"(e.g. {examples(self.ambiguous)}); use the full ids")
        if self.duplicates:
            kept = len(self.duplicates) - len(self.conflicting)
            lines.append(f"{len(self.duplicates)} videos are labelled more than once "
                         f"(e.g. {examples(self.duplicates)}); {kept} with agreeing rows keep "
                         f"the first, {len(self.conflicting)} with conflicting rows are left out")
        if self.unlabelled:
            lines.append(f"{len(self.unlabelled)} videos in the feature file have no label "
                         f"(e.g. {examples(self.unlabelled)})")
        if self.without_features:
            statuses: Dict[str, int] = {}
            for _, status in self.without_features:
                statuses[status] = statuses.get(status, 0) + 1
            counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
            lines.append(f"{len(self.without_features)} labelled videos have no features "
                         f"({counts}; e.g. {examples([v for v, _ in self.without_features])})")
        return lines

    def check(self, allow_missing: bool) -> None:
        """Raise ``LabelsError`` listing the problems, unless they are allowed."""
        problems = self.problems()
        if problems and not allow_missing:
            raise LabelsError("labels and features do not match:\n  " + "\n  ".join(problems)
                              + "\npass --allow-missing to go on without these videos")


@dataclass(frozen=True)
class Match:
    """Labelled videos that have features: feature-file rows, class codes and splits."""

    rows: np.ndarray               # int64 rows of the feature file
    codes: np.ndarray              # int64 index into classes
    splits: Optional[np.ndarray]   # str per row, or None
    classes: Tuple[str, ...]
    report: MatchReport


def match_labels(labels: Labels, feature_ids: Sequence[str],
                 statuses: Sequence[str]) -> Match:
    """Match label rows to feature rows; every mismatch ends up in the report."""
    resolver = IdResolver(feature_ids)
    unmatched, ambiguous = [], []
    claims: Dict[int, List[int]] = {}  # feature row -> label rows naming it
    for index, video in enumerate(labels.videos):
        row = resolver.resolve(video)
        if row == IdResolver.NOT_FOUND:
            unmatched.append(video)
        elif row == IdResolver.AMBIGUOUS:
            ambiguous.append(video)
        else:
            claims.setdefault(row, []).append(index)
    duplicates, conflicting = [], []
    code_of = {name: code for code, name in enumerate(labels.classes)}
    rows, codes, splits, without = [], [], [], []
    for row in sorted(claims):
        indices = claims[row]
        if len(indices) > 1:
            duplicates.append(feature_ids[row])
            keys = {(labels.labels[i], labels.splits[i] if labels.splits else None)
                    for i in indices}
            if len(keys) > 1:
                conflicting.append(feature_ids[row])
                continue
        first = indices[0]
        if statuses[row] not in WITH_FEATURES:
            without.append((feature_ids[row], str(statuses[row])))
            continue
        rows.append(row)
        codes.append(code_of[labels.labels[first]])
        if labels.splits is not None:
            splits.append(labels.splits[first])
    unlabelled = [feature_ids[row] for row in range(len(feature_ids)) if row not in claims]
    report = MatchReport(len(labels), len(feature_ids), len(rows), tuple(unmatched),
                         tuple(ambiguous), tuple(duplicates), tuple(conflicting),
                         tuple(unlabelled), tuple(without))
    return Match(np.asarray(rows, np.int64), np.asarray(codes, np.int64),
                 np.asarray(splits, dtype=object) if labels.splits is not None else None,
                 labels.classes, report)
