"""What a run produces per video, and the parameters that must match for runs to share a file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from c3d_extract.video.preprocess import CROP_FLOOR, RESIZE_OPENCV, crop_order

STATUSES = ("ok", "padded", "looped", "skipped", "error")
#: Statuses whose videos have features.
WITH_FEATURES = ("ok", "padded", "looped")


@dataclass(frozen=True)
class RunParameters:
    """Everything that changes the numbers in a feature file.

    A rerun on an existing output must have equal parameters, or it would mix
    features computed differently.
    """

    layers: Tuple[str, ...]
    clip_len: int
    stride: int
    short_policy: str
    weights: str
    weights_sha256: str
    preprocessing: str  # JSON of the Preprocessing preset
    precision: str      # fp32, bf16 or fp16, as resolved
    per_clip: bool
    weights_kernel_order: str = "caffe"  # the kernel order the weights file was read as
    crops: int = 1          # crops per clip (``--crops``): 1, 5 or 10
    target_fps: float = 0.0  # frames resampled to this rate (``--fps``); 0: every frame

    def __post_init__(self) -> None:
        object.__setattr__(self, "crops", int(self.crops))
        object.__setattr__(self, "target_fps", float(self.target_fps))

    def to_attrs(self) -> Dict[str, Any]:
        """The file's root attributes. ``crops`` and ``target_fps`` appear only when they
        are not the defaults, so a file of a default run is as it always was; a file of
        several crops also says their order (``crop_order``)."""
        attrs = asdict(self)
        attrs["layers"] = ",".join(self.layers)
        if self.crops == 1:
            del attrs["crops"]
        else:
            attrs["crop_order"] = crop_order(self.crops)
        if not self.target_fps:
            del attrs["target_fps"]
        return attrs

    @classmethod
    def from_attrs(cls, attrs: Dict[str, Any]) -> "RunParameters":
        layers = attrs["layers"]
        return cls(layers=tuple(str(layers).split(",")) if str(layers) else (),
                   clip_len=int(attrs["clip_len"]), stride=int(attrs["stride"]),
                   short_policy=str(attrs["short_policy"]), weights=str(attrs["weights"]),
                   weights_sha256=str(attrs["weights_sha256"]),
                   preprocessing=str(attrs["preprocessing"]),
                   precision=str(attrs["precision"]), per_clip=bool(attrs["per_clip"]),
                   weights_kernel_order=str(attrs.get("weights_kernel_order", "caffe")),
                   crops=int(attrs.get("crops", 1)),
                   target_fps=float(attrs.get("target_fps", 0.0)))

    def preprocessing_rules(self) -> Dict[str, str]:
        """``crop_rule`` and ``resize_method`` of the preset (``preprocess``), as root
        attributes of a feature file; a description without them is Caffe's (floor, OpenCV).
        Empty when the preprocessing is not a preset's JSON."""
        try:
            data = json.loads(self.preprocessing)
        except ValueError:
            return {}
        if not isinstance(data, dict) or "resize" not in data:
            return {}
        return {"crop_rule": str(data.get("crop_rule", CROP_FLOOR)),
                "resize_method": str(data.get("resize_method", RESIZE_OPENCV))}

    def differences(self, other: "RunParameters") -> List[str]:
        """Human-readable ``name: recorded -> requested`` for every differing field.

        The weights' name may change (a file moved) as long as their sha256 is the same.
        """
        mine, theirs = asdict(self), asdict(other)
        mine["layers"], theirs["layers"] = ",".join(self.layers), ",".join(other.layers)
        names = [k for k in mine if k != "weights" and mine[k] != theirs[k]]
        return [f"{k}: {mine[k]!r} in the file, {theirs[k]!r} now" for k in names]


@dataclass
class VideoRecord:
    """One video's outcome: metadata, L2-normalised descriptors and optional per-clip rows."""

    id: str
    status: str
    error: str = ""
    n_frames: int = 0
    n_clips: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    codec: str = ""  # the video stream's codec as FFmpeg names it (h264, mpeg4...)
    decoder: str = ""  # the backend that decoded it (decord, pyav, frames...)
    declared_frames: int = 0  # the frames its container declares (0: it declares none)
    features: Dict[str, np.ndarray] = field(default_factory=dict)
    clip_features: Dict[str, np.ndarray] = field(default_factory=dict)
    clip_starts: Optional[np.ndarray] = None
    zero_descriptor: bool = False  # every clip feature was zero: the descriptor stays zero
    #: Decoded, but something looked wrong (frame numbering, several video streams): shown
    #: to the user and kept in the video table's ``notes`` column.
    warnings: Tuple[str, ...] = ()
    #: How the video came to be read by its decoder (PyAV instead of decord, and why): kept
    #: in the ``notes`` column only.
    decoder_notes: Tuple[str, ...] = ()

    @property
    def notes(self) -> str:
        """The ``notes`` column: warnings and decoder notes, one per line."""
        return "\n".join(self.warnings + self.decoder_notes)

    def metadata(self) -> Dict[str, Any]:
        return {"id": self.id, "status": self.status, "error": self.error,
                "n_frames": int(self.n_frames), "n_clips": int(self.n_clips),
                "fps": float(self.fps), "width": int(self.width), "height": int(self.height),
                "codec": self.codec, "decoder": self.decoder,
                "declared_frames": int(self.declared_frames), "notes": self.notes,
                "zero_descriptor": bool(self.zero_descriptor)}

    def arrays(self) -> Dict[str, np.ndarray]:
        out = {f"features/{k}": np.asarray(v, np.float32) for k, v in self.features.items()}
        out.update({f"clips/{k}": np.asarray(v, np.float32)
                    for k, v in self.clip_features.items()})
        if self.clip_starts is not None:
            out["clips/start_frame"] = np.asarray(self.clip_starts, np.int64)
        return out

    @classmethod
    def from_parts(cls, meta: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> "VideoRecord":
        record = cls(**{k: meta[k] for k in ("id", "status", "error", "n_frames", "n_clips",
                                             "fps", "width", "height")},
                     codec=str(meta.get("codec", "")), decoder=str(meta.get("decoder", "")),
                     declared_frames=int(meta.get("declared_frames", 0)),
                     warnings=tuple(str(meta.get("notes", "")).splitlines()),
                     zero_descriptor=bool(meta.get("zero_descriptor", False)))
        for name, array in arrays.items():
            group, _, key = name.partition("/")
            if group == "features":
                record.features[key] = array
            elif key == "start_frame":
                record.clip_starts = array
            else:
                record.clip_features[key] = array
        return record


def dumps(data: Dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=False)
