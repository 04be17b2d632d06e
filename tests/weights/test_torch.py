"""PyTorch files: DavideA's c3d.pickle, mmaction2 pretrain files and checkpoints (mmengine's
included), the project's own state dicts,
and files that must be refused (code payloads, truncation, non-tensors)."""

import collections
import importlib
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from c3d_extract.cli.weights import cli as weights_cli
from c3d_extract.errors import UsageError, WeightsError
from c3d_extract.models.c3d import build_c3d
from c3d_extract.weights.formats import MMACTION2_NOTE, detect_format
from c3d_extract.weights.hub import resolve_weights
from c3d_extract.weights.loading import load_network, load_state_dict
from tests.support.weights_support import (assert_right_conversion, assert_same_fc6, fc6_of,
                                           mmaction2_checkpoint, numpy_params, pickle_state_dict,
                                           recognizer3d_checkpoint)


@pytest.fixture(scope="module")
def params(source):
    return numpy_params(source)


def _equals_source(weights, source):
    for key, value in source.state_dict().items():
        if key in weights.state_dict:
            assert torch.equal(weights.state_dict[key], value), key


def test_davidea_pickle(params, source, clip, reference_fc6, tmp_path):
    path = str(tmp_path / "c3d.pickle")
    torch.save(pickle_state_dict(params), path)
    assert detect_format(path) == "torch"
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "c3d-pytorch-pickle"
    assert weights.kernel_order == "kd-reversed" and weights.kernel_order_assumed
    assert "ASSUMED" in weights.conversion_notes[0]
    assert any("pool5" in note for note in weights.conversion_notes)
    _equals_source(weights, source)
    assert_right_conversion(weights.state_dict, clip, reference_fc6)


def test_davidea_pickle_in_the_legacy_torch_format(params, source, tmp_path):
    path = str(tmp_path / "c3d_legacy.pickle")
    torch.save(pickle_state_dict(params), path, _use_new_zipfile_serialization=False)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "c3d-pytorch-pickle"
    _equals_source(weights, source)


def test_a_cached_conversion_without_a_recorded_kernel_order_is_redone(params, source,
                                                                       tmp_path, monkeypatch):
    """Conversions cached before kernel orders were recorded read c3d.pickle as Caffe order:
    they are converted again, not reused."""
    from safetensors.torch import save_file

    from c3d_extract.weights.loading import converted_cache_path, file_sha256

    monkeypatch.setenv("C3D_EXTRACT_CACHE", str(tmp_path / "cache"))
    path = str(tmp_path / "c3d.pickle")
    torch.save(pickle_state_dict(params), path)
    stale = {k.replace("conv1.", "conv1a.").replace("conv2.", "conv2a."): v.contiguous()
             for k, v in pickle_state_dict(params).items()}
    cached = converted_cache_path(file_sha256(path))
    cached.parent.mkdir(parents=True)
    save_file(stale, str(cached), metadata={"source_format": "c3d-pytorch-pickle",
                                            "source_sha256": file_sha256(path)})
    weights = resolve_weights(path)
    assert weights.kernel_order == "kd-reversed"
    _equals_source(weights, source)


def test_davidea_keys_decide_the_default_order_and_the_option_overrides_it(params, source,
                                                                           tmp_path):
    """Any file with DavideA's keys is read as kD-reversed, whatever its name; a declared
    order replaces the assumption."""
    path = str(tmp_path / "weights.pth")
    torch.save(pickle_state_dict(params, reversed_axes=(3, 4)), path)
    default = load_state_dict(path, use_cache=False)
    assert default.kernel_order == "kd-reversed"
    assert not torch.equal(default.state_dict["conv2a.weight"], source.conv2a.weight.detach())
    declared = load_state_dict(path, kernel_order="khkw-reversed", use_cache=False)
    assert declared.kernel_order == "khkw-reversed" and not declared.kernel_order_assumed
    assert not any("ASSUMED" in note for note in declared.conversion_notes)
    _equals_source(declared, source)
    with pytest.raises(UsageError, match="unknown kernel order"):
        load_state_dict(path, kernel_order="upside-down", use_cache=False)


