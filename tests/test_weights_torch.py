"""PyTorch files: DavideA's c3d.pickle, mmaction2 checkpoints, the project's own state dicts,
and files that must be refused (code payloads, truncation, non-tensors)."""

import os
import pickle

import pytest
import torch

from c3d_extract.errors import WeightsError
from c3d_extract.models.c3d import build_c3d
from c3d_extract.weights.formats import MMACTION2_NOTE, detect_format
from c3d_extract.weights.loading import load_network, load_state_dict, resolve_weights
from tests.weights_support import (
    assert_same_fc6, fc6_of, mmaction2_checkpoint, numpy_params, pickle_state_dict,
)


@pytest.fixture(scope="module")
def params(source):
    return numpy_params(source)


def test_davidea_pickle(params, clip, reference_fc6, tmp_path):
    path = str(tmp_path / "c3d.pickle")
    torch.save(pickle_state_dict(params), path)
    assert detect_format(path) == "torch"
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "c3d-pytorch-pickle"
    assert any("pool5" in note for note in weights.conversion_notes)
    assert_same_fc6(fc6_of(weights.state_dict, clip), reference_fc6)


def test_davidea_pickle_in_the_legacy_torch_format(params, tmp_path):
    path = str(tmp_path / "c3d_legacy.pickle")
    small = {k: v for k, v in pickle_state_dict(params).items()}
    torch.save(small, path, _use_new_zipfile_serialization=False)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "c3d-pytorch-pickle"
    assert torch.equal(weights.state_dict["conv1a.weight"],
                       torch.from_numpy(params["conv1a.weight"]))


def test_mmaction2_checkpoint_has_no_fc8(params, clip, reference_fc6, tmp_path):
    path = str(tmp_path / "c3d_sports1m_pretrain_20201016-dcc47ddc.pth")
    checkpoint = mmaction2_checkpoint(params)
    checkpoint["state_dict"]["cls_head.fc_cls.weight"] = torch.zeros(101, 4096)
    torch.save(checkpoint, path)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "mmaction2"
    assert weights.num_classes == 0 and "fc8.weight" not in weights.state_dict
    assert MMACTION2_NOTE in weights.conversion_notes
    assert any("cls_head.fc_cls.weight" in note for note in weights.conversion_notes)
    model = load_network(weights)
    assert model.available_layers == ("pool5", "fc6", "fc7")
    with pytest.raises(ValueError, match="prob"):
        model.extract(clip, ["prob"])
    assert_same_fc6(fc6_of(weights.state_dict, clip), reference_fc6)


def test_own_state_dict_round_trip(source, clip, reference_fc6, tmp_path):
    path = str(tmp_path / "ours.pt")
    torch.save({"state_dict": source.state_dict()}, path)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "pytorch"
    assert_same_fc6(fc6_of(weights.state_dict, clip), reference_fc6)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_with_a_code_payload_is_refused_and_never_runs(writer, tmp_path, monkeypatch):
    monkeypatch.setenv("C3D_EXTRACT_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    evil = {"conv1.weight": torch.zeros(1), "hook": _Payload(marker)}
    if writer == "torch.save":
        torch.save(evil, str(path))
    else:
        with open(path, "wb") as handle:
            pickle.dump(evil, handle, protocol=2)
    with pytest.raises(WeightsError, match="refusing to load"):
        resolve_weights(str(path))
    assert not marker.exists()
    assert not (tmp_path / "cache" / "converted").exists()


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
