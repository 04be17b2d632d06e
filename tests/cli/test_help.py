"""Every entry point declared in pyproject.toml answers --help, and python -m works."""

import re
import subprocess
import sys

import pytest

from tests.support.paths import ROOT


def entry_points():
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return re.findall(r'^([\w-]+)\s*=\s*"([\w.]+):(\w+)"', section, re.M)


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


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "c3d_extract", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Extract C3D video descriptors" in result.stdout
