"""What an extraction run is asked to do: ``ExtractOptions`` and the values derived from them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Tuple

from c3d_extract.errors import UsageError
from c3d_extract.extraction.backends import BACKENDS
from c3d_extract.video.clip_plan import SHORT_POLICIES
from c3d_extract.video.opening import check_decoder
from c3d_extract.video.preprocess import CROP_COUNTS, CropWindow, Preprocessing, crop_windows
from c3d_extract.video.resample import check_target_fps
from c3d_extract.weights.kernel_orders import check_kernel_order

if TYPE_CHECKING:
    from c3d_extract.weights.networks import LoadedModel

#: ``weights`` and ``precision`` of a ``--decode-only`` file, which has no features.
DECODE_ONLY = "none (decode only)"


@dataclass(frozen=True)
class ExtractOptions:
    """How clips are cut and computed. ``0`` (or no layers) means: choose for the device or
    the network (its default layer, its clip length, a stride of half the clip length)."""

    layers: Tuple[str, ...] = ()
    clip_len: int = 0
    stride: int = 0
    short_policy: str = "pad"
    batch_size: int = 0
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    allow_emulated_precision: bool = False
    decoder: str = "decord"
    workers: int = 0
    timeout: float = 600.0
    per_clip: bool = False
    kernel_order: Optional[str] = None  # declared kernel order of the weights file
    crops: int = 1  # crops per clip: 1 (the centre), 5 (and the corners), 10 (and mirrored)
    target_fps: float = 0.0  # resample every video to this frame rate first; 0: as decoded
    #: Damaged or truncated videos keep the frames that decoded (status ``ok``/``padded``,
    #: the damage kept as their error text) instead of being errors.
    allow_damaged: bool = False

    def validate(self, network: bool = True) -> None:
        """Raise ``UsageError`` for a bad option; ``network=False`` leaves out the layers
        (and the models, so that a ``--decode-only`` run never imports torch)."""
        if network:
            self._validate_layers()
        for name in ("clip_len", "stride"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1")
        if self.batch_size < 0 or self.workers < 0:
            raise UsageError("batch size and workers must be positive (0 = automatic)")
        if self.short_policy not in SHORT_POLICIES:
            raise UsageError(f"short policy must be one of {', '.join(SHORT_POLICIES)}")
        if not self.timeout > 0:
            raise UsageError("timeout must be a positive number of seconds")
        if self.crops not in CROP_COUNTS:
            raise UsageError(f"crops must be one of {', '.join(map(str, CROP_COUNTS))}")
        try:
            if self.target_fps:
                check_target_fps(self.target_fps)
        except ValueError as error:
            raise UsageError(str(error)) from None
        check_decoder(self.decoder)
        check_kernel_order(self.kernel_order)
        if self.backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}")

    def _validate_layers(self) -> None:
        from c3d_extract.models.registry import (all_layer_names, architecture_names,
                                                 get_architecture)

        known = all_layer_names()
        unknown = [layer for layer in self.layers if layer not in known]
        if unknown or any(not layer for layer in self.layers):
            # The network is not known yet: each architecture's layers, apart. A layer of
            # another architecture than the weights' is refused by ``for_network``, which
            # lists the weights' layers only.
            choices = "; ".join(f"{name}: {', '.join(get_architecture(name).layers)}"
                                for name in architecture_names())
            raise UsageError(f"unknown layer(s) {', '.join(unknown) or '(none)'}; the layers "
                             f"are, by architecture, {choices}")
        if len(set(self.layers)) != len(self.layers):
            raise UsageError("a layer is named twice")

    def for_network(self, network: "LoadedModel") -> "ExtractOptions":
        """These options with the layers, clip length and stride left open filled in from
        ``network``; a layer it does not have is a ``UsageError``."""
        layers = self.layers or (network.default_layer,)
        missing = [layer for layer in layers if layer not in network.layers]
        if missing:
            raise UsageError(f"{network.name} ({network.arch}) has no layer "
                             f"{', '.join(missing)}; choose from {', '.join(network.layers)}")
        clip_len = self.clip_len or network.clip_len
        return replace(self, layers=tuple(layers), clip_len=clip_len,
                       stride=self.stride or max(1, clip_len // 2))


def default_batch_size(device_type: str) -> int:
    """Clips per forward pass when the user does not choose: a GPU needs many to be busy."""
    return 32 if device_type == "cuda" else 8


def clips_per_batch(batch_size: int, crops: int) -> int:
    """Video clips per batch when each is ``crops`` rows of the network's batch of
    ``batch_size`` (at least one clip, so one clip's crops may exceed it)."""
    return max(1, batch_size // max(1, crops))


def crops_of(preprocessing: Preprocessing, crops: int) -> Tuple[CropWindow, ...]:
    """The crop windows cut on the device: () for the one centre crop the workers cut."""
    if crops == 1:
        return ()
    return crop_windows(*preprocessing.resize, preprocessing.crop, crops, preprocessing.crop_rule)


def decode_only_options(options: ExtractOptions) -> ExtractOptions:
    """``options`` for a run without a network: no layers, C3D's clip protocol by default."""
    clip_len = options.clip_len or 16
    return replace(options, layers=(), clip_len=clip_len,
                   stride=options.stride or max(1, clip_len // 2))
