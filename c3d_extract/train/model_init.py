"""The network a run trains: built from the registry, optionally initialised from a file.

``--init`` accepts, for C3D, any Sports-1M weights file the tool reads (its backbone is
loaded and a new fc8 head sized for the dataset's classes is drawn at random); for other
architectures a PyTorch or safetensors state dict in the architecture's own names (e.g.
torchvision's Kinetics-400 R(2+1)D-18 file); for every architecture a ``model.safetensors``
written by ``c3d-train``. Every tensor except the head must match by name and shape.

When the head is kept (the file's head has as many classes as the dataset), its classes are
the file's: a model file's names, or Kinetics-400's for a torchvision-format file with 400
outputs (``kept_head_class_names``, ``class_names_for_run``).
"""

from __future__ import annotations

import os
import pickle
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from c3d_extract.errors import UsageError, WeightsError
from c3d_extract.models.architecture import Architecture
from c3d_extract.models.registry import create_model


def head_prefix(model: nn.Module, arch: Architecture) -> str:
    """The classifier's parameter prefix (``fc8`` for C3D, ``fc`` for R(2+1)D)."""
    name = getattr(model, "head_name", None) or getattr(arch, "head_name", None)
    if not name:
        raise UsageError(f"the architecture {arch.name} names no classifier head")
    return str(name)


def build_model(arch: Architecture, num_classes: int, *, init: Optional[str] = None,
                freeze_backbone: bool = False, dropout: Optional[float] = None,
                ) -> Tuple[nn.Module, List[str]]:
    """A model for ``num_classes`` classes in train mode, and notes on how it was set up.

    Random initialisation draws from torch's global generator: seed it first.
    """
    options = {} if dropout is None else {"dropout": dropout}
    if dropout is not None and arch.name != "c3d":
        raise UsageError("--dropout applies to C3D only")
    model = create_model(arch.name, num_classes=num_classes, **options)
    head = head_prefix(model, arch)
    notes: List[str] = []
    if init is not None:
        state, description = read_initial_state(init, arch)
        notes += load_backbone(model, state, head)
        notes.insert(0, f"initialised from {description}")
    if freeze_backbone:
        frozen = 0
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(head + "."))
            frozen += 0 if parameter.requires_grad else parameter.numel()
        notes.append(f"backbone frozen ({frozen:,} parameters); training {head} only")
    return model.train(), notes


def read_initial_state(path: str, arch: Architecture) -> Tuple[Dict[str, torch.Tensor], str]:
    """The tensors of ``path`` in ``arch``'s own names, and a description of the source."""
    model_file = _read_if_model_file(path)
    if model_file is not None:
        if model_file.arch != arch.name:
            raise UsageError(f"{path} holds a {model_file.arch} model, not {arch.name}")
        return dict(model_file.state_dict), f"{path} (a trained {model_file.arch} model)"
    if arch.name == "c3d":
        from c3d_extract.weights.hub import resolve_weights

        loaded = resolve_weights(path)
        return dict(loaded.state_dict), f"{loaded.name} ({loaded.source_format})"
    if not os.path.isfile(path):
        raise UsageError(f"the --init file {path} does not exist")
    return _plain_state_dict(path), path


def kept_head_class_names(init: Optional[str], arch: Architecture,
                          num_classes: int) -> Tuple[str, ...]:
    """The class names of the head that ``--init`` keeps for ``num_classes`` classes: a model
    file's own, Kinetics-400's for a torchvision-format R(2+1)D-18 file with 400 outputs;
    empty when the head is not kept, its names are not known, or the file is gone (a resumed
    run whose --init file was moved)."""
    if init is None or not os.path.isfile(init):
        return ()
    model_file = _read_if_model_file(init)
    if model_file is not None:
        names = tuple(model_file.class_names)
        return names if len(names) == num_classes and model_file.arch == arch.name else ()
    if arch.name != "c3d":
        from c3d_extract.weights.networks import (torchvision_class_names,
                                                  torchvision_r2plus1d_state_dict)

        state = torchvision_r2plus1d_state_dict(init)
        if state is not None and arch.name == "r2plus1d_18":
            outputs = int(state["fc.weight"].shape[0])
            return torchvision_class_names(outputs) if outputs == num_classes else ()
    return ()


