"""Options and output shared by ``c3d-svm`` and ``c3d-pca``: label sources, warnings, C."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import click

from c3d_extract.datasets.labels import Labels, read_hmdb51, read_labels_csv, read_ucf101
from c3d_extract.errors import UsageError

LABEL_SOURCES_HELP = (
    "Labels come from LABELS (a CSV with header video,label and optional split = train/test) "
    "or from --ucf101 DIR / --hmdb51 DIR with --fold, which replace the LABELS argument. "
    "A label's video matches a feature id, or the id's file name without extension when "
    "that is unique. Label rows without features, videos without labels, duplicates and "
    "failed or skipped videos stop the command unless --allow-missing is given."
)


def label_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--ucf101``, ``--hmdb51``, ``--fold`` and ``--allow-missing``."""
    decorators = [
        click.option("--ucf101", "ucf101", type=click.Path(file_okay=False), default=None,
                     help="UCF101 split folder (classInd.txt, trainlist0N.txt, testlist0N.txt) "
                          "instead of LABELS."),
        click.option("--hmdb51", "hmdb51", type=click.Path(file_okay=False), default=None,
                     help="HMDB51 split folder (<action>_test_splitN.txt) instead of LABELS."),
        click.option("--fold", type=click.IntRange(1, 3), default=1, show_default=True,
                     help="Which official split of --ucf101 / --hmdb51."),
        click.option("--allow-missing", is_flag=True,
                     help="Go on without videos that have no labels or no features "
                          "(they are still reported)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def load_labels(labels_path: Optional[str], ucf101: Optional[str], hmdb51: Optional[str],
                fold: int) -> Labels:
    """The one label source the user named."""
    given = [name for name, value in (("LABELS", labels_path), ("--ucf101", ucf101),
                                      ("--hmdb51", hmdb51)) if value]
    if len(given) != 1:
        raise UsageError("give exactly one of LABELS, --ucf101 DIR or --hmdb51 DIR"
                         + (f" (got {', '.join(given)})" if given else ""))
    if ucf101:
        return read_ucf101(ucf101, fold)
    if hmdb51:
        return read_hmdb51(hmdb51, fold)
    return read_labels_csv(labels_path)  # type: ignore[arg-type]


def warn(messages: Iterable[str]) -> None:
    """Warnings go to stderr, one per line."""
    for message in messages:
        click.secho(f"Warning: {message}", err=True, fg="yellow")


def note(message: str) -> None:
    click.echo(message, err=True)


def parse_C(value: str) -> Optional[float]:
    """``auto`` -> None (choose by cross-validation), else a positive number."""
    if value.strip().lower() == "auto":
        return None
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter(f"expected a positive number or 'auto', got {value!r}",
                                 param_hint="--C") from None
    if not number > 0:
        raise click.BadParameter("C must be positive", param_hint="--C")
    return number


def c_option(default: str = "1.0", allow_auto: bool = True) -> Callable[..., Any]:
    help_text = ("SVM regularisation C"
                 + (": a number, or 'auto' to choose from --grid by stratified k-fold CV"
                    if allow_auto else "") + ".")
    return click.option("--C", "C", default=default, show_default=True, help=help_text)


def pct(value: float) -> str:
    return f"{value * 100:.1f}%"
