"""Training datasets: UCF101, HMDB51, Kinetics and class folders, as train / validation / test
lists of samples that cannot leak into each other.

* ``ucf101``: ``ROOT/<Class>/v_<Class>_gXX_cYY.avi`` with ``classInd.txt``,
  ``trainlistNN.txt`` and ``testlistNN.txt`` (paths relative to ROOT). Classes are those of
  ``classInd.txt``, in its order.
* ``hmdb51``: ``ROOT/<action>/<video>.avi`` with ``<action>_test_split{1,2,3}.txt``
  (``<video> <id>``: 1 train, 2 test, 0 unused). Classes are the actions, sorted.
* ``kinetics``: ``train.csv`` and ``val.csv`` (``label,youtube_id,time_start,time_end[,split]``);
  videos ``<youtube_id>_<start:06d>_<end:06d>.mp4`` anywhere under ROOT (per-class or flat
  folders). The test list is ``val.csv``. Missing videos are counted in the notes, not fatal.
  Classes are the labels of ``train.csv``, sorted.
* ``folder``: one subfolder per class (sorted names); a seeded split puts about
  ``FOLDER_TEST_FRACTION`` of each class's videos, whole groups at a time, in the test list.

Without ``splits_dir`` the split files are looked for in the dataset's usual folder next to ROOT,
then inside ROOT; the notes say which was used. A video may also be a frame folder (see
``c3d_extract.train.videos``); a split file naming ``x.avi`` accepts a frame folder ``x/``.

Groups: UCF101 clips cut from one long video share a group ``<Class>_gXX`` (group numbers are
per class). HMDB51 clips of one source video share their name up to the trailing ``_<n>``;
Kinetics clips share their YouTube id; in class folders a ``_gXX_`` in the name makes the
UCF-style group, else each video is its own group. The validation list is carved from the
training list by whole groups, per class, seeded; the training list may share no video and no
UCF101 group with the test list (``SplitOverlapError``) unless overlap is allowed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.datasets.labels import examples, read_csv_table, read_hmdb51, read_ucf101
from c3d_extract.errors import (DatasetError, InputNotFoundError, LabelsError, SplitOverlapError,
                                UsageError)
from c3d_extract.train.videos import is_video, resolve_video
from c3d_extract.video.frame_folders import is_frame_folder
from c3d_extract.video.probe import cut_short

KINDS = ("ucf101", "hmdb51", "kinetics", "folder")
#: Share of each class's videos (whole groups) that the ``folder`` split puts in the test list.
FOLDER_TEST_FRACTION = 0.2
#: The usual name of each dataset's split folder, looked for next to ROOT and inside it.
SPLIT_FOLDERS = {"ucf101": "ucfTrainTestlist", "hmdb51": "testTrainMulti_7030_splits"}
#: Keys mixed into the seed so the test carve and the validation carve differ.
_TEST_CARVE, _VAL_CARVE = 1, 2
_UCF_NAME = re.compile(r"^v_(?P<cls>.+)_g(?P<group>\d+)_c\d+$")
_GROUP_TOKEN = re.compile(r"_g(?P<group>\d+)(?:_|$)")


@dataclass(frozen=True)
class Sample:
    """One video: absolute ``path`` (file or frame folder), class index, group name."""

    path: str
    label: int
    group: str


@dataclass(frozen=True)
class DatasetSplits:
    """The exact lists a run uses, with the class names (index = label) and notes for the user."""

    classes: Tuple[str, ...]
    train: Tuple[Sample, ...]
    val: Tuple[Sample, ...]
    test: Tuple[Sample, ...]
    splits_dir: Optional[str]
    notes: Tuple[str, ...]
    kind: str = ""
    root: str = ""
    split: int = 1
    val_fraction: float = 0.0
    seed: int = 0

    def to_dict(self) -> Dict[str, object]:
        def rows(samples: Sequence[Sample]) -> List[Dict[str, object]]:
            return [{"path": s.path, "label": s.label, "group": s.group} for s in samples]

        return {"format": "c3d-extract.dataset-splits", "format_version": 1,
                "kind": self.kind, "root": self.root, "splits_dir": self.splits_dir,
                "split": self.split, "val_fraction": self.val_fraction, "seed": self.seed,
                "classes": list(self.classes), "notes": list(self.notes),
                "train": rows(self.train), "val": rows(self.val), "test": rows(self.test)}

    def to_json(self) -> str:
        """Everything that defines the lists, as JSON (stable key order)."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DatasetSplits":
        data = json.loads(text)

        def samples(key: str) -> Tuple[Sample, ...]:
            return tuple(Sample(str(r["path"]), int(r["label"]), str(r["group"]))
                         for r in data[key])

        return cls(tuple(data["classes"]), samples("train"), samples("val"), samples("test"),
                   data["splits_dir"], tuple(data["notes"]), data["kind"], data["root"],
                   int(data["split"]), float(data["val_fraction"]), int(data["seed"]))


