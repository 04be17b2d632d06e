"""``c3d-weights`` through click's CliRunner: exit codes, messages, written files."""

import hashlib
import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

from c3d_extract.cli.weights import cli
from c3d_extract.weights import hub
from tests.support.http_server import served_folder, use_weights_cache
from tests.support.weights_support import NUM_CLASSES, numpy_params, pickle_state_dict


@pytest.fixture(scope="module")
def pickle_file(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "c3d.pickle"
    torch.save(pickle_state_dict(numpy_params(source)), str(path))
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    return use_weights_cache(tmp_path / "cache", monkeypatch)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="c3d-weights")


@pytest.mark.parametrize("command", [[], ["convert"], ["info"], ["compare"], ["fetch"],
                                     ["list"]])
def test_help(command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Usage: c3d-weights" in result.output
    assert "Example" in result.output


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "c3d_extract.cli.weights", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "convert" in result.stdout and "fetch" in result.stdout


def test_convert_writes_metadata_and_the_same_tensors(source, pickle_file, tmp_path):
    labels = tmp_path / "labels.txt"
    names = [f"sport {n}" for n in range(NUM_CLASSES)]
    labels.write_text("\n".join(names) + "\n")
    out = tmp_path / "out" / "c3d.safetensors"
    result = run("convert", pickle_file, "-o", out, "--labels", labels)
    assert result.exit_code == 0, result.output
    assert "c3d-pytorch-pickle" in result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["c3d.safetensors"]  # no temp left
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["source_format"] == "c3d-pytorch-pickle"
    assert metadata["source_sha256"] == hashlib.sha256(pickle_file.read_bytes()).hexdigest()
    preprocessing = json.loads(metadata["preprocessing"])
    assert preprocessing["channel_order"] == "BGR" and preprocessing["crop"] == 112
    assert preprocessing["resize"] == [128, 171]
    assert preprocessing["mean"] == [90.25, 97.66, 101.41]
    assert metadata["num_classes"] == str(NUM_CLASSES)
    assert json.loads(metadata["class_names"]) == names
    assert any("pool5" in note for note in json.loads(metadata["conversion_notes"]))
    assert metadata["source_kernel_order"] == "kd-reversed"
    assert metadata["kernel_order_assumed"] == "true"
    assert any("ASSUMED" in note for note in json.loads(metadata["conversion_notes"]))
    tensors = load_file(str(out))
    expected = source.state_dict()
    assert set(tensors) == set(expected)
    for key, value in expected.items():
        assert torch.equal(tensors[key], value), key


def test_info(source, pickle_file, tmp_path):
    out = tmp_path / "c3d.safetensors"
    assert run("convert", pickle_file, "-o", out).exit_code == 0
    result = run("info", out)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "format: c3d-pytorch-pickle" in lines
    assert any(line.startswith("kernel order: kd-reversed (ASSUMED, not verified")
               for line in lines)
    assert f"sha256: {hashlib.sha256(out.read_bytes()).hexdigest()}" in lines
    count = sum(p.numel() for p in source.parameters())
    assert f"parameters: {count:,}" in lines
    assert f"classes: {NUM_CLASSES}" in lines
    assert "extractable layers: pool5, fc6, fc7, fc8, prob" in lines
    assert any(line.split() == ["conv1a.weight", "64", "x", "3", "x", "3", "x", "3", "x", "3",
                                "float32", "0"] for line in lines)
    assert any(line.split() == ["fc6.weight", "4096", "x", "8192", "float32", "0"]
               for line in lines)
    # The source file itself is described the same way, with its own checksum.
    result = run("info", pickle_file)
    assert result.exit_code == 0
    assert f"sha256: {hashlib.sha256(pickle_file.read_bytes()).hexdigest()}" in result.output


def test_info_and_convert_with_a_declared_kernel_order(pickle_file, tmp_path):
    result = run("info", pickle_file, "--kernel-order", "khkw-reversed")
    assert result.exit_code == 0, result.output
    assert "kernel order: khkw-reversed (read as: Caffe's kernels reversed in kH and kW" \
        in result.output
    out = tmp_path / "declared.safetensors"
    assert run("convert", pickle_file, "-o", out, "--kernel-order", "khkw-reversed").exit_code == 0
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["source_kernel_order"] == "khkw-reversed"
    assert metadata["kernel_order_assumed"] == "false"


def test_errors_and_exit_codes(pickle_file, tmp_path):
    missing = run("convert", tmp_path / "nope.pth", "-o", tmp_path / "x.safetensors")
    assert missing.exit_code == 2 and "no weights file" in missing.output
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not weights at all")
    result = run("convert", garbage, "-o", tmp_path / "x.safetensors")
    assert result.exit_code == 1 and "cannot tell the format" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.safetensors").exists()
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    result = run("convert", pickle_file, "-o", tmp_path / "x.safetensors", "--labels", labels)
    assert result.exit_code == 1 and "3 class names" in result.output
    assert not (tmp_path / "x.safetensors").exists()
    result = run("info", tmp_path / "nope.safetensors")
    assert result.exit_code == 1 and "no weights file" in result.output
    result = run("convert", pickle_file, "-o", tmp_path / "x.safetensors", "--kernel-order", "x")
    assert result.exit_code == 2


def test_fetch_and_list(cache, tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    filename = hub.REGISTRY["sports1m-caffe"].filename
    (folder / filename).write_bytes(bytes(range(256)) * 2000)
    with served_folder(folder) as url:
        result = CliRunner(env={hub.REGISTRY_URL_ENV: url}).invoke(
            cli, ["fetch", "sports1m-caffe"], prog_name="c3d-weights")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(cache / filename)
    assert "sports1m-caffe" in result.stderr  # the progress bar, on stderr only
    listing = run("list")
    assert listing.exit_code == 0
    row = next(line for line in listing.output.splitlines() if line.startswith("sports1m-caffe"))
    digest = hashlib.sha256((cache / filename).read_bytes()).hexdigest()
    assert "yes" in row.split() and digest[:16] in row


def test_fetch_unreachable(tmp_path):
    result = CliRunner(env={hub.REGISTRY_URL_ENV: "http://127.0.0.1:9"}).invoke(
        cli, ["fetch", "sports1m-pytorch", "-q"], prog_name="c3d-weights")
    assert result.exit_code == 1
    assert "http://127.0.0.1:9/c3d.pickle" in result.output
    assert "c3d-weights convert" in result.output and "Traceback" not in result.output
    assert run("fetch", "no-such-name").exit_code == 2


def test_extract_and_predict_read_a_pickle_with_the_stated_kernel_order(source, pickle_file,
                                                                        tmp_path):
    """c3d-extract on real decoded video: the pickle read as kD-reversed by default gives the
    source network's descriptor; the order is recorded, and a rerun declaring another order
    is refused instead of mixing features."""
    import h5py

    from c3d_extract.cli.extract import cli as extract_cli
    from c3d_extract.cli.predict import cli as predict_cli
    from c3d_extract.store.read import read_features
    from tests.support.weights_support import MIN_FC6_COSINE, decoded_clip, fc6_cosine, write_video

    video = tmp_path / "clip.mp4"
    write_video(str(video))
    out = tmp_path / "features.h5"
    args = [str(video), "-o", str(out), "--weights", str(pickle_file), "--decoder", "pyav",
            "--device", "cpu", "--precision", "fp32", "-q"]
    result = CliRunner().invoke(extract_cli, args, prog_name="c3d-extract")
    assert result.exit_code == 0, result.output
    assert "kernel order ASSUMED" in result.stderr
    with h5py.File(out) as handle:
        assert handle.attrs["weights_kernel_order"] == "kd-reversed"
    with torch.no_grad():
        expected = source.extract(decoded_clip(str(video)), ["fc6"])["fc6"][0]
    descriptor = torch.from_numpy(read_features(str(out))[1][0])
    assert fc6_cosine(descriptor, expected / expected.norm()) >= MIN_FC6_COSINE
    rerun = CliRunner().invoke(extract_cli, args + ["--kernel-order", "khkw-reversed"],
                               prog_name="c3d-extract")
    assert rerun.exit_code != 0 and "weights_kernel_order" in rerun.output
    assert "Traceback" not in rerun.output
    predicted = CliRunner().invoke(predict_cli, [str(video), "--weights", str(pickle_file),
                                                 "--kernel-order", "kd-reversed", "--decoder",
                                                 "pyav", "--device", "cpu", "-k", "2"],
                                   prog_name="c3d-predict")
    assert predicted.exit_code == 0, predicted.output
    assert "ASSUMED" not in predicted.stderr  # declared, not assumed


def test_info_shows_nan_and_mismatched_names_and_convert_refuses_nan(source, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["fc8.bias"][1] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path), metadata={"class_names": json.dumps(["only one"])})
    result = run("info", path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"classes: {NUM_CLASSES} (1 names embedded, which do not match)" in lines
    assert any(line.split()[:4] == ["fc8.bias", str(NUM_CLASSES), "float32", "1"]
               for line in lines)
    converted = run("convert", path, "-o", tmp_path / "out.safetensors")
    assert converted.exit_code == 1 and "fc8.bias holds 1 NaN" in converted.output
    assert "Traceback" not in converted.output
    assert not (tmp_path / "out.safetensors").exists()
