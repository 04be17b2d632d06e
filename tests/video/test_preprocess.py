"""The Caffe input transform, checked against OpenCV and a plain bilinear written here."""

import cv2
import numpy as np
import pytest
import torch

from c3d_extract.extraction.batching import Batch
from c3d_extract.video.preprocess import (SPORTS1M, Preprocessing, crop_offsets, prepare_frame,
                                          preprocessing_with_mean)


def bilinear_half_pixel(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and edge clamping (OpenCV's INTER_LINEAR
    definition), in float, written independently of OpenCV."""
    in_h, in_w = image.shape[:2]
    ys = np.clip((np.arange(out_h) + 0.5) * in_h / out_h - 0.5, 0, in_h - 1)
    xs = np.clip((np.arange(out_w) + 0.5) * in_w / out_w - 0.5, 0, in_w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, in_h - 1), np.minimum(x0 + 1, in_w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    img = image.astype(np.float64)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)


def test_crop_offsets_are_caffes():
    assert crop_offsets(128, 171, 112) == (8, 29)
    assert SPORTS1M.offsets == (8, 29)


def test_prepare_frame_matches_opencv_resize_bgr_and_crop(frame):
    expected = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), (171, 128),
                          interpolation=cv2.INTER_LINEAR)[8:120, 29:141]
    assert np.array_equal(prepare_frame(frame), expected)


def test_prepare_frame_matches_an_independent_bilinear(frame):
    reference = bilinear_half_pixel(frame, 128, 171)[8:120, 29:141, ::-1]
    # OpenCV's uint8 path uses fixed-point weights: within one grey level of exact.
    assert np.abs(prepare_frame(frame).astype(np.float64) - reference).max() <= 1.0


def test_upscaling_small_frames_too():
    small = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    reference = bilinear_half_pixel(small, 128, 171)[8:120, 29:141, ::-1]
    assert np.abs(prepare_frame(small).astype(np.float64) - reference).max() <= 1.0


def test_channel_order_is_bgr():
    red = np.zeros((128, 171, 3), np.uint8)
    red[..., 0] = 200  # red in RGB
    out = prepare_frame(red)
    assert out[..., 2].min() == 200 and out[..., 0].max() == 0


def _runner(preprocessing, clip_len=16):
    from c3d_extract.extraction.torch_runner import ClipRunner
    from c3d_extract.models.c3d import build_c3d

    return ClipRunner(build_c3d(seed=0), preprocessing, clip_len, ["fc6"],
                      torch.device("cpu"), "fp32")


def test_clip_normalisation_on_the_device_subtracts_the_mean_per_channel():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (20, 112, 112, 3), dtype=np.uint8)
    index = np.stack([np.arange(16), np.arange(4, 20)])
    clips = _runner(SPORTS1M).clips_tensor(Batch(frames, index, ()))
    mean = np.array([90.25, 97.66, 101.41]).reshape(1, 3, 1, 1, 1)
    expected = frames[index].transpose(0, 4, 1, 2, 3).astype(np.float64) - mean
    assert clips.shape == (2, 3, 16, 112, 112)
    assert np.allclose(clips.numpy(), expected, atol=1e-4)


def test_full_mean_volume_is_cropped_like_the_frames():
    rng = np.random.default_rng(3)
    volume = rng.uniform(0, 255, (3, 16, 128, 171)).astype(np.float32)
    preprocessing = preprocessing_with_mean(SPORTS1M, volume)
    frames = rng.integers(0, 256, (16, 112, 112, 3), dtype=np.uint8)
    clips = _runner(preprocessing).clips_tensor(Batch(frames, np.arange(16)[None], ()))
    # Subtract before cropping, as Caffe did, then crop rows 8..119 and columns 29..140.
    full = np.zeros((3, 16, 128, 171), np.float64)
    full[:, :, 8:120, 29:141] = frames.transpose(3, 0, 1, 2)
    expected = (full - volume)[:, :, 8:120, 29:141]
    assert np.allclose(clips[0].numpy(), expected, atol=1e-3)


def test_three_value_mean_file():
    preprocessing = preprocessing_with_mean(SPORTS1M, np.array([1.0, 2.0, 3.0]))
    assert preprocessing.mean == (1.0, 2.0, 3.0) and preprocessing.mean_volume is None


def test_mean_volume_of_wrong_shape_is_a_usage_error():
    from c3d_extract.errors import UsageError

    with pytest.raises(UsageError, match="3 x L x 128 x 171"):
        preprocessing_with_mean(SPORTS1M, np.zeros((3, 16, 112, 112)))


def test_preset_round_trips_through_json():
    import json

    again = Preprocessing.from_dict(json.loads(SPORTS1M.to_json()))
    assert again == SPORTS1M


# ---------------------------------------------------------------- scale, std and normalise

def test_normalise_follows_the_formula_for_torchvisions_preset():
    from c3d_extract.video.preprocess import KINETICS400_TORCHVISION as preset

    rng = np.random.default_rng(4)
    clips = rng.integers(0, 256, (2, 4, 6, 5, 3), dtype=np.uint8)  # N x L x H x W x RGB
    out = preset.normalise(torch.from_numpy(clips))
    mean = np.array([0.43216, 0.394666, 0.37645]).reshape(1, 3, 1, 1, 1)
    std = np.array([0.22803, 0.22145, 0.216989]).reshape(1, 3, 1, 1, 1)
    expected = (clips.transpose(0, 4, 1, 2, 3) / 255.0 - mean) / std
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 6, 5)
    # float32: one rounding each for the cast, the scaling, the subtraction and the
    # division; |values| <= 2.7, so a few float32 ulps of 4 bound the error.
    assert np.abs(out.numpy() - expected).max() <= 8 * np.finfo(np.float32).eps * 4


def test_normalise_keeps_caffes_mean_subtraction_exact():
    rng = np.random.default_rng(5)
    clips = rng.integers(0, 256, (1, 3, 4, 4, 3), dtype=np.uint8)
    out = SPORTS1M.normalise(torch.from_numpy(clips)).numpy()
    expected = clips.transpose(0, 4, 1, 2, 3) - np.array(
        [90.25, 97.66, 101.41], np.float32).reshape(1, 3, 1, 1, 1)
    assert np.array_equal(out, expected.astype(np.float32))


def test_normalise_rejects_a_clip_that_is_not_n_l_h_w_3():
    with pytest.raises(ValueError, match="N x L x H x W x 3"):
        SPORTS1M.normalise(torch.zeros(2, 3, 4, 4, 4, dtype=torch.uint8))


def test_scale_and_std_round_trip_and_old_descriptions_still_read():
    from c3d_extract.video.preprocess import KINETICS400_TORCHVISION as preset

    again = Preprocessing.from_dict(preset.to_dict())
    assert again == preset and again.scale == 1 / 255
    assert again.std == (0.22803, 0.22145, 0.216989) and again.channel_order == "RGB"
    # A description written before scale and std existed (no std key, scale 1).
    old = {"resize": [128, 171], "crop": 112, "channel_order": "BGR",
           "mean": [90.25, 97.66, 101.41], "mean_volume_sha256": None, "scale": 1.0,
           "interpolation": "bilinear (OpenCV INTER_LINEAR)"}
    assert Preprocessing.from_dict(old) == SPORTS1M
    assert SPORTS1M.to_dict() == old  # Caffe's preset describes itself as before


@pytest.mark.parametrize("bad", [dict(scale=0.0), dict(scale=float("nan")),
                                 dict(std=(1.0, 0.0, 1.0)), dict(std=(1.0, 1.0))])
def test_bad_scale_or_std_is_refused(bad):
    with pytest.raises(ValueError):
        Preprocessing(**bad)


def test_resize_frame_is_the_presets_resize_in_its_channel_order(frame):
    from c3d_extract.video.preprocess import KINETICS400_TORCHVISION, resize_frame

    resized = cv2.resize(frame, (171, 128), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(resize_frame(frame), resized[:, :, ::-1])  # Caffe: OpenCV, BGR
    # torchvision's: float bilinear rounded to uint8 (tests/video/test_torchvision_preset.py checks
    # it against torchvision's own output); here, within half a level of the exact bilinear,
    # plus the float32 error of the weights: source coordinates below 320 are off by a few
    # ulps (2 ** -15 each), which moves a value by at most 255 * 2 * 4 * 2 ** -15 = 0.03.
    ours = resize_frame(frame, KINETICS400_TORCHVISION).astype(np.float64)
    assert np.abs(ours - bilinear_half_pixel(frame, 128, 171)).max() <= 0.5 + 0.03


def test_the_runner_normalises_with_the_preset():
    from c3d_extract.video.preprocess import KINETICS400_TORCHVISION as preset

    rng = np.random.default_rng(6)
    frames = rng.integers(0, 256, (20, 112, 112, 3), dtype=np.uint8)
    index = np.stack([np.arange(16), np.arange(4, 20)])
    clips = _runner(preset).clips_tensor(Batch(frames, index, ()))
    mean = np.array(preset.mean).reshape(1, 3, 1, 1, 1)
    std = np.array(preset.std).reshape(1, 3, 1, 1, 1)
    expected = (frames[index].transpose(0, 4, 1, 2, 3) / 255.0 - mean) / std
    assert np.abs(clips.numpy() - expected).max() <= 8 * np.finfo(np.float32).eps * 4
