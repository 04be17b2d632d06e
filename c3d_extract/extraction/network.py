"""The network of an extraction run: weights resolved and loaded, the device and precision
chosen, the backend's runner built, and the parameters a rerun must match."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Union

from c3d_extract.errors import UsageError
from c3d_extract.extraction.options import (ExtractOptions, clips_per_batch, crops_of,
                                            default_batch_size)
from c3d_extract.extraction.runners import Runner
from c3d_extract.store.records import RunParameters
from c3d_extract.video.preprocess import Preprocessing, preprocessing_with_mean
from c3d_extract.weights.means import load_mean

if TYPE_CHECKING:
    import torch
    from torch import nn

    from c3d_extract.weights.convert import LoadedWeights
    from c3d_extract.weights.networks import LoadedModel

#: Receives a line saying what a wait of more than a few seconds is for (the CLI shows it).
Notify = Callable[[str], None]
#: What ``--weights`` may be: a loaded network or C3D state dict, a path or name, or None.
WeightsSpec = Union["LoadedModel", "LoadedWeights", str, None]


@dataclass(frozen=True)
class PreparedNetwork:
    """A network on its device, ready for ``iter_records`` once it has its runner."""

    runner: Optional[Runner]  # None until ``with_runner``
    model: "nn.Module"
    weights: "LoadedModel"
    preprocessing: Preprocessing
    precision: str
    device_type: str
    backend: str = "torch"
    device: Optional["torch.device"] = None

    def resolve(self, options: ExtractOptions) -> ExtractOptions:
        return options.for_network(self.weights)


#: Weights files larger than this get a line before they are loaded (a few seconds).
LARGE_WEIGHTS_BYTES = 100 << 20


def prepare_network(weights: WeightsSpec, options: ExtractOptions,
                    mean: Optional[str] = None, *,
                    notify: Optional[Notify] = None) -> PreparedNetwork:
    """Resolve weights, device and precision; build the network and its runner.
    ``notify`` hears of the long waits: loading large weights, a first-use conversion."""
    return with_runner(load_prepared_network(weights, options, mean, notify=notify), options,
                       notify=notify)


def resolve_compute(options: ExtractOptions) -> Tuple["torch.device", str, str]:
    """``(device, precision, backend)`` the options ask for, checked; no weights read."""
    from c3d_extract.extraction.backends import resolve_backend
    from c3d_extract.device.precision import resolve_device, resolve_precision

    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device, options.allow_emulated_precision)
    return device, precision, resolve_backend(options.backend, device)


def load_prepared_network(weights: WeightsSpec, options: ExtractOptions,
                          mean: Optional[str] = None, *,
                          notify: Optional[Notify] = None) -> PreparedNetwork:
    """``prepare_network`` without the runner (``runner`` None): everything the output's
    parameters depend on, and nothing spent on a backend yet (``with_runner`` does it)."""
    options.validate()  # before torch is imported: a usage error comes at once
    from c3d_extract.weights.networks import load_model

    device, precision, backend = resolve_compute(options)
    large = local_weights_file(weights)
    if notify is not None and large is not None and os.path.getsize(large) > LARGE_WEIGHTS_BYTES:
        notify(f"loading the weights {large} ({os.path.getsize(large) >> 20} MB)")
    loaded = load_model(weights, kernel_order=options.kernel_order)
    if loaded.is_random:
        warnings.warn("using RANDOM weights: the features are meaningless except for testing",
                      UserWarning, stacklevel=2)
    if loaded.kernel_order_assumed:
        warnings.warn(f"{loaded.name}: {loaded.notes[0]}", UserWarning, stacklevel=2)
    options = options.for_network(loaded)
    preprocessing = loaded.preset
    if mean is not None:
        preprocessing = preprocessing_with_mean(preprocessing, load_mean(mean))
    try:
        preprocessing.cropped_mean(options.clip_len)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return PreparedNetwork(None, loaded.model, loaded, preprocessing, precision, device.type,
                           backend, device)


def with_runner(prepared: PreparedNetwork, options: ExtractOptions, *,
                notify: Optional[Notify] = None) -> PreparedNetwork:
    """``prepared`` with its runner built (unless it has one): with OpenVINO, the network
    converted on the first use of these weights and layers (25-45 s for C3D), which
    ``notify`` is told of first."""
    from c3d_extract.extraction.backends import make_runner

    if prepared.runner is not None:
        return prepared
    options = prepared.resolve(options)
    batch_size = options.batch_size or default_batch_size(prepared.device_type)

    def converting() -> None:
        if notify is not None:
            from c3d_extract.extraction.openvino_runner import openvino_cache_dir

            notify("converting the network for OpenVINO (first use of these weights and "
                   f"layers, about 30 s; kept in {openvino_cache_dir()})")

    # The kernel order the file was read in is part of the network's identity (a cached
    # conversion of the same file read in another order is another network).
    import torch

    loaded = prepared.weights
    device = prepared.device or torch.device(prepared.device_type)
    runner = make_runner(prepared.backend, prepared.model,
                         f"{loaded.sha256}:{loaded.kernel_order}", prepared.preprocessing,
                         options.clip_len, options.layers, device, prepared.precision,
                         clips_per_batch(batch_size, options.crops),
                         crops_of(prepared.preprocessing, options.crops), on_convert=converting)
    return replace(prepared, runner=runner)


def local_weights_file(weights: WeightsSpec) -> Optional[str]:
    """The local file ``--weights`` names (the default file for None), if it is one."""
    if weights is None:
        from c3d_extract.weights.loading import default_weights_path

        default = default_weights_path()
        return None if default is None else str(default)
    if isinstance(weights, str) and os.path.isfile(weights):
        return weights
    return None


def known_parameters(weights: WeightsSpec, options: ExtractOptions,
                     precision: str) -> Callable[[RunParameters], RunParameters]:
    """The run's parameters as far as they are known before the weights are loaded (the
    options given, the weights file's sha256), the rest taken from what is recorded."""
    def requested(recorded: RunParameters) -> RunParameters:
        from c3d_extract.weights.loading import file_sha256

        known: Dict[str, Any] = dict(short_policy=options.short_policy,
                                     per_clip=options.per_clip, precision=precision)
        if options.layers:
            known["layers"] = tuple(options.layers)
        if options.clip_len:
            known["clip_len"] = options.clip_len
            known["stride"] = options.stride or max(1, options.clip_len // 2)
        elif options.stride:
            known["stride"] = options.stride
        path = local_weights_file(weights)
        if path is not None:
            known["weights_sha256"] = file_sha256(path)
        return replace(recorded, **known)
    return requested
