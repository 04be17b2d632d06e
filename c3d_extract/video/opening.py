"""Choosing the decoder of a video and opening it: the backends by name, whether each is
installed, and the fallback to PyAV where decord is not proven or fails before its first
frame."""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional

from c3d_extract.errors import UsageError
from c3d_extract.video.decoders import (DecoderUnsuitableError, DecordDecoder, FrameFolderDecoder,
                                        PyAVDecoder, TorchCodecDecoder, VideoDecoder,
                                        decord_unsuitable)
from c3d_extract.video.probe import StreamInfo, check_readable, probe_video


def _nvdec(path: str, info: Optional[StreamInfo] = None,
           allow_damaged: bool = False) -> VideoDecoder:
    from c3d_extract.video.nvdec import NvdecDecoder  # NVDEC through torchcodec (its own module)

    return NvdecDecoder(path, info, allow_damaged)


DECODERS: Dict[str, Callable[..., VideoDecoder]] = {
    "decord": DecordDecoder, "pyav": PyAVDecoder, "torchcodec": TorchCodecDecoder,
    "nvdec": _nvdec,
}


#: The backend that decodes a video when the chosen one fails before its first frame.
FALLBACK: Dict[str, str] = {"decord": "pyav"}


_MODULES = {"decord": "decord", "pyav": "av", "torchcodec": "torchcodec", "nvdec": "torchcodec"}


def available_decoders() -> List[str]:
    import importlib.util

    return [name for name, module in _MODULES.items() if importlib.util.find_spec(module)]


def check_decoder(name: str) -> None:
    """Raise ``UsageError`` if the backend is unknown or not installed."""
    if name not in DECODERS:
        raise UsageError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")
    if name not in available_decoders():
        others = [d for d in available_decoders() if d != name]
        hint = f"; installed: {', '.join(others)}" if others else ""
        raise UsageError(f"the {name} decoder is not installed (pip install "
                         f"{_MODULES[name]}){hint}")
    if name == "nvdec":
        from c3d_extract.video.nvdec import check_nvdec

        check_nvdec()


def open_decoder(name: str, path: str, allow_damaged: bool = False) -> VideoDecoder:
    """Backend ``name`` on the video file ``path``; a folder is read as a frame folder.

    The file is probed first (``probe_video``). When decord is asked for a video it is not
    proven on (``decord_unsuitable``) or cannot decode faithfully (its frame count is not the
    declared one, rotation...), PyAV decodes it and says why in ``notes``.
    """
    if os.path.isdir(path):
        return FrameFolderDecoder(path)
    check_readable(path)
    info = probe_video(path)
    note = ""
    if name == "decord":
        reason = decord_unsuitable(info)
        if reason is not None and "pyav" in available_decoders():
            name, note = "pyav", f"decoded with PyAV: {reason}"
    try:
        decoder = DECODERS[name](path, info, allow_damaged)
    except DecoderUnsuitableError as error:
        fallback = FALLBACK.get(name)
        if fallback is None or fallback not in available_decoders():
            raise
        name, note = fallback, f"decoded with PyAV: {error}"
        decoder = DECODERS[name](path, info, allow_damaged)
    if note:
        decoder.notes += (note,)
    return decoder
