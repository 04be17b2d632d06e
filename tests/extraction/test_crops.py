"""Ten crops at extraction (``--crops 1|5|10``): the windows, their order, the file they make,
and the features against a network run in the test on frames cropped here (PyAV decode,
OpenCV resize, numpy slicing)."""

from dataclasses import replace

import cv2
import h5py
import numpy as np
import pytest
import torch

from c3d_extract.errors import ParameterMismatchError, UsageError
from c3d_extract.extraction.batching import Batch
from c3d_extract.extraction.options import ExtractOptions, clips_per_batch
from c3d_extract.extraction.run import extract
from c3d_extract.extraction.torch_runner import ClipRunner
from c3d_extract.store.read import read_attributes, read_clip_features, read_features
from c3d_extract.store.records import RunParameters
from c3d_extract.store.write import FeatureStore
from c3d_extract.video.preprocess import (SPORTS1M, CropWindow, Preprocessing, crop_frame,
                                          crop_order, crop_windows)
from tests.support.tiny_network import TinyPooling, tiny_model
from tests.support.videos import decode_rgb, write_video

MEAN_BGR = np.array([90.25, 97.66, 101.41], np.float32)
#: The ten windows of a 128 x 171 frame, written out: (top, left, mirrored).
TEN = [(8, 29, False), (0, 0, False), (0, 59, False), (16, 0, False), (16, 59, False),
       (8, 29, True), (0, 0, True), (0, 59, True), (16, 0, True), (16, 59, True)]


# ---------------------------------------------------------------- the windows

def test_the_ten_windows_and_their_order():
    windows = crop_windows(128, 171, 112, 10)
    assert [(w.top, w.left, w.flip) for w in windows] == TEN
    assert crop_windows(128, 171, 112, 5) == windows[:5]
    assert crop_windows(128, 171, 112, 1) == (CropWindow(8, 29),)  # today's centre crop
    assert crop_order(10) == ("center,top_left,top_right,bottom_left,bottom_right,center_flip,"
                              "top_left_flip,top_right_flip,bottom_left_flip,bottom_right_flip")
    assert crop_order(5) == "center,top_left,top_right,bottom_left,bottom_right"
    with pytest.raises(ValueError):
        crop_windows(128, 171, 112, 3)


def test_a_mirrored_window_is_the_mirror_of_the_opposite_window():
    """torchvision's TenCrop mirrors the frame, then crops: the mirrored top-left crop is
    the mirror image of the top-right crop of the frame as decoded."""
    frame = np.random.default_rng(0).integers(0, 256, (128, 171, 3), dtype=np.uint8)
    mirrored_top_left = crop_frame(frame, CropWindow(0, 0, flip=True), 112)
    assert np.array_equal(mirrored_top_left, frame[:112, 59:171][:, ::-1])
    # The centre is floored on both sides, so the mirrored centre is one column over.
    assert np.array_equal(crop_frame(frame, CropWindow(8, 29, flip=True), 112),
                          frame[8:120, 171 - 29 - 112:171 - 29][:, ::-1])


def test_the_mean_volume_moves_with_each_window():
    volume = np.random.default_rng(1).normal(100, 10, (3, 16, 128, 171)).astype(np.float32)
    preset = Preprocessing(mean_volume=volume)
    assert np.array_equal(preset.cropped_mean(16), volume[:, :, 8:120, 29:141])
    assert np.array_equal(preset.cropped_mean(16, CropWindow(16, 59, flip=True)),
                          volume[:, :, :, ::-1][:, :, 16:128, 59:171])


def test_a_batch_of_ten_crops_is_cut_and_normalised_per_window():
    """gather_clips on resized frames against numpy: per clip, its ten crops in order,
    each minus the mean volume cropped (and mirrored) like its pixels."""
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (20, 128, 171, 3), dtype=np.uint8)
    volume = rng.normal(100, 10, (3, 16, 128, 171)).astype(np.float32)
    preset = Preprocessing(mean_volume=volume)
    index = np.stack([np.arange(16), np.arange(4, 20)])
    runner = ClipRunner(TinyPooling(), preset, 16, ["fc6"], torch.device("cpu"), "fp32",
                        windows=crop_windows(128, 171, 112, 10))
    clips = runner.clips_tensor(Batch(frames, index, ())).numpy()
    assert clips.shape == (20, 3, 16, 112, 112)
    for clip in range(2):
        pixels = frames[index[clip]].astype(np.float32)  # L x H x W x C
        for crop, (top, left, flip) in enumerate(TEN):
            source = pixels[:, :, ::-1] if flip else pixels
            mean = volume[:, :, :, ::-1] if flip else volume
            expected = (source[:, top:top + 112, left:left + 112].transpose(3, 0, 1, 2)
                        - mean[:, :, top:top + 112, left:left + 112])
            assert np.array_equal(clips[clip * 10 + crop], expected)


