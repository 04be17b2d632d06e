"""``--decoder nvdec``: the GPU's video decoder (NVDEC) through torchcodec's CUDA decoding.

Frames are decoded and converted to RGB on the GPU, then copied to the host, where the
decode worker resizes and crops them like any other decoder's (the frames of every
decoder take the same path from there on). NVDEC takes H.264, HEVC, VP8/VP9, AV1 and
MPEG-1/2, not MPEG-4 Part 2 (UCF101's codec): a video in another codec, or one NVDEC
fails to open, is decoded on the CPU with PyAV instead. That is never silent: the
video's codec in the video table says where it was decoded (``h264 (nvdec)``,
``mpeg4 (cpu)``) and a warning line names the reason.

torchcodec loads the system's FFmpeg shared libraries (4 to 9); without them, without a
CUDA device, or without torchcodec, ``check_nvdec`` refuses the option with the reason.
Like the other decoders this runs inside the spawned decode workers: each opens its own
CUDA context.
"""

from __future__ import annotations

import os
from typing import Iterator, Optional

import numpy as np

from c3d_extract.errors import UsageError, VideoReadError
from c3d_extract.video.decoders import PyAVDecoder, VideoDecoder
from c3d_extract.video.ffmpeg_messages import first_line
from c3d_extract.video.probe import StreamInfo, probe_video

#: Codecs (FFmpeg names) that NVDEC decodes; others are decoded on the CPU.
NVDEC_CODECS = frozenset({"h264", "hevc", "av1", "vp8", "vp9", "mpeg1video", "mpeg2video",
                          "vc1"})
#: The CPU decoder of the videos NVDEC does not take (always installed).
CPU_FALLBACK = "pyav"
#: The CUDA device of the decode workers (``cuda`` or ``cuda:N``).
DEVICE_ENV = "C3D_EXTRACT_NVDEC_DEVICE"


def nvdec_refusal(codec: str) -> Optional[str]:
    """Why NVDEC does not decode a video in ``codec``; None when it does."""
    if not codec:
        return "its codec could not be read"
    if codec not in NVDEC_CODECS:
        named = "MPEG-4 Part 2" if codec == "mpeg4" else codec
        return f"NVDEC does not take {named}"
    return None


def check_nvdec() -> None:
    """Raise ``UsageError`` with the reason when NVDEC decoding cannot run here."""
    import importlib.util

    if importlib.util.find_spec("torchcodec") is None:
        raise UsageError("--decoder nvdec needs torchcodec (pip install torchcodec) and the "
                         "system's FFmpeg libraries (4 to 9)")
    import torch

    if not torch.cuda.is_available():
        raise UsageError("--decoder nvdec decodes on a CUDA GPU, and CUDA is not available "
                         "here; use --decoder decord or pyav")
    try:
        import torchcodec.decoders  # noqa: F401  (loads FFmpeg)
    except (ImportError, OSError, RuntimeError) as error:
        raise UsageError("--decoder nvdec: torchcodec cannot load FFmpeg's libraries (it "
                         f"needs FFmpeg 4 to 9 installed): {first_line(error)}") from None


class NvdecDecoder(VideoDecoder):
    """NVDEC through torchcodec, or PyAV for the videos NVDEC does not take."""

    name = "nvdec"

    def __init__(self, path: str, info: Optional[StreamInfo] = None,
                 allow_damaged: bool = False) -> None:
        info = info if info is not None else probe_video(path)
        super().__init__(path, info, allow_damaged)
        self._codec = info.codec
        self._gpu = None
        self._cpu: Optional[VideoDecoder] = None
        refusal = nvdec_refusal(self._codec)
        if refusal is None:
            try:
                self._gpu = _open_cuda(path, info.stream_index)
            except (RuntimeError, ValueError) as error:
                refusal = f"NVDEC could not open it ({first_line(error)})"
        if refusal is not None:
            self._fall_back(refusal)

    def _fall_back(self, reason: str) -> None:
        self._gpu = None
        self._cpu = PyAVDecoder(self.path, self.info, self.allow_damaged)
        self.warnings = tuple(self.warnings) + (f"decoded on the CPU ({CPU_FALLBACK}): {reason}",)

    @property
    def on_gpu(self) -> bool:
        return self._cpu is None

    def codec(self) -> str:
        codec = self._codec or (self._cpu.codec() if self._cpu is not None else "")
        return f"{codec} ({'nvdec' if self.on_gpu else 'cpu'})"

    def _frames(self) -> Iterator[np.ndarray]:
        # ``frames`` (the base class) judges the count against the container's declaration.
        if self._cpu is None:
            index = 0
            while self._cpu is None:
                try:
                    frame = self._gpu.get_frame_at(index)
                except IndexError:
                    return
                except RuntimeError as error:
                    if index:
                        raise VideoReadError(first_line(error)) from None
                    # Nothing sent yet: the CPU decodes the whole video instead.
                    self._fall_back(f"NVDEC failed on its first frame ({first_line(error)})")
                    break
                yield frame.data.cpu().numpy()
                index += 1
        if self._cpu is not None:
            for frame in self._cpu._frames():
                self._cpu.n_decoded += 1  # its damage texts say where decoding got to
                yield frame

    def _damage_seen(self) -> Optional[str]:
        return self._cpu._damage_seen() if self._cpu is not None else None

    def _covered_seconds(self) -> Optional[float]:
        return self._cpu._covered_seconds() if self._cpu is not None else None

    def _explain_shortfall(self, problem: str) -> str:
        return self._cpu._explain_shortfall(problem) if self._cpu is not None else problem

    def close(self) -> None:
        self._gpu = None
        if self._cpu is not None:
            self._cpu.close()


def _open_cuda(path: str, stream_index: int):
    from torchcodec.decoders import VideoDecoder as _Decoder

    device = os.environ.get(DEVICE_ENV, "cuda")
    # The stream every decoder reads (``probe_video``), so that counts and times agree.
    return _Decoder(path, device=device, dimension_order="NHWC", stream_index=stream_index)