@pytest.mark.parametrize("wrapped", [True, False])
def test_mmaction2_pretrain_file(params, source, clip, reference_fc6, tmp_path, wrapped):
    """The published pretrain file: unprefixed backbone keys, no fc8, under state_dict (or
    bare)."""
    path = str(tmp_path / "c3d_sports1m_pretrain_20201016-dcc47ddc.pth")
    checkpoint = mmaction2_checkpoint(params)
    torch.save(checkpoint if wrapped else checkpoint["state_dict"], path)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "mmaction2" and weights.kernel_order == "caffe"
    assert weights.num_classes == 0 and "fc8.weight" not in weights.state_dict
    assert MMACTION2_NOTE in weights.conversion_notes
    _equals_source(weights, source)
    if wrapped:
        assert_right_conversion(weights.state_dict, clip, reference_fc6)


def test_mmaction2_recognizer3d_checkpoint(params, source, clip, tmp_path):
    path = str(tmp_path / "c3d_ucf101.pth")
    torch.save(recognizer3d_checkpoint(params), path)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "mmaction2" and weights.num_classes == 0
    assert any("cls_head.fc_cls.weight" in note for note in weights.conversion_notes)
    _equals_source(weights, source)
    model = load_network(weights)
    assert model.available_layers == ("pool5", "fc6", "fc7")
    with pytest.raises(ValueError, match="prob"):
        model.extract(clip, ["prob"])


def test_mmaction2_backbone_with_foreign_layers_is_refused(params, tmp_path):
    path = str(tmp_path / "c3d_bn.pth")
    checkpoint = recognizer3d_checkpoint(params)
    checkpoint["state_dict"]["backbone.conv1a.bn.weight"] = torch.ones(64)
    torch.save(checkpoint, path)
    with pytest.raises(WeightsError, match="backbone.conv1a.bn.weight"):
        load_state_dict(path, use_cache=False)


HISTORY_BUFFER_MODULE = """
import numpy as np


class HistoryBuffer:
    \"\"\"Like mmengine.logging.HistoryBuffer: logged scalars, pickled with its __dict__.\"\"\"

    def __init__(self, log_history=(), count_history=(), max_length=1000000):
        self._log_history = np.asarray(log_history)
        self._count_history = np.asarray(count_history)
        self.max_length = max_length

    def __setstate__(self, state):
        open(MARKER, "w").close()  # would show that the real class's code ran on load
        self.__dict__.update(state)
"""


def _runner_checkpoint(params, module):
    """What mmengine's Runner saves: meta, the model's state dict, message_hub with
    HistoryBuffers, optimizer state, parameter schedulers."""
    checkpoint = recognizer3d_checkpoint(params)
    checkpoint["meta"] = {"epoch": 3, "iter": 300, "seed": np.int64(42),
                          "mmengine_version": "0.10.4", "dataset_meta": {"classes": ("a", "b")}}
    checkpoint["message_hub"] = {
        "log_scalars": {"train/loss": module.HistoryBuffer([0.5, 0.4], [1, 1]),
                        "train/lr": module.HistoryBuffer(np.array([1e-3]), np.array([1]))},
        "runtime_info": {"epoch": 3, "iter": 300, "best_score": np.float32(0.83)},
        "resumed_keys": {"epoch": True, "iter": True}}
    checkpoint["optimizer"] = {"state": {0: {"momentum_buffer": torch.ones(4)}},
                               "param_groups": [{"lr": 0.001, "momentum": 0.9, "params": [0]}]}
    checkpoint["param_schedulers"] = [{"base_lrs": [0.001], "last_epoch": 3, "milestones":
                                       {20: 1, 40: 1}}]
    return checkpoint


@pytest.mark.parametrize("module_left_loaded", [False, True])
def test_mmengine_runner_checkpoint_keeps_only_the_tensors(params, source, tmp_path,
                                                           monkeypatch, module_left_loaded):
    """torch.load(weights_only=True) refuses it; it is read without running any of its
    classes, whether their module is gone or still loaded."""
    name = f"fake_mmengine_logging_{int(module_left_loaded)}"
    folder = tmp_path / "modules"
    folder.mkdir()
    marker = tmp_path / "setstate-ran"
    (folder / f"{name}.py").write_text(HISTORY_BUFFER_MODULE.replace("MARKER", repr(str(marker))))
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module(name)
    path = str(tmp_path / "epoch_3.pth")
    torch.save(_runner_checkpoint(params, module), path)
    if not module_left_loaded:
        del sys.modules[name]
        (folder / f"{name}.py").unlink()
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)
    else:
        monkeypatch.delitem(sys.modules, name)
        sys.modules[name] = module
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "mmaction2"
    _equals_source(weights, source)
    assert not marker.exists()


