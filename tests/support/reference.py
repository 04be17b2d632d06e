"""The paper's descriptor computed the plain way, independently of the pipeline:
PyAV decode -> OpenCV BGR + resize 128x171 -> crop rows 8..119, columns 29..140 ->
minus the per-channel mean -> every 16-frame clip at stride 8 -> network -> mean -> L2."""

import cv2
import numpy as np
import torch

from tests.support.videos import decode_rgb

MEAN_BGR = np.array([90.25, 97.66, 101.41], np.float32)


def caffe_clip_input(rgb_frames: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) RGB uint8 -> (n, 3, 112, 112) float32 BGR minus mean, cropped."""
    out = []
    for frame in rgb_frames:
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        resized = cv2.resize(bgr, (171, 128), interpolation=cv2.INTER_LINEAR)
        out.append(resized[8:120, 29:141].astype(np.float32) - MEAN_BGR)
    return np.stack(out).transpose(0, 3, 1, 2)


def reference_clip_features(network, path, layer="fc6", pad_to=16):
    frames = caffe_clip_input(decode_rgb(path))
    n = len(frames)
    if n < 16:  # the default short policy: repeat the last frame
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad_to - n, 0)])
        n = 16
    starts = list(range(0, n - 15, 8))
    clips = np.stack([frames[s:s + 16].transpose(1, 0, 2, 3) for s in starts])
    with torch.inference_mode():
        features = [network.extract(torch.from_numpy(c[None]), [layer])[layer][0].numpy()
                    for c in clips]
    return np.array(starts), np.stack(features)


def reference_descriptor(network, path, layer="fc6"):
    _, features = reference_clip_features(network, path, layer)
    mean = features.astype(np.float64).mean(0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)