def load_dataset(kind: str, root: str, *, splits_dir: Optional[str] = None, split: int = 1,
                 val_fraction: float = 0.1, seed: int = 0,
                 allow_overlap: bool = False) -> DatasetSplits:
    """Read a dataset's classes and lists; carve validation from training by group.

    Raises ``DatasetError`` for malformed datasets or split files (naming file and line),
    ``SplitOverlapError`` when training and test share videos or UCF101 groups (unless
    ``allow_overlap``), ``InputNotFoundError`` when ROOT or ``splits_dir`` does not exist.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not os.path.isdir(root):
        raise InputNotFoundError(f"no such dataset folder: {root}")
    if splits_dir is not None and not os.path.isdir(splits_dir):
        raise InputNotFoundError(f"no such split folder: {splits_dir}")
    if split not in (1, 2, 3):
        raise UsageError(f"split must be 1, 2 or 3, not {split}")
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"the validation fraction must be in [0, 1), not {val_fraction}")
    if seed < 0:
        raise UsageError(f"the seed must be a non-negative integer, not {seed}")
    root = os.path.abspath(root)
    loaded = _LOADERS[kind](root, splits_dir, split, seed)
    notes = list(loaded.notes)
    whole_train, cut_train = leave_out_cut_short(loaded.train)
    test, cut_test = leave_out_cut_short(loaded.test)
    if cut_train or cut_test:
        cut = cut_train + cut_test
        notes.append(f"left out {_count(len(cut), 'truncated video')} (training "
                     f"{len(cut_train)}, test {len(cut_test)}): {examples(cut, 3)}")
    overlap_note = check_overlap(whole_train, test, root, allow_overlap)
    if overlap_note:
        notes.append(overlap_note)
    train, val = split_by_group(whole_train, val_fraction, seed, _VAL_CARVE)
    if val_fraction > 0:
        notes.append(f"validation: {len(val)} videos ({len({s.group for s in val})} groups) "
                     f"carved from the training list by group (fraction {val_fraction}, "
                     f"seed {seed})" if val else
                     f"no validation list: in every class a whole group is larger than a "
                     f"validation fraction of {val_fraction} (groups are never split)")
    return DatasetSplits(loaded.classes, train, val, test, loaded.splits_dir,
                         tuple(notes), kind, root, split, val_fraction, seed)


def leave_out_cut_short(samples: Sequence[Sample]) -> Tuple[Tuple[Sample, ...], List[str]]:
    """The samples whose files are whole, and ``"path: reason"`` for those cut short
    (``probe.cut_short``: the container's structure runs past the end of the file)."""
    kept, cut = [], []
    for sample in samples:
        reason = None if os.path.isdir(sample.path) else cut_short(sample.path)
        if reason is None:
            kept.append(sample)
        else:
            cut.append(f"{sample.path}: {reason}")
    return tuple(kept), cut


# ---------------------------------------------------------------- groups and carving

def ucf101_group(name: str) -> Optional[str]:
    """``<Class>_gXX`` of a UCF101-named video (``v_<Class>_gXX_cYY[.avi]``), else None."""
    match = _UCF_NAME.match(_stem(name))
    if match is None:
        return None
    return f"{match.group('cls')}_g{int(match.group('group')):02d}"


def _stem(path: str) -> str:
    base = path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    stem, extension = os.path.splitext(base)
    return stem if extension and stem else base


def folder_group(path: str, class_name: str) -> str:
    """The UCF101 group when the name has one, else ``<class>/<stem>`` (its own group)."""
    stem = _stem(path)
    group = ucf101_group(stem)
    if group is not None:
        return group
    token = _GROUP_TOKEN.search(stem)
    if token is not None:
        return f"{class_name}_g{int(token.group('group')):02d}"
    return f"{class_name}/{stem}"


def split_by_group(samples: Sequence[Sample], fraction: float, seed: int,
                   purpose: int) -> Tuple[Tuple[Sample, ...], Tuple[Sample, ...]]:
    """``(kept, carved)``: about ``fraction`` of each class's videos carved out, whole groups.

    Per class, the sorted groups are shuffled by ``default_rng([seed, purpose, label])`` and
    each is carved if that brings the carved count closer to ``fraction`` of the class; one
    group always stays. Order within each list is the input order.
    """
    if fraction <= 0:
        return tuple(samples), ()
    by_label: Dict[int, Dict[str, int]] = {}
    for sample in samples:
        groups = by_label.setdefault(sample.label, {})
        groups[sample.group] = groups.get(sample.group, 0) + 1
    carved_groups = set()
    for label, groups in sorted(by_label.items()):
        target = fraction * sum(groups.values())
        order = sorted(groups)
        np.random.default_rng([seed, purpose, label]).shuffle(order)
        count, chosen = 0, []
        for group in order:
            if len(chosen) == len(groups) - 1:
                break
            if abs(count + groups[group] - target) < abs(count - target):
                chosen.append(group)
                count += groups[group]
        carved_groups.update((label, group) for group in chosen)
    kept = tuple(s for s in samples if (s.label, s.group) not in carved_groups)
    carved = tuple(s for s in samples if (s.label, s.group) in carved_groups)
    return kept, carved


def check_overlap(train: Sequence[Sample], test: Sequence[Sample], root: str,
                  allow_overlap: bool = False) -> Optional[str]:
    """Refuse training and test lists sharing a video or a UCF101 group.

    Returns None when they share nothing, a note when they do and ``allow_overlap``; else
    raises ``SplitOverlapError`` naming the first few shared groups and videos and the counts.
    """
    test_videos = {os.path.realpath(s.path) for s in test}
    test_groups = {g for g in (ucf101_group(s.path) for s in test) if g}
    groups = sorted({g for g in (ucf101_group(s.path) for s in train) if g in test_groups})
    videos = sorted({_shown(s.path, root) for s in train
                     if os.path.realpath(s.path) in test_videos})
    if not groups and not videos:
        return None
    parts = []
    if groups:
        parts.append(f"{_count(len(groups), 'UCF101 group')} ({examples(groups, 5)})")
    if videos:
        parts.append(f"{_count(len(videos), 'video')} ({examples(videos, 5)})")
    what = " and ".join(parts)
    if allow_overlap:
        return f"overlap allowed: the training list shares {what} with the test list"
    raise SplitOverlapError(
        f"the training list shares {what} with the test list: test accuracy would be "
        f"inflated; use split files that keep them apart (or allow the overlap explicitly)",
        groups, videos)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' * (number != 1)}"


def _shown(path: str, root: str) -> str:
    relative = os.path.relpath(path, root)
    return path if relative.startswith("..") else relative.replace(os.sep, "/")


# ---------------------------------------------------------------- the four kinds

@dataclass(frozen=True)
class _Loaded:
    classes: Tuple[str, ...]
    train: Tuple[Sample, ...]
    test: Tuple[Sample, ...]
    splits_dir: Optional[str]
    notes: Tuple[str, ...]


def _find_splits(root: str, splits_dir: Optional[str], kind: str, split: int,
                 has_files: Callable[[str], bool]) -> Tuple[str, str]:
    """``(folder, note)``: the given split folder (or its usual subfolder), else the usual
    folder next to ROOT, then inside ROOT."""
    usual = SPLIT_FOLDERS[kind]
    if splits_dir is not None:
        for candidate in (splits_dir, os.path.join(splits_dir, usual)):
            if has_files(candidate):
                folder = os.path.abspath(candidate)
                return folder, f"split files: {folder}"
        raise DatasetError(f"the split folder {splits_dir} holds no {kind} split files for "
                           f"split {split} (nor does {os.path.join(splits_dir, usual)})")
    candidates = (os.path.join(os.path.dirname(root), usual), os.path.join(root, usual))
    for candidate in candidates:
        if has_files(candidate):
            return candidate, f"split files found in {candidate}"
    raise DatasetError(f"no {kind} split files for split {split} given and none found in "
                       f"{' or '.join(candidates)}; give the split folder with "
                       "--splits DIR")


def _missing_error(missing: List[str], list_file: str, root: str) -> DatasetError:
    hint = ""
    nested = [name for name in ("UCF-101", "UCF101", "hmdb51") if
              os.path.isdir(os.path.join(root, name))]
    if nested:
        hint = f" (is the dataset folder {os.path.join(root, nested[0])}?)"
    return DatasetError(f"{_count(len(missing), 'video')} listed in {list_file} "
                        f"{'is' if len(missing) == 1 else 'are'} not under {root}{hint}: "
                        f"{examples(missing, 5)}")


def _load_ucf101(root: str, splits_dir: Optional[str], split: int, seed: int) -> _Loaded:
    folder, note = _find_splits(root, splits_dir, "ucf101", split,
                                lambda d: os.path.isfile(os.path.join(d, "classInd.txt")))
    try:
        labels = read_ucf101(folder, split)
    except LabelsError as error:
        raise DatasetError(str(error)) from None
    for name in (f"trainlist{split:02d}.txt", f"testlist{split:02d}.txt"):
        if _is_empty(os.path.join(folder, name)):
            raise DatasetError(f"{os.path.join(folder, name)} lists no videos")
    code = {name: index for index, name in enumerate(labels.classes)}
    lists: Dict[str, List[Sample]] = {"train": [], "test": []}
    missing: Dict[str, List[str]] = {"train": [], "test": []}
    for video, label, which in zip(labels.videos, labels.labels, labels.splits):
        relative = video.replace("\\", "/")
        path = resolve_video(os.path.join(root, *relative.split("/")))
        if path is None:
            missing[which].append(relative)
            continue
        group = folder_group(relative, label)
        lists[which].append(Sample(path, code[label], group))
    for which in ("train", "test"):
        if missing[which]:
            list_file = os.path.join(folder, f"{which}list{split:02d}.txt")
            raise _missing_error(missing[which], list_file, root)
    return _Loaded(labels.classes, tuple(lists["train"]), tuple(lists["test"]), folder,
                   (note,))


def _is_empty(path: str) -> bool:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        return not any(line.strip() for line in handle)


_HMDB_TRAILING_NUMBER = re.compile(r"_\d+$")
_HMDB_SPLIT_CODE = {"train": "1", "test": "2"}


def _has_hmdb_files(split: int) -> Callable[[str], bool]:
    def check(folder: str) -> bool:
        return os.path.isdir(folder) and any(
            name.endswith(f"_test_split{split}.txt") for name in os.listdir(folder))
    return check


def _load_hmdb51(root: str, splits_dir: Optional[str], split: int, seed: int) -> _Loaded:
    folder, note = _find_splits(root, splits_dir, "hmdb51", split,
                                _has_hmdb_files(split))
    try:
        labels = read_hmdb51(folder, split)
    except LabelsError as error:
        raise DatasetError(str(error)) from None
    listed = set(labels.labels)
    for action in labels.classes:
        if action not in listed:
            raise DatasetError(f"{os.path.join(folder, f'{action}_test_split{split}.txt')} "
                               f"lists no videos")
    code = {name: index for index, name in enumerate(labels.classes)}
    lists: Dict[str, List[Sample]] = {"train": [], "test": []}
    missing: Dict[str, List[str]] = {"train": [], "test": []}
    unused = 0
    for video, action, which in zip(labels.videos, labels.labels, labels.splits):
        if which == "unused":
            unused += 1
            continue
        path = resolve_video(os.path.join(root, action, video))
        if path is None:
            missing[which].append(f"{action}/{video}")
            continue
        group = f"{action}/{_HMDB_TRAILING_NUMBER.sub('', _stem(video))}"
        lists[which].append(Sample(path, code[action], group))
    for which in ("train", "test"):
        if missing[which]:
            raise _missing_error(missing[which], f"{folder}/*_test_split{split}.txt "
                                 f"(id {_HMDB_SPLIT_CODE[which]})", root)
    notes = [note, f"HMDB51 split {split}: {_count(unused, 'video')} marked 0 (unused) left out"]
    extra = sorted(name for name in os.listdir(root)
                   if os.path.isdir(os.path.join(root, name)) and not name.startswith(".")
                   and name not in code and os.path.join(root, name) != folder)
    if extra:
        notes.append(f"folders without split files ignored: {examples(extra, 5)}")
    return _Loaded(labels.classes, tuple(lists["train"]), tuple(lists["test"]), folder,
                   tuple(notes))


_KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def _load_kinetics(root: str, splits_dir: Optional[str], split: int, seed: int) -> _Loaded:
    has_csvs = (lambda d: all(os.path.isfile(os.path.join(d, f"{n}.csv"))
                              for n in ("train", "val")))
    if splits_dir is not None:
        if not has_csvs(splits_dir):
            raise DatasetError(f"the split folder {splits_dir} lacks train.csv or val.csv")
        folder = os.path.abspath(splits_dir)
        note = f"split files: {folder}"
    else:
        candidates = [root, os.path.join(root, "annotations"), os.path.dirname(root),
                      os.path.join(os.path.dirname(root), "annotations")]
        found = [c for c in candidates if has_csvs(c)]
        if not found:
            raise DatasetError(f"no train.csv and val.csv given and none found in "
                               f"{', '.join(candidates)}; give the split folder with "
                               "--splits DIR")
        folder = found[0]
        note = f"split files found in {folder}"
    rows = {which: _kinetics_rows(os.path.join(folder, f"{which}.csv"))
            for which in ("train", "val")}
    classes = tuple(sorted({label for _, label, _ in rows["train"]}))
    code = {name: index for index, name in enumerate(classes)}
    for line, label, _ in rows["val"]:
        if label not in code:
            raise DatasetError(f"{os.path.join(folder, 'val.csv')} line {line}: the label "
                               f"{label!r} does not occur in train.csv")
    index = _index_videos(root)
    notes = [note]
    lists: Dict[str, List[Sample]] = {}
    for which in ("train", "val"):
        samples, missing = [], []
        for _, label, name in rows[which]:
            path = _pick(index.get(name, []), label)
            if path is None:
                missing.append(name)
            else:
                samples.append(Sample(path, code[label], name.rsplit("_", 2)[0]))
        if missing:
            notes.append(f"{len(missing)} of {len(rows[which])} videos listed in {which}.csv "
                         f"are missing under {root} (e.g. {examples(missing, 3)}); "
                         f"going on without them")
        if not samples:
            raise DatasetError(f"none of the {len(rows[which])} videos listed in "
                               f"{os.path.join(folder, which + '.csv')} is under {root}")
        lists[which] = samples
    return _Loaded(classes, tuple(lists["train"]), tuple(lists["val"]), folder, tuple(notes))


def _kinetics_rows(path: str) -> List[Tuple[int, str, str]]:
    """``(line, label, video name)`` per row of a Kinetics csv."""
    try:
        table = read_csv_table(path, _KINETICS_COLUMNS, ("split", "is_cc"))
    except LabelsError as error:
        raise DatasetError(str(error)) from None
    if not table:
        raise DatasetError(f"{path} lists no videos")
    rows = []
    for line, row in table:
        if not row["label"] or not row["youtube_id"]:
            raise DatasetError(f"{path} line {line}: empty label or youtube_id")
        times = []
        for column in ("time_start", "time_end"):
            try:
                value = float(row[column])
            except ValueError:
                value = float("nan")
            if not value.is_integer() or value < 0:
                raise DatasetError(f"{path} line {line}: {column} must be a whole number of "
                                   f"seconds, not {row[column]!r}")
            times.append(int(value))
        rows.append((line, row["label"], f"{row['youtube_id']}_{times[0]:06d}_{times[1]:06d}"))
    return rows


def _index_videos(root: str) -> Dict[str, List[str]]:
    """Video files and frame folders under ROOT by name without extension."""
    index: Dict[str, List[str]] = {}
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            if is_video(path):
                index.setdefault(_stem(name), []).append(path)
        for name in list(subdirectories):
            path = os.path.join(directory, name)
            if is_frame_folder(path):
                index.setdefault(name, []).append(path)
                subdirectories.remove(name)
    return index


def _pick(paths: List[str], label: str) -> Optional[str]:
    """The copy in the label's own folder when there are several, else the first."""
    if len(paths) > 1:
        own = {label, label.replace(" ", "_")}
        for path in paths:
            if os.path.basename(os.path.dirname(path)) in own:
                return path
    return paths[0] if paths else None


def _load_folder(root: str, splits_dir: Optional[str], split: int, seed: int) -> _Loaded:
    if splits_dir is not None:
        raise UsageError("a folder dataset is split by the tool: it takes no split folder")
    classes, samples, empty = [], [], []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(path) or is_frame_folder(path):
            continue
        videos = _class_videos(path)
        if not videos:
            empty.append(name)
            continue
        samples.extend(Sample(video, len(classes), folder_group(video, name))
                       for video in videos)
        classes.append(name)
    if len(classes) < 2:
        raise DatasetError(f"{root} needs at least two class subfolders holding videos "
                           f"(or frame folders); found {len(classes)}"
                           + (f" (without videos: {examples(empty, 5)})" if empty else ""))
    train, test = split_by_group(samples, FOLDER_TEST_FRACTION, seed, _TEST_CARVE)
    if not test:
        raise DatasetError(f"{root}: too few videos or groups to set a test list apart "
                           f"({FOLDER_TEST_FRACTION:.0%} of a class)")
    notes = [f"test list: {len(test)} videos ({len({s.group for s in test})} groups), about "
             f"{FOLDER_TEST_FRACTION:.0%} of each class by group, seed {seed}"]
    single = [classes[label] for label in range(len(classes))
              if label not in {s.label for s in test}]
    if single:
        notes.append(f"classes without test videos (one group or too few videos): "
                     f"{examples(single, 5)}")
    if empty:
        notes.append(f"folders without videos ignored: {examples(empty, 5)}")
    return _Loaded(tuple(classes), train, test, None, tuple(notes))


def _class_videos(folder: str) -> List[str]:
    """Video files and frame folders under a class folder, sorted by path."""
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in list(subdirectories):
            path = os.path.join(directory, name)
            if is_frame_folder(path):
                found.append(path)
                subdirectories.remove(name)
        found.extend(os.path.join(directory, name) for name in files
                     if not name.startswith(".") and is_video(os.path.join(directory, name)))
    return sorted(found)


_LOADERS: Dict[str, Callable[[str, Optional[str], int, int], _Loaded]] = {
    "ucf101": _load_ucf101, "hmdb51": _load_hmdb51, "kinetics": _load_kinetics,
    "folder": _load_folder,
}
