"""Training clips: content against PyAV + OpenCV directly, seeded sampling, evaluation windows."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from c3d_extract.train import clip_sampling
from c3d_extract.train.clip_sampling import (ClipDataset, eval_clip_frames, eval_windows,
                                             preset_for_crop, random_crop_offsets,
                                             train_clip_frames)
from c3d_extract.train.datasets import Sample, load_dataset
from c3d_extract.video.preprocess import SPORTS1M, Preprocessing
from tests.support.train_data import write_tiny_ucf101
from tests.support.videos import decode_rgb

RGB_PRESET = Preprocessing(channel_order="RGB", mean=(110.0, 100.0, 96.0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data = write_tiny_ucf101(tmp_path_factory.mktemp("ucf"), clips=2)
    return data, load_dataset("ucf101", str(data.root), val_fraction=0)


def resized_video(path: str, height: int, width: int, order: str) -> np.ndarray:
    """Every frame decoded by PyAV, resized by OpenCV, in ``order``: independent of the code."""
    frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR)
                       for f in decode_rgb(Path(path))])
    return frames[..., ::-1] if order == "BGR" else frames


def find_window(clip: np.ndarray, video: np.ndarray):
    """All (start, top, left, flipped) whose crop of consecutive frames equals ``clip``."""
    length, crop = clip.shape[0], clip.shape[1]
    found = []
    for flipped in (False, True):
        target = clip[:, :, ::-1] if flipped else clip
        for start in range(video.shape[0] - length + 1):
            # Candidates: positions whose top-left pixel fits; then the whole clip.
            corner = video[start, :video.shape[1] - crop + 1, :video.shape[2] - crop + 1]
            hits = np.argwhere((corner == target[0, 0, 0]).all(axis=-1))
            for top, left in hits:
                block = video[start:start + length, top:top + crop, left:left + crop]
                if np.array_equal(block, target):
                    found.append((start, int(top), int(left), flipped))
    return found


def test_preset_for_crop_scales_the_resize():
    assert preset_for_crop(SPORTS1M, 112) is SPORTS1M
    small = preset_for_crop(SPORTS1M, 56)
    assert (small.resize, small.crop, small.channel_order, small.mean) == \
        ((64, 86), 56, "BGR", SPORTS1M.mean)  # 171 * 56 / 112 = 85.5 rounds up
    assert preset_for_crop(SPORTS1M, 80).resize == (91, 122)  # 91.4, 122.1


def test_resize_frame_is_opencvs_bilinear_in_the_preset_channel_order():
    from c3d_extract.video.preprocess import prepare_frame, resize_frame

    frame = np.random.default_rng(4).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    expected = cv2.resize(frame, (171, 128), interpolation=cv2.INTER_LINEAR)
    bgr = resize_frame(frame, SPORTS1M)
    assert bgr.dtype == np.uint8
    assert np.array_equal(bgr, expected[..., ::-1])
    assert np.array_equal(resize_frame(frame, RGB_PRESET), expected)
    assert np.array_equal(prepare_frame(frame, SPORTS1M), expected[8:120, 29:141, ::-1])


def test_sampling_arithmetic_hand_computed():
    # 20 frames, clips of 16: starts 0..4, each for a fifth of the unit interval.
    assert [train_clip_frames(20, 16, u)[0] for u in (0.0, 0.199, 0.2, 0.5, 0.8, 0.999)] == \
        [0, 0, 1, 2, 4, 4]
    assert train_clip_frames(12, 16, 0.7).tolist() == list(range(12)) + [11] * 4
    assert eval_clip_frames(20, 8).tolist() == list(range(6, 14))
    assert eval_clip_frames(21, 8)[0] == 6  # starts 0..13: the lower of the two middle ones
    assert [eval_clip_frames(20, 8, j, 3)[0] for j in range(3)] == [0, 6, 12]
    assert [eval_clip_frames(21, 8, j, 4)[0] for j in range(4)] == [0, 4, 9, 13]  # 13 / 3
    assert random_crop_offsets(64, 86, 56, 0.0, 0.999) == (0, 30)
    assert random_crop_offsets(64, 86, 56, 0.5, 0.5) == (4, 15)


def test_training_clips_are_real_crops_seeded_by_seed_epoch_index(tiny):
    data, splits = tiny
    samples = splits.train[:6]
    dataset = ClipDataset(samples, preset=SPORTS1M, clip_len=8, crop_size=56, training=True,
                          seed=5)
    first = [dataset[i] for i in range(len(dataset))]
    again = ClipDataset(samples, preset=SPORTS1M, clip_len=8, crop_size=56, training=True,
                        seed=5)
    for i in reversed(range(len(again))):  # any order, a fresh object: the same clips
        assert torch.equal(again[i][0], first[i][0])
    assert [(label, index) for _, label, index in first] == [(s.label, i)
                                                             for i, s in enumerate(samples)]
    dataset.set_epoch(1)
    second = [dataset[i] for i in range(len(dataset))]
    assert sum(not torch.equal(a[0], b[0]) for a, b in zip(first, second)) >= 5
    other_seed = ClipDataset(samples, preset=SPORTS1M, clip_len=8, crop_size=56,
                             training=True, seed=6)
    assert sum(not torch.equal(other_seed[i][0], first[i][0]) for i in range(6)) >= 5
    # Every clip is a crop of 8 consecutive frames of the independently resized video.
    placements = []
    for (clip, _, _), sample in zip(first + second, samples + samples):
        assert clip.dtype == torch.uint8 and clip.shape == (8, 56, 56, 3)
        video = resized_video(sample.path, 64, 86, "BGR")
        found = find_window(clip.numpy(), video)
        assert found, sample.path
        placements.append(found[0])
    assert len({p[:3] for p in placements}) > 6  # offsets and crops vary
    assert {p[3] for p in placements} == {False, True}


def test_dataloader_workers_give_the_same_clips(tiny):
    _, splits = tiny
    dataset = ClipDataset(splits.train[:4], preset=SPORTS1M, clip_len=8, crop_size=56,
                          training=True, seed=1)
    dataset.set_epoch(3)
    direct = torch.stack([dataset[i][0] for i in range(4)])
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    assert torch.equal(torch.cat([batch[0] for batch in loader]), direct)


def test_eval_clip_is_the_centre(tiny):
    data, splits = tiny
    sample = next(s for s in splits.test if data.n_frames[_rel(s, data)] == 20)
    dataset = ClipDataset([sample], preset=RGB_PRESET, clip_len=8, crop_size=56,
                          training=False, seed=0)
    clip, label, index = dataset[0]
    video = resized_video(sample.path, 64, 86, "RGB")
    # Frames 6..13 (start (20 - 8) // 2), rows 4..59, columns 15..70.
    assert np.array_equal(clip.numpy(), video[6:14, 4:60, 15:71])
    assert (label, index) == (sample.label, 0)
    dataset.set_epoch(4)
    assert torch.equal(dataset[0][0], clip)


def test_short_video_padded_with_its_last_frame(tiny):
    data, splits = tiny
    sample = next(s for s in splits.train if data.n_frames[_rel(s, data)] == 12)
    dataset = ClipDataset([sample], preset=SPORTS1M, clip_len=16, crop_size=112,
                          training=False, seed=0)
    clip = dataset[0][0].numpy()
    video = resized_video(sample.path, 128, 171, "BGR")[:, 8:120, 29:141]
    assert np.array_equal(clip, video[[*range(12), 11, 11, 11, 11]])


@pytest.mark.parametrize("hint", [40, 10, None])
def test_wrong_or_unknown_frame_count_in_the_header(tiny, monkeypatch, hint):
    data, splits = tiny
    sample = next(s for s in splits.test if data.n_frames[_rel(s, data)] == 20)
    monkeypatch.setattr(clip_sampling, "frame_count_hint", lambda path: hint)
    dataset = ClipDataset([sample] * 8, preset=SPORTS1M, clip_len=8, crop_size=56,
                          training=True, seed=2)
    video = resized_video(sample.path, 64, 86, "BGR")
    for i in range(8):
        found = find_window(dataset[i][0].numpy(), video)
        assert found
        if hint == 10:  # believed: clips come from the first 10 frames
            assert all(start <= 2 for start, *_ in found)


def test_eval_windows_are_the_extraction_windows(tiny):
    data, splits = tiny
    for n_frames, clip_len, expected in ((20, 8, 4), (20, 16, 1), (12, 16, 1), (16, 8, 3)):
        sample = next(s for s in splits.train + splits.test
                      if data.n_frames[_rel(s, data)] == n_frames)
        windows = eval_windows(sample, SPORTS1M, clip_len, 56)
        # (n - L) // (L / 2) + 1 windows; one padded window when n < L.
        assert windows.shape == (expected, clip_len, 56, 56, 3)
        video = resized_video(sample.path, 64, 86, "BGR")[:, 4:60, 15:71]
        for w in range(expected):
            frames = [min(w * (clip_len // 2) + k, n_frames - 1) for k in range(clip_len)]
            assert np.array_equal(windows[w].numpy(), video[frames])


def test_frame_folder_frames_in_natural_order(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (12, 40, 50, 3), dtype=np.uint8)
    folder = tmp_path / "video"
    folder.mkdir()
    for index, frame in enumerate(frames, 1):  # frame1.png .. frame12.png, unpadded
        cv2.imwrite(str(folder / f"frame{index}.png"), frame[..., ::-1])
    sample = Sample(str(folder), 0, "video")
    windows = eval_windows(sample, RGB_PRESET, 8, 56)
    expected = np.stack([cv2.resize(f, (86, 64), interpolation=cv2.INTER_LINEAR)
                         for f in frames])[:, 4:60, 15:71]
    assert windows.shape == (2, 8, 56, 56, 3)
    assert np.array_equal(windows[0].numpy(), expected[0:8])
    assert np.array_equal(windows[1].numpy(), expected[4:12])
    train = ClipDataset([sample], preset=RGB_PRESET, clip_len=8, crop_size=56, training=True,
                        seed=0, hflip=False)
    resized = np.stack([cv2.resize(f, (86, 64), interpolation=cv2.INTER_LINEAR) for f in frames])
    assert all(not flipped for *_, flipped in find_window(train[0][0].numpy(), resized))
    assert find_window(train[0][0].numpy(), resized)


def _rel(sample: Sample, data) -> str:
    return str(Path(sample.path).relative_to(data.root)).replace("\\", "/")


def test_unreadable_video_is_a_video_read_error_naming_it(tmp_path):
    from c3d_extract.errors import VideoReadError

    broken = tmp_path / "v_Broken_g01_c01.avi"
    broken.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    dataset = ClipDataset([Sample(str(broken), 0, "Broken_g01")], preset=SPORTS1M, clip_len=8,
                          crop_size=56, training=True, seed=0)
    with pytest.raises(VideoReadError, match="v_Broken_g01_c01.avi"):
        dataset[0]
    with pytest.raises(VideoReadError, match="v_Broken_g01_c01.avi"):
        eval_windows(Sample(str(broken), 0, "Broken_g01"), SPORTS1M, 8, 56)