def _spelling(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


def class_names_for_run(dataset_classes: Sequence[str],
                        head_classes: Sequence[str]) -> Tuple[Tuple[str, ...], List[str]]:
    """The class names a run records, and notes. A kept head's names replace the dataset's
    when they are the same classes in the same order, spelled otherwise (``playing_organ``
    for ``playing organ``); other differences are reported and the dataset's names kept."""
    dataset_classes, head_classes = tuple(dataset_classes), tuple(head_classes)
    if not head_classes or head_classes == dataset_classes:
        return dataset_classes, []
    if len(head_classes) == len(dataset_classes) and all(
            _spelling(a) == _spelling(b) for a, b in zip(dataset_classes, head_classes)):
        return head_classes, [f"class names of the kept head recorded ({head_classes[0]!r}, "
                              f"... as the --init file names them)"]
    differ = [i for i, (a, b) in enumerate(zip(dataset_classes, head_classes))
              if _spelling(a) != _spelling(b)]
    first = differ[0]
    return dataset_classes, [
        f"the kept head's classes are not the dataset's ({len(differ)} of "
        f"{len(head_classes)} differ; class {first} is {dataset_classes[first]!r} in the "
        f"dataset, {head_classes[first]!r} in the --init file): each dataset class is trained "
        f"from the head's class of the same index"]


def _read_if_model_file(path: str):
    from c3d_extract.weights.model_file import is_model_file, read_model_file

    return read_model_file(path) if is_model_file(path) else None


def _plain_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a safetensors or PyTorch file (no code executed), unwrapped from
    ``{"model": ...}`` / ``{"state_dict": ...}`` and DDP's ``module.`` prefix."""
    try:
        if path.endswith(".safetensors"):
            state = load_file(path)
        else:
            from c3d_extract.weights.formats import check_tensor_views
            from c3d_extract.weights.pickle_scan import check_torch_file

            check_torch_file(path)
            state = torch.load(path, map_location="cpu", weights_only=True)
            check_tensor_views(state, path)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError,
            SafetensorError) as error:
        reason = " ".join(str(error).split())[:300]
        raise WeightsError(f"{path} is not a PyTorch or safetensors state dict that "
                           f"c3d-train can read: {reason}") from None
    from c3d_extract.weights.networks import unwrap_state_dict

    state = unwrap_state_dict(state)
    if not isinstance(state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], head: str) -> List[str]:
    """Copy ``state`` into ``model``, strictly except for the head, which is kept new when
    the source has none or has another number of classes. Returns notes."""
    own = model.state_dict()
    in_head = lambda key: key.startswith(head + ".")  # noqa: E731
    source_head = {k: v for k, v in state.items() if in_head(k)}
    head_fits = bool(source_head) and all(
        k in own and own[k].shape == v.shape for k, v in source_head.items())
    wanted = {k: v for k, v in state.items() if not in_head(k) or head_fits}
    missing = sorted(k for k in own if k not in wanted and not in_head(k))
    unexpected = sorted(k for k in wanted if k not in own)
    misshapen = sorted(k for k in wanted if k in own and own[k].shape != wanted[k].shape)
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if misshapen:
        problems.append("other shapes for " + _few(
            [f"{k} {tuple(wanted[k].shape)} vs {tuple(own[k].shape)}" for k in misshapen]))
    if problems:
        raise WeightsError("the --init weights do not fit the network: " + "; ".join(problems))
    merged = dict(own)
    merged.update({k: v.to(own[k].dtype) for k, v in wanted.items()})
    model.load_state_dict(merged, strict=True)
    if head_fits:
        return [f"{head} loaded too ({len(source_head)} tensors)"]
    classes = own[f"{head}.bias"].shape[0] if f"{head}.bias" in own else "?"
    return [f"new {head} head for {classes} classes"]


def _few(names: List[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