def test_batches_count_crops_of_clips():
    assert clips_per_batch(8, 1) == 8
    assert clips_per_batch(32, 10) == 3 and clips_per_batch(8, 10) == 1
    assert clips_per_batch(10, 5) == 2


def test_other_crop_counts_are_refused():
    with pytest.raises(UsageError, match="crops must be one of 1, 5, 10"):
        ExtractOptions(crops=3).validate()


# ---------------------------------------------------------------- end to end, tiny network

def reference_crops(path, network, layer="fc6"):
    """Per clip (16 frames, stride 8) and crop (``TEN`` order), the network's features on
    frames prepared here: PyAV RGB -> OpenCV BGR -> resize 171 x 128 -> window -> mean."""
    resized = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), (171, 128),
                          interpolation=cv2.INTER_LINEAR) for f in decode_rgb(path)]
    resized = np.stack(resized).astype(np.float32)
    starts = range(0, len(resized) - 15, 8)
    rows = []
    for start in starts:
        clip = resized[start:start + 16]
        crops = []
        for top, left, flip in TEN:
            source = clip[:, :, ::-1] if flip else clip
            window = source[:, top:top + 112, left:left + 112] - MEAN_BGR
            crops.append(window.transpose(3, 0, 1, 2))
        with torch.inference_mode():
            rows.append(network.extract(torch.from_numpy(np.stack(crops)), [layer])[layer]
                        .numpy())
    return np.stack(rows)  # clips x 10 x dims


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "bar.mp4", 32, width=80, height=60)  # 3 clips
    return folder / "bar.mp4"


@pytest.fixture(scope="module")
def runs(video, tmp_path_factory):
    """The same video with 1, 5 and 10 crops, fc6 and prob per clip."""
    out = tmp_path_factory.mktemp("out")
    paths = {}
    for crops in (1, 5, 10):
        paths[crops] = out / f"crops{crops}.h5"
        options = ExtractOptions(layers=("fc6", "prob"), per_clip=True, crops=crops,
                                 decoder="pyav", batch_size=7)
        summary = extract(str(video.parent), str(paths[crops]), weights=tiny_model(),
                          options=options)
        assert summary.complete and summary.n_failed == 0
    return paths


def test_every_crop_equals_the_network_on_frames_cropped_here(runs, video):
    expected = reference_crops(video, TinyPooling())
    _, starts, ten = read_clip_features(str(runs[10]), "fc6")
    assert list(starts) == [0, 8, 16] and ten.shape == (3, 10, 2352)
    # Block means of the same float32 values in the same order: equal to rounding.
    assert np.abs(ten - expected).max() <= 1e-4
    _, _, five = read_clip_features(str(runs[5]), "fc6")
    assert np.array_equal(five, ten[:, :5])


def test_the_centre_crop_of_ten_is_the_single_crop_run(runs):
    """The centre crop is today's crop, normalised by the same float32 operations, and
    the network computes each row of its batch alone, so the rows are equal, not close.
    (C3D itself: tests/extraction/test_crops.py::test_ten_crops_of_c3d.)"""
    _, _, single = read_clip_features(str(runs[1]), "fc6")
    _, _, ten = read_clip_features(str(runs[10]), "fc6")
    assert single.shape == (3, 2352)
    assert np.array_equal(ten[:, 0], single)
    _, prob_single = read_clip_features(str(runs[1]), "prob")[1:]
    assert np.abs(read_clip_features(str(runs[10]), "prob")[2][:, 0] - prob_single).max() \
        <= 1e-6


def test_the_descriptor_averages_clips_and_crops(runs):
    for crops in (5, 10):
        _, _, per_clip = read_clip_features(str(runs[crops]), "fc6")
        mean = per_clip.astype(np.float64).mean(axis=(0, 1))
        ids, descriptors = read_features(str(runs[crops]), "fc6")
        assert ids == ["bar.mp4"]
        assert np.abs(descriptors[0] - mean / np.linalg.norm(mean)).max() <= 1e-6


