"""Clips of training videos: random clips for training, centred clips and the extraction
protocol's windows for evaluation, as uint8 in the preset's channel order.

Frames are resized with the preset's own resize (``preprocess.resize_frame``, the code path
extraction uses) and then cropped: at a random position in training, in the centre otherwise
(by the preset's crop rule: Caffe's floor or torchvision's round).
Normalisation is not done here; the training loop applies the preset's normalisation to whole
batches on the device.

Crop sizes other than the preset's scale the resize with the crop (``preset_for_crop``): a
56-pixel crop of a 64 x 86 frame sees the same part of the scene as a 112-pixel crop of
128 x 171, so a model trained on small crops sees what extraction shows it at that size.

Randomness: the temporal offset, crop position and flip of item ``i`` in epoch ``e`` are drawn
from ``numpy.random.default_rng([seed, e, i])`` and nothing else, so a resumed run, any
number of DataLoader workers and any order of access give the same clips. (DataLoader workers
hold a copy of the dataset: call ``set_epoch`` before each epoch's iterator is created, and do
not use ``persistent_workers``.)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from c3d_extract.errors import UsageError
from c3d_extract.train.datasets import Sample
from c3d_extract.train.videos import Transform, frame_count_hint, read_frames
from c3d_extract.video.clip_plan import plan_clips
from c3d_extract.video.preprocess import Preprocessing, crop_offsets, prepare_frame, resize_frame

#: Decoder for training: PyAV reads sequentially with flat memory (SPEC section 7).
DEFAULT_DECODER = "pyav"


def preset_for_crop(preset: Preprocessing, crop_size: int) -> Preprocessing:
    """The preset with its resize scaled by ``crop_size / preset.crop`` (rounded half up) and
    crop ``crop_size``; the preset itself when the crop is its own.

    Store this preset with a model trained at ``crop_size`` so extraction and prediction
    resize the same way.
    """
    if crop_size == preset.crop:
        return preset
    if crop_size < 1:
        raise UsageError(f"the crop size must be positive, not {crop_size}")
    if preset.mean_volume is not None:
        raise UsageError(f"a mean volume fits only the crop it was made for ({preset.crop}), "
                         f"not {crop_size}")
    height, width = (int(side * crop_size / preset.crop + 0.5) for side in preset.resize)
    return dataclasses.replace(preset, resize=(max(height, crop_size), max(width, crop_size)),
                               crop=crop_size)


# ---------------------------------------------------------------- pure sampling arithmetic

def clip_draws(seed: int, epoch: int, index: int) -> Tuple[float, float, float, bool]:
    """``(time, top, left, flip)`` for item ``index`` in ``epoch``: three uniforms in [0, 1)
    and a fair coin, from a generator seeded by ``(seed, epoch, index)`` only."""
    if seed < 0 or epoch < 0 or index < 0:
        raise ValueError("seed, epoch and index must be non-negative")
    time, top, left, coin = np.random.default_rng([seed, epoch, index]).random(4)
    return float(time), float(top), float(left), bool(coin < 0.5)


def train_clip_frames(n_frames: int, clip_len: int, time: float) -> np.ndarray:
    """Frame indices of a random clip: start ``floor(time * (n - L + 1))`` (each start equally
    likely for uniform ``time``); short videos give the padded clip extraction uses."""
    if n_frames < clip_len:
        return plan_clips(n_frames, clip_len, clip_len, "pad").frames[0]
    start = min(int(time * (n_frames - clip_len + 1)), n_frames - clip_len)
    return np.arange(start, start + clip_len, dtype=np.int64)


def eval_clip_frames(n_frames: int, clip_len: int, which: int = 0, count: int = 1) -> np.ndarray:
    """Frame indices of clip ``which`` of ``count`` evenly spread clips: one clip is the centred
    one (start ``(n - L) // 2``); several run from the first frame to the last."""
    if n_frames < clip_len:
        return plan_clips(n_frames, clip_len, clip_len, "pad").frames[0]
    room = n_frames - clip_len
    start = room // 2 if count == 1 else (2 * which * room + count - 1) // (2 * (count - 1))
    return np.arange(start, start + clip_len, dtype=np.int64)


def random_crop_offsets(height: int, width: int, crop: int, top: float,
                        left: float) -> Tuple[int, int]:
    """Top-left corner of a crop, each position equally likely for uniform ``top``, ``left``."""
    if crop > height or crop > width:
        raise ValueError(f"crop {crop} does not fit in {height} x {width}")
    return (min(int(top * (height - crop + 1)), height - crop),
            min(int(left * (width - crop + 1)), width - crop))


# ---------------------------------------------------------------- decoding the frames a clip needs

def _clip_frames(path: str, pick: Callable[[int], np.ndarray], decoder: str,
                 transform: Transform) -> Tuple[np.ndarray, Dict[int, np.ndarray]]:
    """``(indices, {index: transformed frame})`` for ``indices = pick(n_frames)``.

    With a frame count known in advance (exact for frame folders, the container's for files)
    only the frames up to the clip's last are decoded; when the video turns out shorter than
    that count, the clip is chosen again from the true count.
    """
    hint = frame_count_hint(path)
    if hint is None:
        frames, n_frames = read_frames(path, 0, None, decoder, transform)
        indices = pick(n_frames)
        return indices, {int(t): frames[t] for t in set(indices.tolist())}
    indices = pick(hint)
    start, stop = int(indices.min()), int(indices.max()) + 1
    frames, n_frames = read_frames(path, start, stop, decoder, transform)
    if n_frames is not None and n_frames < stop:
        indices = pick(n_frames)
        start, stop = int(indices.min()), int(indices.max()) + 1
        frames, _ = read_frames(path, start, stop, decoder, transform)
    return indices, {int(t): frames[t - start] for t in set(indices.tolist())}


class ClipDataset(torch.utils.data.Dataset):
    """``clips_per_video`` clips of each sample; item ``i`` is clip ``i % clips_per_video`` of
    sample ``i // clips_per_video``.

    An item is ``(clip, label, video_index)``: clip uint8 ``L x crop x crop x 3`` in the
    preset's channel order. In training the temporal offset, crop position and horizontal
    flip are random (``clip_draws``); otherwise clips are evenly spread in time
    (``eval_clip_frames``: the centred clip when there is one) and centre-cropped.
    """

    def __init__(self, samples: Sequence[Sample], *, preset: Preprocessing, clip_len: int,
                 crop_size: int, training: bool, seed: int, hflip: bool = True,
                 clips_per_video: int = 1, decoder: str = DEFAULT_DECODER) -> None:
        if clip_len < 1 or clips_per_video < 1:
            raise UsageError("clip length and clips per video must be positive")
        if seed < 0:
            raise UsageError(f"the seed must be a non-negative integer, not {seed}")
        self.samples = tuple(samples)
        self.geometry = preset_for_crop(preset, crop_size)
        self.clip_len = clip_len
        self.crop_size = crop_size
        self.training = training
        self.seed = seed
        self.hflip = hflip
        self.clips_per_video = clips_per_video
        self.decoder = decoder
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose random clips the items are (training mode)."""
        if epoch < 0:
            raise ValueError("the epoch must be non-negative")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples) * self.clips_per_video

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of {len(self)}")
        video_index, which = divmod(index, self.clips_per_video)
        sample = self.samples[video_index]
        height, width = self.geometry.resize
        crop = self.crop_size

        def resize(frame: np.ndarray) -> np.ndarray:
            return resize_frame(frame, self.geometry)

        if self.training:
            time, top_u, left_u, flip = clip_draws(self.seed, self.epoch, index)
            indices, frames = _clip_frames(
                sample.path, lambda n: train_clip_frames(n, self.clip_len, time),
                self.decoder, resize)
            top, left = random_crop_offsets(height, width, crop, top_u, left_u)
            flip = flip and self.hflip
        else:
            indices, frames = _clip_frames(
                sample.path,
                lambda n: eval_clip_frames(n, self.clip_len, which, self.clips_per_video),
                self.decoder, resize)
            top, left = crop_offsets(height, width, crop, self.geometry.crop_rule)
            flip = False
        clip = np.stack([frames[int(t)][top:top + crop, left:left + crop] for t in indices])
        if flip:
            clip = clip[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(clip)), sample.label, video_index


def eval_windows(sample: Sample, preset: Preprocessing, clip_len: int, crop_size: int,
                 stride: Optional[int] = None, decoder: str = DEFAULT_DECODER) -> torch.Tensor:
    """Every clip window of a video for video-level evaluation: ``W x L x crop x crop x 3``
    uint8, centre-cropped, in the preset's channel order.

    The windows are the extraction protocol's (``video.clip_plan.plan_clips``): starts 0,
    stride, ... while a whole clip fits, stride ``clip_len // 2`` by default; a video shorter
    than one clip is one clip padded with its last frame.
    """
    stride = stride if stride is not None else max(clip_len // 2, 1)
    geometry = preset_for_crop(preset, crop_size)
    frames, n_frames = read_frames(sample.path, 0, None, decoder,
                                   lambda frame: prepare_frame(frame, geometry))
    plan = plan_clips(n_frames, clip_len, stride, "pad")
    return torch.from_numpy(np.stack(frames)[plan.frames])
