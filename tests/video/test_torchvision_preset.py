"""torchvision's preset against torchvision's own numbers (tests/data golden file, written by
scripts/make_r2plus1d_golden.py under torchvision 0.29.1): crop rule, resize arithmetic,
normalisation and the pooled features of a clip of real decoded frames; Caffe's preset as it
was; the Kinetics-400 class names."""

import hashlib
import json

import cv2
import numpy as np
import pytest
import torch

from c3d_extract.data import kinetics400_classes
from c3d_extract.models.r2plus1d import build_r2plus1d_18
from c3d_extract.video.preprocess import (KINETICS400_TORCHVISION, SPORTS1M, Preprocessing,
                                          crop_offsets, prepare_frame, resize_torchvision)
from tests.support.r2plus1d_reference import GOLDEN, bilinear_reference, synthetic_state_dict


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


def torchvision_crops(golden, name):
    """torchvision's resized-and-cropped frames: the reference plus the stored difference."""
    frames = golden[f"frames_{name}"]
    reference = bilinear_reference(frames, 128, 171)[:, 8:120, 30:142]
    return (reference.astype(np.int16) + golden[f"tv_crops_{name}"]).astype(np.uint8)


def test_crop_offsets_follow_torchvisions_center_crop(golden):
    for (height, width, crop), expected in zip(golden["crop_cases"], golden["crop_offsets"]):
        assert crop_offsets(int(height), int(width), int(crop), "round") == tuple(expected)
    assert KINETICS400_TORCHVISION.offsets == (8, 30)
    assert SPORTS1M.offsets == (8, 29)  # Caffe's floor, as before
    assert crop_offsets(129, 169, 112, "round") == (8, 28)  # 57 / 2 = 28.5: half to even
    assert crop_offsets(129, 169, 112) == (8, 28)
    with pytest.raises(ValueError, match="crop rule"):
        crop_offsets(128, 171, 112, "ceil")


def test_resize_is_torchvisions_to_the_last_level(golden):
    frames = golden["frames_textured"]  # 64 x 48, resized up
    expected = (bilinear_reference(frames, 128, 171).astype(np.int16)
                + golden["tv_resized_textured"]).astype(np.uint8)
    ours = np.stack([resize_torchvision(f, 128, 171) for f in frames])
    assert np.array_equal(ours, expected)
    assert np.array_equal(resize_torchvision(frames[0], 48, 64), frames[0])  # same size


@pytest.mark.parametrize("name", ["carphone", "textured"])
def test_prepared_frames_equal_torchvisions_resize_and_crop(golden, name):
    ours = np.stack([prepare_frame(f, KINETICS400_TORCHVISION) for f in golden[f"frames_{name}"]])
    assert np.array_equal(ours, torchvision_crops(golden, name))
    # What OpenCV's resize and Caffe's crop would have given differs (the point of the preset).
    caffe_like = np.stack([cv2.resize(f, (171, 128), interpolation=cv2.INTER_LINEAR)[8:120, 29:141]
                           for f in golden[f"frames_{name}"]])
    assert not np.array_equal(ours, caffe_like)


def test_normalised_clip_is_torchvisions_bit_for_bit(golden):
    crops = torch.from_numpy(np.stack([prepare_frame(f, KINETICS400_TORCHVISION)
                                       for f in golden["frames_carphone"]]))
    x = KINETICS400_TORCHVISION.normalise(crops[None])[0]  # 3 x T x 112 x 112
    assert x.dtype == torch.float32
    sampled = x.numpy().ravel()[golden["clip_input_index"]]
    # torchvision divides by 255, subtracts and divides by float32 constants: the same
    # float32 operations in the same order give the same bits.
    assert np.array_equal(sampled, golden["clip_input_values"])


def test_pooled_features_of_a_real_clip_equal_torchvisions(golden):
    crops = torch.from_numpy(np.stack([prepare_frame(f, KINETICS400_TORCHVISION)
                                       for f in golden["frames_carphone"]]))
    model = build_r2plus1d_18(num_classes=400)
    model.load_state_dict(synthetic_state_dict(), strict=True)
    with torch.inference_mode():
        out = model.eval().extract(KINETICS400_TORCHVISION.normalise(crops[None]),
                                   ["avgpool", "logits"])
    # Inputs are bit-identical (above), so only the network's float32 sums may differ (another
    # torch build, other kernels): about sqrt(K) * eps per layer (K <= 1152 * 3 inputs per
    # output) over the 18 layers of the deepest path, relative to the outputs' magnitude.
    eps = np.finfo(np.float32).eps
    bound = 18 * np.sqrt(1152 * 3) * eps * 8
    for name in ("avgpool", "logits"):
        expected = golden[f"clip_{name}"]
        assert np.abs(out[name].numpy() - expected).max() <= bound * np.abs(expected).max()
    a = out["avgpool"].double().numpy().ravel()
    b = golden["clip_avgpool"].astype(np.float64).ravel()
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.99999


def test_kinetics400_names_are_torchvisions():
    names = kinetics400_classes()
    assert len(names) == 400 and names[239] == "playing organ" and names[0] == "abseiling"
    data = "".join(name + "\n" for name in names).encode("utf-8")
    assert hashlib.sha256(data).hexdigest() == str(np.load(GOLDEN)["kinetics400_sha256"])


def test_caffe_preset_is_unchanged():
    # The description files carry and compare on resume stays what it was.
    assert json.loads(SPORTS1M.to_json()) == {
        "channel_order": "BGR", "crop": 112, "interpolation": "bilinear (OpenCV INTER_LINEAR)",
        "mean": [90.25, 97.66, 101.41], "mean_volume_sha256": None, "resize": [128, 171],
        "scale": 1.0}
    frame = np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    expected = cv2.resize(frame, (171, 128), interpolation=cv2.INTER_LINEAR)[8:120, 29:141, ::-1]
    assert np.array_equal(prepare_frame(frame, SPORTS1M), expected)
    assert SPORTS1M.divisor is None


def test_presets_round_trip_and_old_descriptions_take_the_family():
    assert Preprocessing.from_dict(KINETICS400_TORCHVISION.to_dict()) == KINETICS400_TORCHVISION
    assert Preprocessing.from_dict(SPORTS1M.to_dict()) == SPORTS1M
    old = {k: v for k, v in KINETICS400_TORCHVISION.to_dict().items()
           if k not in ("crop_rule", "resize_method")}  # as written before they were recorded
    assert Preprocessing.from_dict(old).crop_rule == "floor"
    assert Preprocessing.from_dict(old, family=KINETICS400_TORCHVISION) == KINETICS400_TORCHVISION
    with pytest.raises(ValueError, match="resize method"):
        Preprocessing(resize_method="pillow")
    assert KINETICS400_TORCHVISION.geometry().offsets == (8, 30)


def test_feature_files_name_the_crop_rule_and_resize():
    from c3d_extract.store.records import RunParameters

    def rules(preprocessing):
        return RunParameters(layers=("fc6",), clip_len=16, stride=8, short_policy="pad",
                             weights="w", weights_sha256="0", preprocessing=preprocessing,
                             precision="fp32", per_clip=False).preprocessing_rules()

    assert rules(SPORTS1M.to_json()) == {"crop_rule": "floor", "resize_method": "opencv"}
    assert rules(KINETICS400_TORCHVISION.to_json()) == {"crop_rule": "round",
                                                        "resize_method": "torchvision"}
    assert rules("{}") == {} and rules("not json") == {}