def test_a_single_crop_file_is_as_before_and_ten_crops_say_their_order(runs):
    single = read_attributes(str(runs[1]))
    assert not {"crops", "crop_order", "target_fps"} & set(single)
    assert set(single) == {
        "c3d_extract_version", "clip_len", "complete", "crop_rule", "encoding-type",
        "encoding-version", "folded_journal", "format", "format_version", "layers", "n_inputs",
        "per_clip", "precision", "preprocessing", "resize_method", "short_policy", "stride",
        "weights", "weights_kernel_order", "weights_sha256"}
    assert (single["crop_rule"], single["resize_method"]) == ("floor", "opencv")
    with h5py.File(runs[1], "r") as handle:
        assert handle["clips/fc6"].shape == (3, 2352) and handle["features/fc6"].shape == (1, 2352)
    ten = read_attributes(str(runs[10]))
    assert ten["crops"] == 10 and ten["crop_order"] == crop_order(10)
    assert ten["crop_order"].split(",")[0] == "center"
    with h5py.File(runs[10], "r") as handle:
        assert handle["clips/fc6"].shape == (3, 10, 2352)
        assert handle["clips/prob"].shape == (3, 10, 5)


@pytest.mark.parametrize("crops", [1, 5])
def test_a_rerun_with_other_crops_is_refused_before_any_work(runs, video, crops, tmp_path):
    target = runs[10]
    before = target.read_bytes()
    # Refused before the weights are even looked for (this file does not exist).
    with pytest.raises(ParameterMismatchError, match="crops: 10 in the file, " + str(crops)):
        extract(str(video.parent), str(target), weights=str(tmp_path / "missing.pickle"),
                options=ExtractOptions(layers=("fc6", "prob"), per_clip=True, crops=crops,
                                       decoder="pyav"))
    assert target.read_bytes() == before
    # And by the store itself, which checks every parameter under its lock.
    with pytest.raises(ParameterMismatchError, match="crops: 10 in the file, " + str(crops)):
        FeatureStore(str(target), replace(_recorded(target), crops=crops), {}).open()
    assert target.read_bytes() == before
    with pytest.raises(ParameterMismatchError, match="crops: 10 in the file, " + str(crops)):
        extract(str(video.parent), str(target), weights=tiny_model(),
                options=ExtractOptions(layers=("fc6", "prob"), per_clip=True, crops=crops,
                                       decoder="pyav"))
    assert target.read_bytes() == before


def _recorded(path):
    return RunParameters.from_attrs(read_attributes(str(path)))


def test_a_single_crop_file_refuses_ten(runs, video):
    with pytest.raises(ParameterMismatchError, match="crops: 1 in the file, 10 now"):
        extract(str(video.parent), str(runs[1]), weights=tiny_model(),
                options=ExtractOptions(layers=("fc6", "prob"), per_clip=True, crops=10,
                                       decoder="pyav"))


def test_the_activitynet_layout_refuses_crops(runs, tmp_path):
    from c3d_extract.evaluation.pca import PCAModel, write_activitynet

    model = PCAModel(x_mean=np.zeros(2352), U=np.eye(2352)[:, :4], S=np.ones(4),
                     total_variance=4.0, n_samples=10)
    with pytest.raises(UsageError, match="10 crops per clip"):
        write_activitynet(model, str(runs[10]), str(tmp_path / "anet.h5"))


def test_openvino_runs_the_crops_as_torch_does(tmp_path):
    pytest.importorskip("openvino")
    from c3d_extract.extraction.openvino_runner import OpenVinoRunner

    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (24, 128, 171, 3), dtype=np.uint8)
    batch = Batch(frames, np.stack([np.arange(16), np.arange(8, 24)]), (None, None))
    windows = crop_windows(128, 171, 112, 10)
    network = TinyPooling()
    expected = ClipRunner(network, SPORTS1M, 16, ["fc6", "prob"], torch.device("cpu"), "fp32",
                          windows=windows)(batch)
    # Three clips per batch: the second row pads the network's fixed 30-row input.
    runner = OpenVinoRunner(network, "tiny-crops", SPORTS1M, 16, ["fc6", "prob"], "fp32",
                            batch_size=3, cache_root=tmp_path, windows=windows)
    got = runner(batch)
    assert got["fc6"].shape == (2, 10, 2352) and got["prob"].shape == (2, 10, 5)
    assert np.abs(got["fc6"] - expected["fc6"]).max() <= 1e-3  # block means of 0..255 values
    assert np.abs(got["prob"] - expected["prob"]).max() <= 1e-5


