"""``c3d-extract merge``: the shard files of a sharded run into one HDF5 file."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

import click

from c3d_extract.cli.common import EXIT_OK, EXIT_SOME_FAILED, library_errors

EXAMPLES = """
\b
Examples:
  c3d-extract merge feats.h5
  c3d-extract merge -o feats.h5 run1/feats.shard-0000*-of-00004.h5
  c3d-extract merge feats.h5 --allow-incomplete
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Merged file to write; then PATHS are the shard files to merge.")
@click.option("--allow-incomplete", is_flag=True,
              help="Merge even if shards are missing or unfinished; the output records "
              "which (attributes complete, missing_shards, incomplete_shards).")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@library_errors
def cli(paths: Sequence[str], output: Optional[str], allow_incomplete: bool,
        quiet: bool) -> None:
    """Merge the shard files of `c3d-extract --shard` (or torchrun, or Ray) into one file.

    With one PATH, the output: its shards are found next to it
    (feats.h5 -> feats.shard-*-of-NNNNN.h5). With -o, PATHS are the shards.
    Nothing is written unless every shard 0..N-1 is there and complete, no run
    is still writing one, all used the same parameters and weights, and no
    video is in two shards; otherwise each problem is listed. The output is
    replaced atomically. Exit status: 0 merged and every video has features,
    3 merged but some videos failed or shards are missing (--allow-incomplete),
    1 refused, 2 usage error.
    """
    from c3d_extract.store.merge import merge_shards

    if output is None:
        if len(paths) != 1:
            raise click.UsageError("give the output (and find its shards next to it), or "
                                   "-o OUTPUT and the shard files")
        summary = merge_shards(paths[0], allow_incomplete=allow_incomplete)
    else:
        summary = merge_shards(output, list(paths), allow_incomplete=allow_incomplete)
    if not quiet:
        click.echo(summary.line(), err=True)
        if summary.n_failed:
            click.echo(f"  {summary.n_failed} videos failed; their messages are in "
                       f"videos/error of {summary.output}", err=True)
    sys.exit(EXIT_OK if summary.complete and not summary.n_failed else EXIT_SOME_FAILED)


def main() -> None:
    cli(prog_name="c3d-extract merge")


if __name__ == "__main__":
    main()
