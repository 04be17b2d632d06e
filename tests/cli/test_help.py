"""Every entry point declared in pyproject.toml, and every command and subcommand under it,
answers --help; python -m works."""

import ast
import importlib
import inspect
import re
import subprocess
import sys
import textwrap

import click
import pytest
from click.testing import CliRunner

from tests.support.paths import ROOT


def entry_points():
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return re.findall(r'^([\w-]+)\s*=\s*"([\w.]+):(\w+)"', section, re.M)


def root_command(module_name, function):
    """The click command behind an entry point: the function itself when it is one (a
    click group), else the module's ``cli``, which the plain ``main`` function runs."""
    module = importlib.import_module(module_name)
    entry = getattr(module, function)
    command = entry if isinstance(entry, click.Command) else getattr(module, "cli", None)
    assert isinstance(command, click.Command), f"{module_name}: no click command to run"
    return entry, command


def command_tree(command, path):
    """(path, command) for the command and, recursively, every subcommand of its groups."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1])
        for name in command.list_commands(ctx):
            yield from command_tree(command.get_command(ctx, name), path + (name,))


def dispatched_subcommands(function):
    """The words ``X`` a plain ``main`` hands to another command on ``sys.argv[1] == "X"``
    (``c3d-extract merge``, ``c3d-extract export``)."""
    if isinstance(function, click.Command):
        return []
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    words = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Compare) and len(node.ops) == 1
                and isinstance(node.ops[0], ast.Eq) and ast.unparse(node.left) == "sys.argv[1]"
                and isinstance(node.comparators[0], ast.Constant)):
            words.append(node.comparators[0].value)
    return words


def help_text_after_usage(output):
    """The first paragraph after the Usage line: the command's help text, if it has one."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Usage:")), None)
    if start is None:
        return ""
    for line in lines[start + 1:]:
        text = line.strip()
        if text in ("Options:", "Commands:"):
            return ""
        if text:
            return text
    return ""


def help_problems(path, exit_code, output, exception=None):
    """What is wrong with the --help answer of the command ``path`` (a tuple of words)."""
    name = " ".join(path)
    problems = []
    if exit_code != 0:
        problems.append(f"{name} --help: exit code {exit_code}"
                        + (f" ({exception!r})" if exception is not None else ""))
    if not re.search(rf"^Usage: {re.escape(name)}(\s|$)", output, re.M):
        problems.append(f"{name} --help: no 'Usage: {name} ...' line in {output[:200]!r}")
    elif not help_text_after_usage(output):
        problems.append(f"{name} --help: no help text after the Usage line")
    return problems


def tree_help_problems(command, prog_name):
    """--help of every command under ``command``, run by click's CliRunner."""
    problems = []
    seen = []
    for path, sub in command_tree(command, (prog_name,)):
        seen.append(" ".join(path))
        if not (sub.help or "").strip():
            problems.append(f"{' '.join(path)}: no help text (docstring)")
        result = CliRunner().invoke(command, list(path[1:]) + ["--help"], prog_name=prog_name)
        problems += help_problems(path, result.exit_code, result.output, result.exception)
    return seen, problems


def dispatched_help_problems(function, prog_name, monkeypatch, capsys):
    """--help of every subcommand a plain ``main`` dispatches on its first argument, through
    that ``main``."""
    problems = []
    seen = []
    for word in dispatched_subcommands(function):
        path = (prog_name, word)
        seen.append(" ".join(path))
        monkeypatch.setattr(sys, "argv", [prog_name, word, "--help"])
        capsys.readouterr()
        try:
            function()
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
        problems += help_problems(path, code, capsys.readouterr().out)
    return seen, problems


def test_the_documented_commands_are_declared():
    names = {name for name, _, _ in entry_points()}
    assert {"c3d-extract", "c3d-svm", "c3d-pca"} <= names


@pytest.mark.parametrize("name, module, function", entry_points())
def test_help(name, module, function):
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = [{name!r}, '--help']; "
                             f"from {module} import {function}; {function}()"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("name, module, function", entry_points())
def test_every_subcommand_answers_help(name, module, function, monkeypatch, capsys):
    """Each command and subcommand, at any depth, exits 0 on --help with a Usage line naming
    its full path and a non-empty help text."""
    entry, command = root_command(module, function)
    seen, problems = tree_help_problems(command, name)
    _, more_problems = dispatched_help_problems(entry, name, monkeypatch, capsys)
    assert seen and not problems + more_problems, "\n".join(problems + more_problems)


def test_the_walk_reaches_the_documented_subcommands(monkeypatch, capsys):
    """The walk is not vacuous: it reaches nested groups (c3d-weights cache clear) and the
    words c3d-extract hands to other commands (merge, export)."""
    seen = set()
    for name, module, function in entry_points():
        entry, command = root_command(module, function)
        seen.update(tree_help_problems(command, name)[0])
        seen.update(dispatched_help_problems(entry, name, monkeypatch, capsys)[0])
    expected = {"c3d-extract", "c3d-extract merge", "c3d-extract export", "c3d-svm train",
                "c3d-svm pairs", "c3d-pca compact", "c3d-pca tsne", "c3d-weights cache",
                "c3d-weights cache clear", "c3d-export", "c3d-train", "c3d-predict"}
    assert expected <= seen, sorted(expected - seen)


def test_a_broken_subcommand_is_reported():
    """The check fails on a nested subcommand whose help crashes and on one without help."""
    class CrashingHelp(click.Command):
        def format_help(self, ctx, formatter):
            raise RuntimeError("help crashed")

    @click.group()
    def top():
        """A group."""

    @top.group()
    def inner():
        """An inner group."""

    @inner.command(cls=CrashingHelp)
    def crash():
        """Crashes on --help."""

    @inner.command()
    def silent():
        pass

    seen, problems = tree_help_problems(top, "tool")
    assert seen == ["tool", "tool inner", "tool inner crash", "tool inner silent"]
    text = "\n".join(problems)
    assert "tool inner crash --help: exit code 1 (RuntimeError('help crashed'))" in text
    assert "tool inner silent: no help text" in text
    assert "tool inner silent --help: no help text after the Usage line" in text
    assert "tool inner --help" not in text


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "c3d_extract", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Extract C3D video descriptors" in result.stdout
