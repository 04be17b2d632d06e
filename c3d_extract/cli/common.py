"""What every command shares: turning library errors into messages and exit codes."""

from __future__ import annotations

import functools
from typing import Any, Callable, List, Sequence, TypeVar

import click

from c3d_extract.device.hardware import PRECISIONS
from c3d_extract.errors import C3DError, UsageError
from c3d_extract.weights.kernel_orders import KERNEL_ORDERS, OPTION_HELP

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = 130


#: ``--kernel-order``, for every command that reads weights.
kernel_order_option = click.option("--kernel-order", type=click.Choice(KERNEL_ORDERS),
                                   default=None, help=OPTION_HELP)


class DefaultCommandGroup(click.Group):
    """A group with a default command, the one mechanism for every command that has one.

    The default command runs when the arguments name no command: ``c3d-pca feats.h5 ...``
    is ``c3d-pca compact feats.h5 ...``, and ``c3d-weights cache`` is its (hidden)
    ``cache list``. A first argument that is no command name is handed to the default
    command only if that command takes arguments; otherwise click reports the unknown
    command, so a misspelt ``c3d-weights cache clera`` is still named as such. With no
    arguments at all, a group that shows its help then (click's ``no_args_is_help``, true
    unless a group is declared with ``no_args_is_help=False``) keeps doing so; one that
    does not runs the default command, and its usage line shows the command as optional.
    """

    #: ``ctx.meta`` key: the default command was inserted, not named by the user.
    _IMPLICIT = "c3d_extract.default_command_implicit"

    def __init__(self, *args: Any, default_command: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_command = default_command
        if kwargs.get("subcommand_metavar") is None and not self.no_args_is_help:
            self.subcommand_metavar = "[COMMAND] [ARGS]..."

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        if self._runs_default(ctx, args):
            args = [self.default_command, *args]
            ctx.meta[self._IMPLICIT] = True
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        """A usage error of a hidden default command that the user did not name is the
        group's: its usage line and ``--help`` hint name the group, not the hidden name."""
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            default = self.commands[self.default_command]
            if ctx.meta.get(self._IMPLICIT) and default.hidden and error.ctx is not None \
                    and error.ctx.command is default:
                error.ctx = ctx
            raise

    def _runs_default(self, ctx: click.Context, args: List[str]) -> bool:
        """Whether ``args`` are the default command's: see the class docstring."""
        if not args:
            return not self.no_args_is_help
        if args[0] in self.commands or args[0] in ctx.help_option_names:
            return False
        default = self.commands[self.default_command]
        return any(isinstance(param, click.Argument) for param in default.params)


def raise_interrupt(signum: int, frame: Any) -> None:
    """A SIGTERM handler: stop the way Ctrl-C does (``KeyboardInterrupt``), so one path
    says what is kept and exits 130."""
    raise KeyboardInterrupt


def library_errors(func: F) -> F:
    """Run a command body; typed library errors become one-line messages, never tracebacks.

    ``UsageError`` exits 2 like click's own usage errors; other ``C3DError`` exit 1.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UsageError as error:
            raise click.UsageError(str(error)) from None
        except C3DError as error:
            raise click.ClickException(str(error)) from None
        except MemoryError:
            raise click.ClickException("out of memory (an input declares more data than this "
                                       "machine can hold)") from None
        except RecursionError:
            raise click.ClickException("an input is nested too deeply to be read") from None
        except RuntimeError as error:
            if "allocate" not in str(error):
                raise
            raise click.ClickException("out of memory (an input declares more data than this "
                                       "machine can hold)") from None

    return wrapper  # type: ignore[return-value]


def show_warnings_plainly() -> None:
    """Library warnings (random weights, mismatched models) as one bold line on stderr."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        click.echo(click.style(f"WARNING: {message}", fg="yellow", bold=True), err=True)

    warnings.showwarning = show


def split_list(value: str, option: str) -> List[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; an empty item is a usage error."""
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or any(not item for item in items):
        raise click.BadParameter(f"expected a comma-separated list, got {value!r}",
                                 param_hint=option)
    return items


def parse_int_list(value: str, option: str) -> List[int]:
    items = split_list(value, option)
    try:
        numbers = [int(item) for item in items]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}",
                                 param_hint=option) from None
    if any(n <= 0 for n in numbers):
        raise click.BadParameter("every value must be positive", param_hint=option)
    return numbers


def echo_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """A plain aligned table on stdout."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        click.echo("  ".join(cell.rjust(width) if n and _numeric(cell) else cell.ljust(width)
                             for cell, width in zip(row, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * width for width in widths))


def _numeric(cell: str) -> bool:
    try:
        float(cell.rstrip("%"))
    except ValueError:
        return False
    return True


def compute_options(command):
    """``--device``, ``--precision``, ``--allow-emulated-precision`` and ``--backend``: where
    and how the network runs, the same for every command that runs it."""
    for option in reversed([
        click.option("--device", default="auto", show_default=True,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--precision", default="auto", show_default=True,
                     type=click.Choice(PRECISIONS),
                     help="auto: bf16 on CUDA; on a CPU bf16 where it is native (AMX or "
                     "AVX-512 BF16), else fp32. bf16/fp16 on a CPU that would emulate them "
                     "is refused."),
        click.option("--allow-emulated-precision", is_flag=True,
                     help="Run --precision bf16/fp16 even on a CPU that emulates it (many "
                     "times slower than fp32)."),
        click.option("--backend", default="auto", show_default=True,
                     type=click.Choice(["auto", "torch", "openvino"]),
                     help="Engine of the network. auto: OpenVINO on an x86-64 CPU (converted "
                     "once per weights file and cached), torch on CUDA."),
    ]):
        command = option(command)
    return command
