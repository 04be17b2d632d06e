"""One export: every video of a feature file into a format's files, then the index."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from c3d_extract.atomic_files import make_folders
from c3d_extract.errors import ExportError
from c3d_extract.export.base import ExportOptions, Format, PlannedFile, VideoRefused
from c3d_extract.export.ekosman import EkosmanFormat
from c3d_extract.export.files import (INDEX_NAME, IndexRow, check_unique, index_bytes,
                                      write_output)
from c3d_extract.export.npy import NpyFormat
from c3d_extract.export.rtfm import RtfmFormat
from c3d_extract.export.segments import frame_ranges
from c3d_extract.export.source import ClipReader, VideoMeta
from c3d_extract.export.sultani import SultaniFormat

_FORMATS: Dict[str, Callable[[ExportOptions], Format]] = {
    "npy": NpyFormat, "sultani": SultaniFormat, "ekosman": EkosmanFormat, "rtfm": RtfmFormat}


@dataclass
class ExportSummary:
    """What an export did; ``failures`` are ``(video id, reason)`` of refused videos."""

    out_dir: str
    format: str
    written: int = 0
    already_there: int = 0
    without_features: List[str] = field(default_factory=list)
    failures: List[Tuple[str, str]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    extra_files: List[str] = field(default_factory=list)

    @property
    def exported(self) -> int:
        return self.written + self.already_there

    def line(self) -> str:
        parts = [f"{self.exported} videos in {self.format} format -> {self.out_dir}",
                 f"{self.written} written", f"{self.already_there} already there"]
        if self.without_features:
            parts.append(f"{len(self.without_features)} without features in the store")
        if self.failures:
            parts.append(f"{len(self.failures)} refused")
        return ", ".join(parts)


def export_features(features_path: str, out_dir: str, options: ExportOptions, *,
                    progress: Optional[Callable[[VideoMeta], None]] = None) -> ExportSummary:
    """Write the per-clip features of ``features_path`` in ``options.format`` under
    ``out_dir``, each file atomically; files already there are kept (unless
    ``options.overwrite``), so a rerun finishes an interrupted export. ``index.csv`` and the
    format's list files are written last, for every video exported."""
    exporter = _FORMATS[options.format](options)
    summary = ExportSummary(out_dir=out_dir, format=options.format)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir} exists and is not a folder")
    with ClipReader(features_path, options.layer) as reader:
        summary.warnings.extend(exporter.check(reader.info))
        planned: List[Tuple[VideoMeta, List[PlannedFile]]] = []
        for meta in sorted(reader.videos, key=lambda m: m.id):
            if not reader.has_features(meta):
                summary.without_features.append(meta.id)
                continue
            try:
                planned.append((meta, exporter.files(meta)))
            except VideoRefused as refusal:
                summary.failures.append((meta.id, str(refusal)))
        check_unique((meta.id, f.path) for meta, files in planned for f in files)
        make_folders(out_dir)
        exported: List[VideoMeta] = []
        rows: List[IndexRow] = []
        for meta, files in planned:
            targets = [os.path.join(out_dir, *f.path.split("/")) for f in files]
            video = None
            if options.overwrite or not all(os.path.exists(t) for t in targets):
                video = reader.clips(meta)
                try:
                    contents = exporter.render(video)
                except VideoRefused as refusal:
                    summary.failures.append((meta.id, str(refusal)))
                    continue
                for target, content in zip(targets, contents):
                    write_output(target, content)
                summary.written += 1
            else:
                summary.already_there += 1
            exported.append(meta)
            rows.extend(_index_rows(reader, exporter, meta, files, video))
            if progress is not None:
                progress(meta)
    extra, notes = exporter.finish(out_dir, exported)
    for name, content in extra:
        write_output(os.path.join(out_dir, name), content)
        summary.extra_files.append(name)
    write_output(os.path.join(out_dir, INDEX_NAME), index_bytes(rows))
    summary.notes.extend(notes)
    return summary


def _index_rows(reader: ClipReader, exporter: Format, meta: VideoMeta,
                files: List[PlannedFile], video) -> List[IndexRow]:
    start_frames = video.start_frames if video is not None else reader.start_frames(meta)
    segments = frame_ranges(exporter.clip_ranges(meta.n_clips), start_frames,
                            reader.info.clip_len, meta.n_frames)
    return [IndexRow(id=meta.id, output=f.path, crop=f.crop, frames=meta.n_frames,
                     fps=meta.fps, clips=meta.n_clips, segments=segments) for f in files]