def test_own_state_dict_round_trip(source, clip, reference_fc6, tmp_path):
    path = str(tmp_path / "ours.pt")
    torch.save({"state_dict": source.state_dict()}, path)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "pytorch"
    assert_same_fc6(fc6_of(weights.state_dict, clip), reference_fc6)


class _Payload:
    """Pickles as a call of ``function(*args)``: what a malicious checkpoint carries."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


def _payloads(marker):
    return {
        "os.system": (_Payload(os.system, f"touch {marker}"), "posix.system"),
        "builtins.eval": (_Payload(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        "builtins.exec": (_Payload(exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
        "subprocess.call": (_Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
        "subprocess.Popen": (_Payload(subprocess.Popen, ["touch", str(marker)]),
                             "subprocess.Popen"),
    }


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "builtins.exec",
                                     "subprocess.call", "subprocess.Popen"])
@pytest.mark.parametrize("where", ["top", "message_hub"])
def test_zip_checkpoint_with_a_code_payload_is_refused_and_never_runs(payload, where, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("C3D_EXTRACT_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    evil, named = _payloads(marker)[payload]
    path = tmp_path / "evil.pth"
    tensors = {"conv1.weight": torch.zeros(1)}
    checkpoint = ({"state_dict": tensors, "message_hub": {"log_scalars": {"loss": evil}}}
                  if where == "message_hub" else {**tensors, "hook": evil})
    torch.save(checkpoint, str(path))
    with pytest.raises(WeightsError, match=f"refusing to load .*{re.escape(named)}"):
        resolve_weights(str(path))
    assert not marker.exists()
    assert not (tmp_path / "cache" / "converted").exists()
    result = CliRunner().invoke(weights_cli, ["info", str(path)], prog_name="c3d-weights")
    assert result.exit_code == 1 and named in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_plain_pickle_with_a_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": torch.zeros(1),
                     "hook": _Payload(os.system, f"touch {marker}")}, handle, protocol=2)
    with pytest.raises(WeightsError, match="refusing to load"):
        load_state_dict(str(path), use_cache=False)
    assert not marker.exists()


def test_truncated_runner_checkpoint_is_refused(params, tmp_path):
    path = tmp_path / "cut.pth"
    checkpoint = {"state_dict": {"conv1a.weight": torch.zeros(64, 3, 3, 3, 3)},
                  "message_hub": {"loss": _Payload(collections.Counter, [1])}}
    torch.save(checkpoint, str(path))
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 30):
        path.write_bytes(data[:size])
        with pytest.raises(WeightsError, match="truncated or damaged|refusing"):
            load_state_dict(str(path), use_cache=False)


def test_truncated_torch_file_is_refused(tmp_path):
    path = tmp_path / "cut.pth"
    model = build_c3d(num_classes=3, seed=0)
    torch.save({"conv1a.weight": model.conv1a.weight.detach(),
                "fc7.weight": model.fc7.weight.detach()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or damaged"):
        load_state_dict(str(path), use_cache=False)


def test_non_tensor_values_and_foreign_keys_are_refused(tmp_path):
    path = str(tmp_path / "odd.pth")
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(WeightsError, match="'epoch' is a int"):
        load_state_dict(path, use_cache=False)
    torch.save({"conv1.weight": torch.zeros(1), "layer9.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="layer9.weight"):
        load_state_dict(path, use_cache=False)
    torch.save({"resnet.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="does not hold a C3D state dict"):
        load_state_dict(path, use_cache=False)


def test_unknown_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(WeightsError, match="cannot tell the format"):
        load_state_dict(str(path), use_cache=False)
    # A '{' at byte 8 alone does not make safetensors: the header length must fit the file.
    path.write_bytes((10**9).to_bytes(8, "little") + b"{}" + bytes(20))
    with pytest.raises(WeightsError, match="cannot tell the format"):
        load_state_dict(str(path), use_cache=False)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        load_state_dict(str(empty), use_cache=False)


def test_safetensors_with_an_unknown_kernel_order_in_its_metadata(tmp_path):
    from safetensors.torch import save_file

    path = str(tmp_path / "odd.safetensors")
    save_file({"conv1a.weight": torch.zeros(1)}, path, metadata={"source_kernel_order": "sideways"})
    with pytest.raises(WeightsError, match="unreadable metadata.*sideways"):
        load_state_dict(path, use_cache=False)
