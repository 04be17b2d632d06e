import atexit
import os
import shutil
import tempfile

import pytest

# Fixtures any test may ask for: the weights cache in a test folder and a local HTTP mirror.
pytest_plugins = ("tests.support.http_server",)

from tests.support.paths import ROOT

# Subprocesses started by the tests (the CLI, torchrun) import this checkout, whatever
# their working directory, also when the package is not installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
# Every test, and the CLI it starts, computes in fp32 with torch on any CPU, so that the
# tests' tolerances hold everywhere; tests of bf16 and OpenVINO ask for them by name, and
# those of what `auto` chooses clear these variables.
os.environ["C3D_EXTRACT_CPU_PRECISION"] = "fp32"
os.environ["C3D_EXTRACT_BACKEND"] = "torch"
# OpenVINO conversions made by the tests go to a folder of the test run, not into the user's
# cache (where they would take gigabytes and outlive the run).
if "C3D_EXTRACT_OPENVINO_CACHE" not in os.environ:
    _OPENVINO_CACHE = tempfile.mkdtemp(prefix="c3d-test-openvino-")
    os.environ["C3D_EXTRACT_OPENVINO_CACHE"] = _OPENVINO_CACHE
    atexit.register(shutil.rmtree, _OPENVINO_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("-m") or ""
    skip_soak = pytest.mark.skip(reason="soak test: run with `make soak`")
    for item in items:
        if "soak" in item.keywords and "soak" not in markexpr:
            item.add_marker(skip_soak)


@pytest.fixture(scope="session")
def random_weights():
    from c3d_extract.weights.loading import random_weights as make

    return make()


@pytest.fixture(scope="session")
def random_network(random_weights):
    from c3d_extract.weights.loading import load_network

    return load_network(random_weights)


# The weights tests share one seeded source network, one real decoded clip and its fc6.
@pytest.fixture(scope="session")
def source():
    from tests.support.weights_support import shared_source

    return shared_source()


@pytest.fixture(scope="session")
def clip():
    from tests.support.weights_support import shared_clip

    return shared_clip()


@pytest.fixture(scope="session")
def reference_fc6():
    from tests.support.weights_support import shared_reference_fc6

    return shared_reference_fc6()
