"""The network input transform, as a preset that travels with the weights.

A preset is the whole preprocessing of a weights family, each step as that family's own
code computes it:

* Caffe C3D (``crop_rule="floor"``, ``resize_method="opencv"``) read frames with OpenCV
  (BGR), resized them straight to 128 x 171 with OpenCV's fixed-point ``INTER_LINEAR`` on
  uint8, subtracted a mean volume on the 0..255 scale (no scaling) and took the centre
  112 x 112 crop at ``(128 - 112) // 2, (171 - 112) // 2 = (8, 29)``.
* torchvision's video models (``crop_rule="round"``, ``resize_method="torchvision"``):
  ``VideoClassification`` resizes uint8 frames with float bilinear interpolation
  (``interpolate(..., align_corners=False, antialias=False)`` on float32, then
  ``torch.round`` back to uint8), centre-crops at ``int(round((171 - 112) / 2.0)) = 30``
  (Python's round, half to even), divides by 255 and normalises per channel in RGB.

The crop commutes with the normalisation, so frames are resized and cropped on the host
(uint8, small) and ``normalise`` runs on the device: ``((frame * scale) - mean) / std``
(``frame / 255`` when the scale is 1/255, as torchvision divides).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

if TYPE_CHECKING:
    import torch

#: Per-channel (B, G, R) means of the UCF101 ``train01_16_128_171_mean`` volume.
SPORTS1M_MEAN_BGR: Tuple[float, float, float] = (90.25, 97.66, 101.41)
#: torchvision's Kinetics-400 video preset (RGB on the [0, 1] scale).
KINETICS400_MEAN_RGB: Tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
KINETICS400_STD_RGB: Tuple[float, float, float] = (0.22803, 0.22145, 0.216989)

#: Centre-crop rules: Caffe's floor of half the margin, torchvision's ``int(round(m / 2.0))``.
CROP_FLOOR, CROP_ROUND = "floor", "round"
CROP_RULES = (CROP_FLOOR, CROP_ROUND)
#: Resize arithmetic: OpenCV's fixed-point INTER_LINEAR on uint8 (Caffe), torchvision's
#: float bilinear (antialias off) rounded back to uint8.
RESIZE_OPENCV, RESIZE_TORCHVISION = "opencv", "torchvision"
RESIZE_METHODS = (RESIZE_OPENCV, RESIZE_TORCHVISION)
_INTERPOLATION_NAMES = {
    RESIZE_OPENCV: "bilinear (OpenCV INTER_LINEAR)",
    RESIZE_TORCHVISION: "bilinear (torchvision: float32, align_corners=False, "
                        "antialias=False, rounded half to even to uint8)",
}


#: The largest frame side (pixels) a preset may resize or crop to.
MAX_FRAME_SIDE = 4096


def crop_offsets(height: int, width: int, crop: int, rule: str = CROP_FLOOR) -> Tuple[int, int]:
    """Top-left corner of the centre crop: Caffe's ``((height - crop) // 2, (width - crop) //
    2)``, or with ``rule="round"`` torchvision's ``int(round((height - crop) / 2.0))`` (Python's
    round: half to even, so a margin of 59 gives 30 and one of 57 gives 28)."""
    if crop > height or crop > width:
        raise ValueError(f"crop {crop} does not fit in {height} x {width}")
    if rule == CROP_FLOOR:
        return (height - crop) // 2, (width - crop) // 2
    if rule == CROP_ROUND:
        return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    raise ValueError(f"crop rule must be one of {', '.join(CROP_RULES)}, not {rule!r}")


#: Crops per clip that ``--crops`` accepts: the centre; the centre and four corners; the
#: same five of the horizontally mirrored frame too.
CROP_COUNTS = (1, 5, 10)
#: Names of the crops in the order the network sees them (and files store them).
CROP_NAMES = ("center", "top_left", "top_right", "bottom_left", "bottom_right",
              "center_flip", "top_left_flip", "top_right_flip", "bottom_left_flip",
              "bottom_right_flip")


@dataclass(frozen=True)
class CropWindow:
    """A ``crop`` x ``crop`` window at (``top``, ``left``) of the resized frame, or, with
    ``flip``, of that frame mirrored left to right."""

    top: int
    left: int
    flip: bool = False


def crop_windows(height: int, width: int, crop: int, count: int,
                 rule: str = CROP_FLOOR) -> Tuple[CropWindow, ...]:
    """The ``count`` (1, 5 or 10) crops of a ``height`` x ``width`` frame, in ``CROP_NAMES``
    order: centre (the preset's own centre crop: ``rule``, Caffe's floor by default), top-left
    (0, 0), top-right (0, W - crop), bottom-left (H - crop, 0), bottom-right
    (H - crop, W - crop); with 10, the same five windows of the mirrored frame.

    torchvision's ``TenCrop(vertical_flip=False)`` takes the same ten windows (it
    mirrors the whole frame, then takes its five crops), in the order tl, tr, bl, br,
    centre and with the centre rounded, not floored (column 30 instead of 29 on 171).
    """
    if count not in CROP_COUNTS:
        raise ValueError(f"crops must be one of {CROP_COUNTS}, not {count}")
    centre = crop_offsets(height, width, crop, rule)
    bottom, right = height - crop, width - crop
    five = (centre, (0, 0), (0, right), (bottom, 0), (bottom, right))
    windows = [CropWindow(top, left) for top, left in five]
    windows += [CropWindow(top, left, flip=True) for top, left in five]
    return tuple(windows[:count])


def crop_order(count: int) -> str:
    """The ``crop_order`` attribute of a file with ``count`` crops per clip."""
    if count not in CROP_COUNTS:
        raise ValueError(f"crops must be one of {CROP_COUNTS}, not {count}")
    return ",".join(CROP_NAMES[:count])


def crop_frame(resized: np.ndarray, window: CropWindow, crop: int) -> np.ndarray:
    """One window of a resized frame (H x W x C, or any ... x H x W x C array)."""
    frame = resized[..., ::-1, :] if window.flip else resized
    return frame[..., window.top:window.top + crop, window.left:window.left + crop, :]


@dataclass(frozen=True)
class Preprocessing:
    """Resize, channel order, scale, mean, standard deviation and crop of the network's input,
    with the crop rule and resize arithmetic of the weights' family (see the module docstring).

    The network sees ``((frame_uint8 * scale) - mean) / std`` per channel (``std``
    None: no division). ``mean_volume`` (C x L x H x W in ``channel_order``, on the
    resized frame, on the scaled values) replaces ``mean`` when given, as in the
    original Caffe model.
    """

    resize: Tuple[int, int] = (128, 171)  # height, width
    crop: int = 112
    channel_order: str = "BGR"
    mean: Tuple[float, float, float] = SPORTS1M_MEAN_BGR  # in channel_order
    mean_volume: Optional[np.ndarray] = field(default=None, compare=False, repr=False)
    mean_volume_sha256: Optional[str] = None
    scale: float = 1.0
    std: Optional[Tuple[float, float, float]] = None  # in channel_order
    crop_rule: str = CROP_FLOOR
    resize_method: str = RESIZE_OPENCV
    # Normalisation constants already on a device, keyed by (clip length, device).
    _constants: Dict[Any, Any] = field(default_factory=dict, init=False, compare=False,
                                       repr=False)

    def __post_init__(self) -> None:
        if self.channel_order not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be BGR or RGB, not {self.channel_order!r}")
        if self.resize_method not in RESIZE_METHODS:
            raise ValueError(f"resize method must be one of {', '.join(RESIZE_METHODS)}, "
                             f"not {self.resize_method!r}")
        if (len(self.resize) != 2 or not all(isinstance(v, (int, np.integer)) and
                                             1 <= v <= MAX_FRAME_SIDE for v in self.resize)
                or not 1 <= self.crop <= MAX_FRAME_SIDE):
            raise ValueError(f"resize and crop must be whole numbers of pixels from 1 to "
                             f"{MAX_FRAME_SIDE}, not {self.resize!r:.60} and {self.crop!r:.20}")
        crop_offsets(*self.resize, self.crop, self.crop_rule)
        if len(self.mean) != 3 or not all(np.isfinite(m) for m in self.mean):
            raise ValueError(f"mean must be 3 finite numbers, not {self.mean!r:.80}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive number, not {self.scale}")
        if self.std is not None:
            if len(self.std) != 3 or not all(np.isfinite(s) and s > 0 for s in self.std):
                raise ValueError(f"std must be 3 positive numbers, not {self.std}")
            object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.mean_volume is not None:
            volume = np.asarray(self.mean_volume, dtype=np.float32)
            if volume.ndim != 4 or volume.shape[0] != 3 or volume.shape[2:] != tuple(self.resize):
                raise ValueError(
                    f"mean volume must have shape 3 x L x {self.resize[0]} x {self.resize[1]}, "
                    f"not {' x '.join(map(str, volume.shape))}")
            volume.setflags(write=False)
            object.__setattr__(self, "mean_volume", volume)
            if self.mean_volume_sha256 is None:
                digest = hashlib.sha256(np.ascontiguousarray(volume).tobytes()).hexdigest()
                object.__setattr__(self, "mean_volume_sha256", digest)

    def __getstate__(self) -> Dict[str, Any]:
        # Decode workers receive the preset; device tensors stay in this process.
        state = dict(self.__dict__)
        state["_constants"] = {}
        return state

    @property
    def offsets(self) -> Tuple[int, int]:
        return crop_offsets(*self.resize, self.crop, self.crop_rule)

    @property
    def divisor(self) -> Optional[float]:
        """255.0 for a scale of 1/255 (torchvision divides by 255; ``x / 255`` is the
        correctly rounded value, ``x * float32(1 / 255)`` may be 1 ulp off), else None."""
        inverse = 1.0 / self.scale
        return 255.0 if self.scale != 1.0 and abs(inverse - 255.0) < 1e-9 else None

    def geometry(self) -> "Preprocessing":
        """The preset without its mean volume: what decoding needs (resize, crop, order)."""
        return Preprocessing(resize=self.resize, crop=self.crop, channel_order=self.channel_order,
                             crop_rule=self.crop_rule, resize_method=self.resize_method)

    def cropped_mean(self, clip_len: int, window: Optional[CropWindow] = None) -> np.ndarray:
        """The mean to subtract from a cropped clip: 3 x L x crop x crop, or 3 x 1 x 1 x 1.

        A mean volume is cropped at ``window`` (default: the centre crop); a mirrored
        window takes the mirrored volume, so the mean moves with the pixels, as in Caffe
        (the mean is subtracted from the resized frame before it is cropped or mirrored).
        """
        if self.mean_volume is None:
            return np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1, 1)
        if self.mean_volume.shape[1] != clip_len:
            raise ValueError(f"the mean volume covers {self.mean_volume.shape[1]} frames, "
                             f"but clips have {clip_len}")
        window = window or CropWindow(*self.offsets)
        volume = self.mean_volume[:, :, :, ::-1] if window.flip else self.mean_volume
        return np.ascontiguousarray(
            volume[:, :, window.top:window.top + self.crop, window.left:window.left + self.crop])

    def normalise(self, clips: "torch.Tensor",
                  windows: Tuple[CropWindow, ...] = ()) -> "torch.Tensor":
        """Cropped uint8 clips (N x L x H x W x C in ``channel_order``) -> the network's
        input (N x C x L x H x W float32), on the clips' device.

        With several crop ``windows``, clips come as N = clips x len(windows) rows, the
        crops of each clip together in ``windows`` order, and each crop gets the mean of
        its own window (which matters only for a mean volume).
        """
        import torch

        if clips.dim() != 5 or clips.shape[-1] != 3:
            raise ValueError(f"expected N x L x H x W x 3 clips, got shape {tuple(clips.shape)}")
        if len(windows) > 1 and clips.shape[0] % len(windows):
            raise ValueError(f"{clips.shape[0]} rows are not whole clips of "
                             f"{len(windows)} crops")
        scale, mean, std = self._device_constants(int(clips.shape[1]), clips.device, windows)
        x = clips.permute(0, 4, 1, 2, 3).to(torch.float32)
        if self.divisor is not None:
            x = x / self.divisor
        elif scale is not None:
            x = x * scale
        if mean.shape[0] > 1:  # one mean per crop window
            x = (x.reshape(-1, mean.shape[0], *x.shape[1:]) - mean).reshape(x.shape)
        else:
            x = x - mean
        return x if std is None else x / std

    def _device_constants(self, clip_len: int, device: "torch.device",
                          windows: Tuple[CropWindow, ...] = ()) -> Tuple[Any, Any, Any]:
        import torch

        per_window = self.mean_volume is not None and len(windows) > 1
        key = (clip_len, str(device), windows if per_window else ())
        if key not in self._constants:
            if per_window:
                mean = torch.from_numpy(np.stack(
                    [self.cropped_mean(clip_len, window) for window in windows])).to(device)
            else:
                mean = torch.from_numpy(self.cropped_mean(clip_len)).to(device)[None]
            std = None if self.std is None else torch.tensor(
                self.std, dtype=torch.float32, device=device).reshape(1, 3, 1, 1, 1)
            scale = None if self.scale == 1.0 else torch.tensor(
                self.scale, dtype=torch.float32, device=device)
            self._constants[key] = (scale, mean, std)
        return self._constants[key]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready description, stored with features and converted weights."""
        data: Dict[str, Any] = {
            "resize": list(self.resize), "crop": self.crop,
            "channel_order": self.channel_order,
            "mean": [round(float(m), 6) for m in self.mean],
            "mean_volume_sha256": self.mean_volume_sha256,
            "scale": float(self.scale), "interpolation": _INTERPOLATION_NAMES[self.resize_method],
        }
        if (self.crop_rule, self.resize_method) != (CROP_FLOOR, RESIZE_OPENCV):
            # Caffe's presets keep the description files written before had.
            data["crop_rule"] = self.crop_rule
            data["resize_method"] = self.resize_method
        if self.std is not None:  # absent for Caffe's presets, as in files written before
            data["std"] = [round(float(s), 6) for s in self.std]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], mean_volume: Optional[np.ndarray] = None,
                  family: Optional["Preprocessing"] = None) -> "Preprocessing":
        """The preset ``to_dict`` described. A description without a crop rule or resize
        method (written before they were recorded) takes them from ``family`` (the
        architecture's preset), else Caffe's."""
        family = family if family is not None else SPORTS1M
        return cls(resize=tuple(data.get("resize", (128, 171))),  # type: ignore[arg-type]
                   crop=int(data.get("crop", 112)),
                   channel_order=data.get("channel_order", "BGR"),
                   mean=tuple(float(m) for m in data.get("mean", SPORTS1M_MEAN_BGR)),  # type: ignore[arg-type]
                   mean_volume=mean_volume,
                   mean_volume_sha256=data.get("mean_volume_sha256") if mean_volume is not None
                   else None,
                   scale=float(data.get("scale", 1.0)),
                   std=None if data.get("std") is None
                   else tuple(float(s) for s in data["std"]),  # type: ignore[arg-type]
                   crop_rule=str(data.get("crop_rule", family.crop_rule)),
                   resize_method=str(data.get("resize_method", family.resize_method)))


