"""``c3d-export``: per-clip features into the files other pipelines read."""

from __future__ import annotations

import sys
from typing import Optional

import click

from c3d_extract.cli.common import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, library_errors
from c3d_extract.export import FORMATS, ExportOptions

EXAMPLES = """
\b
Examples:
  c3d-export feats.h5 --format npy -o features/
  c3d-export feats.h5 --format sultani -o C3D_Features_txt/
  c3d-export feats.h5 --format ekosman -o features/
  c3d-export feats16.h5 --format rtfm -o rtfm/    (then cp rtfm/rtfm.list RTFM/list/ucf-i3d.list)
  c3d-export feats10crop.h5 --format npy --crop-files -o features/
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("features", type=click.Path(dir_okay=False))
@click.option("--format", "format_", required=True, type=click.Choice(FORMATS),
              help="npy: <id>.npy per video, clips x dims. sultani: <name>_C.txt, 32 "
              "segments as Sultani et al.'s MATLAB script. ekosman: <class>/<name>.txt and "
              "Train_Annotation.txt. rtfm: <id>.npy [snippets, crops, dims] and rtfm.list "
              "(needs --stride 16 at extraction).")
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write into (created if missing).")
@click.option("--layer", default="fc6", show_default=True,
              help="Layer of the per-clip features to export.")
@click.option("--segments", type=click.IntRange(min=1), default=32, show_default=True,
              help="Segments per video (sultani, ekosman; for rtfm the segments RTFM cuts, "
              "listed in index.csv).")
@click.option("--crop-files", is_flag=True,
              help="npy of a --crops 5/10 store: one <id>__<k>.npy per crop, the DeepMIL / "
              "VadCLIP naming (__0 centre, __1-__4 corners, __5-__9 mirrored).")
@click.option("--normal-marker", default="Normal", show_default=True,
              help="rtfm: ids containing this text are normal videos, listed after the "
              "anomalous ones.")
@click.option("--overwrite", is_flag=True,
              help="Write every file again (by default files already there are kept).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary on stderr.")
@library_errors
def cli(features: str, format_: str, output_dir: str, layer: str, segments: int,
        crop_files: bool, normal_marker: str, overwrite: bool, quiet: bool) -> None:
    """Export the per-clip features of FEATURES (an extraction with --per-clip) in the
    files an anomaly-detection or localisation pipeline reads.

    Each file is written atomically; a rerun keeps the files already there and writes
    the rest. OUTPUT_DIR/index.csv lists each output file: video id, file, decoded frames,
    fps, clips, and the first-last frame (0-based, inclusive) of each of its segments
    (npy: of each clip). Exit status: 0 every video exported, 3 some videos refused (each
    is named), 1 nothing could be exported, 2 usage error.
    """
    from c3d_extract.export import export_features

    options = ExportOptions(format=format_, layer=layer, segments=segments,
                            crop_files=crop_files, normal_marker=normal_marker,
                            overwrite=overwrite)
    bars = []  # drawn at the first video exported, not for a file that is refused

    def advance(meta: object) -> None:
        if not bars:
            from tqdm import tqdm

            bars.append(tqdm(unit="video", file=sys.stderr, dynamic_ncols=True))
        bars[0].update(1)

    try:
        summary = export_features(features, output_dir, options,
                                  progress=None if quiet else advance)
    except KeyboardInterrupt:
        for bar in bars:
            bar.close()
        click.echo(f"interrupted: the files written so far are kept in {output_dir}; rerun "
                   "the same command to write the rest", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        for bar in bars:
            bar.close()
    for warning in summary.warnings:
        click.echo(click.style(f"WARNING: {warning}", fg="yellow", bold=True), err=True)
    for video_id, reason in summary.failures:
        click.echo(f"refused: {reason}", err=True)
    if not quiet:
        click.echo(summary.line(), err=True)
        for note in summary.notes:
            click.echo(f"  {note}", err=True)
    sys.exit(EXIT_SOME_FAILED if summary.failures else EXIT_OK)


def main(prog_name: Optional[str] = None) -> None:
    cli(prog_name=prog_name or "c3d-export")


if __name__ == "__main__":
    main()