def fc6_bound(network, pool5: np.ndarray) -> np.ndarray:
    """How far two fp32 computations of C3D's fc6 on the same input may differ when only
    their summation order differs (oneDNN picks kernels by batch size): about
    sqrt(K) * eps * sum|a*b| per layer of K-term sums, an early error reaching fc6 through
    the same weights; summed over the nine layers up to fc6 and scaled by fc6's own sum
    of |products| (the bound tests/extraction/test_openvino.py derives for its backend)."""
    import math

    from c3d_extract.models.c3d import CONV_LAYERS, POOL5_SIZE

    depth = sum(math.sqrt(27 * c_in) for _, c_in, _ in CONV_LAYERS) + math.sqrt(POOL5_SIZE)
    weight = network.fc6.weight.detach().double().abs().numpy()
    bias = network.fc6.bias.detach().double().abs().numpy()
    return depth * float(np.finfo(np.float32).eps) * (pool5.astype(np.float64) @ weight.T + bias)


@pytest.mark.slow
def test_ten_crops_of_c3d(random_network, video):
    """Full C3D (seeded random weights), one clip: the centre row of a ten-crop batch
    against the single-crop run, and a corner against the network on the corner cut here."""
    from c3d_extract.video.preprocess import prepare_frame, resize_frame

    rgb = decode_rgb(video)[:16]
    resized = np.stack([resize_frame(f, SPORTS1M) for f in rgb])
    cropped = np.stack([prepare_frame(f, SPORTS1M) for f in rgb])
    index = np.arange(16)[None]
    device = torch.device("cpu")
    single = ClipRunner(random_network, SPORTS1M, 16, ["fc6", "pool5"], device, "fp32")(
        Batch(cropped, index, (None,)))
    ten = ClipRunner(random_network, SPORTS1M, 16, ["fc6", "pool5"], device, "fp32",
                     windows=crop_windows(128, 171, 112, 10))(Batch(resized, index, (None,)))
    assert ten["fc6"].shape == (1, 10, 4096)
    bound = fc6_bound(random_network, single["pool5"].reshape(1, -1))
    assert np.all(np.abs(ten["fc6"][:, 0] - single["fc6"]) <= bound)
    # Index 9, bottom_right_flip: rows 16..127, columns 59..170 of the mirrored frame.
    mirrored = resized[:, :, ::-1]
    window = mirrored[:, 16:128, 59:171].astype(np.float32) - MEAN_BGR
    with torch.inference_mode():
        direct = random_network.extract(
            torch.from_numpy(np.ascontiguousarray(window.transpose(3, 0, 1, 2))[None]),
            ["fc6", "pool5"])
    bound = fc6_bound(random_network, direct["pool5"].numpy().reshape(1, -1))
    assert np.all(np.abs(ten["fc6"][:, 9] - direct["fc6"].numpy()) <= bound)


def test_a_ten_crop_file_is_resumed_in_place(video, tmp_path):
    """A second run adds a video to a ten-crop file (the in-place commit appends
    clips x crops x dims rows); the first video's rows are kept."""
    import shutil

    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(video, folder / "a.mp4")
    out = tmp_path / "ten.h5"
    options = ExtractOptions(layers=("fc6",), per_clip=True, crops=10, decoder="pyav")
    extract(str(folder), str(out), weights=tiny_model(), options=options)
    _, _, first = read_clip_features(str(out), "fc6")
    write_video(folder / "b.mp4", 16, width=80, height=60)
    summary = extract(str(folder), str(out), weights=tiny_model(), options=options)
    assert summary.n_skipped_existing == 1 and summary.n_processed == 1
    rows, starts, both = read_clip_features(str(out), "fc6")
    assert both.shape == (4, 10, 2352) and list(rows) == [0, 0, 0, 1]
    assert np.array_equal(both[:3], first)
    assert np.abs(both[3] - reference_crops(folder / "b.mp4", TinyPooling())[0]).max() <= 1e-4