SPORTS1M = Preprocessing()
#: torchvision's preset for its Kinetics-400 video models (R(2+1)D-18 and others).
KINETICS400_TORCHVISION = Preprocessing(
    channel_order="RGB", scale=1 / 255, mean=KINETICS400_MEAN_RGB, std=KINETICS400_STD_RGB,
    crop_rule=CROP_ROUND, resize_method=RESIZE_TORCHVISION)


def resize_torchvision(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision's ``F.resize(uint8 tensor, (height, width), BILINEAR, antialias=False)`` on
    one H x W x C uint8 frame: to float32, ``interpolate(bilinear, align_corners=False,
    antialias=False)``, ``torch.round`` (half to even), back to uint8 (torchvision 0.29's
    ``_functional_tensor.resize`` and ``_cast_squeeze_out``).

    The frame goes in as the channels-last view of the H x W x C array, the memory layout of
    torchvision's own video pipeline (``read_video``'s T x H x W x C frames permuted to
    T x C x H x W), so the same interpolation kernel computes the same float32 sums.
    """
    import torch  # imported here: only torchvision-family presets need it in decode workers

    if frame.shape[:2] == (height, width):
        return np.ascontiguousarray(frame)  # torchvision returns the frame unchanged
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
        y = torch.nn.functional.interpolate(x.to(torch.float32), size=(height, width),
                                            mode="bilinear", align_corners=False,
                                            antialias=False)
        y = torch.round(y).clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(y[0].permute(1, 2, 0).numpy())


def resize_frame(frame_rgb: np.ndarray, preprocessing: Preprocessing = SPORTS1M) -> np.ndarray:
    """Decoded RGB uint8 frame (H x W x 3) -> resized uint8 frame (``resize``, with the
    preset's arithmetic: OpenCV's INTER_LINEAR or torchvision's float bilinear) in the
    preset's channel order, not yet cropped."""
    height, width = preprocessing.resize
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 frame, got shape {frame_rgb.shape}")
    if preprocessing.resize_method == RESIZE_TORCHVISION:
        resized = resize_torchvision(frame_rgb, height, width)
    else:
        import cv2  # imported here: decode workers need it, the model does not

        resized = cv2.resize(frame_rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    if preprocessing.channel_order == "BGR":
        resized = resized[:, :, ::-1]
    return resized


def prepare_frame(frame_rgb: np.ndarray, preprocessing: Preprocessing = SPORTS1M) -> np.ndarray:
    """Decoded RGB uint8 frame (H x W x 3) -> centre-cropped uint8 frame (crop x crop x 3) in
    the preset's channel order. Normalisation happens later, on whole clips."""
    resized = resize_frame(frame_rgb, preprocessing)
    top, left = preprocessing.offsets
    return np.ascontiguousarray(
        resized[top:top + preprocessing.crop, left:left + preprocessing.crop])


def preprocessing_with_mean(base: Preprocessing, mean: np.ndarray) -> Preprocessing:
    """``base`` with its mean replaced by 3 channel values or a full mean volume."""
    from c3d_extract.errors import UsageError

    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim == 5 and mean.shape[0] == 1:  # Caffe blobs carry a leading num axis
        mean = mean[0]
    if mean.size == 3:
        return Preprocessing(resize=base.resize, crop=base.crop,
                             channel_order=base.channel_order,
                             mean=tuple(float(v) for v in mean.ravel()),  # type: ignore[arg-type]
                             scale=base.scale, std=base.std, crop_rule=base.crop_rule,
                             resize_method=base.resize_method)
    try:
        return Preprocessing(resize=base.resize, crop=base.crop,
                             channel_order=base.channel_order, mean=base.mean, mean_volume=mean,
                             scale=base.scale, std=base.std, crop_rule=base.crop_rule,
                             resize_method=base.resize_method)
    except ValueError as error:
        raise UsageError(str(error)) from None
