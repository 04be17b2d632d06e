"""Compare a feature file of R(2+1)D-18 with torchvision's own pipeline on the same videos.

Run under a separate environment with torchvision, PyAV and h5py (see
``scripts/make_r2plus1d_golden.py``), after ``c3d-extract`` with the same weights:

    c3d-extract videos/ -o r21d.h5 --weights r2plus1d_18.pth --precision fp32 --backend torch \\
        --decoder pyav
    ../tv-venv/bin/python scripts/compare_with_torchvision.py r2plus1d_18.pth videos/ r21d.h5

torchvision's side: PyAV RGB frames, clips of 16 frames at stride 8 (the clips the file's
``clip_len`` and ``stride`` attributes name), ``R2Plus1D_18_Weights.KINETICS400_V1.transforms()``,
``r2plus1d_18`` with the weights, the mean of the clips' pooled features. Printed per video:
cosine to the file's row, cosine after subtracting each side's mean over the videos (features
of one network on different videos are nearly collinear, so the raw cosine hides errors) and
the relative L2 error; the top Kinetics-400 class of the mean clip probabilities. Exit status
1 when a cosine is below --min-cosine or a centred one below --min-centred.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def torchvision_features(weights: str, paths, clip_len: int, stride: int):
    import av
    import torch
    from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18

    state = torch.load(weights, map_location="cpu", weights_only=True)
    model = r2plus1d_18(num_classes=int(state["fc.weight"].shape[0]))
    model.load_state_dict(state, strict=True)
    model.eval()
    pooled = {}
    model.avgpool.register_forward_hook(lambda m, i, o: pooled.__setitem__("x", o.flatten(1)))
    transform = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    for path in paths:
        with av.open(path) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # as torchvision's readers give
        features, probabilities = [], []
        with torch.no_grad():
            for start in range(0, len(frames) - clip_len + 1, stride):
                logits = model(transform(video[start:start + clip_len])[None])
                features.append(pooled["x"][0].double().numpy())
                probabilities.append(torch.softmax(logits.double(), 1)[0].numpy())
        yield np.mean(features, 0), np.mean(probabilities, 0)


def main() -> int:
    import h5py
    from torchvision.models._meta import _KINETICS400_CATEGORIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="the torchvision-format R(2+1)D-18 .pth")
    parser.add_argument("videos", help="the folder c3d-extract read")
    parser.add_argument("features", help="the HDF5 file c3d-extract wrote")
    parser.add_argument("--min-cosine", type=float, default=0.99999)
    parser.add_argument("--min-centred", type=float, default=0.9999)
    args = parser.parse_args()

    with h5py.File(args.features, "r") as handle:
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in handle["videos/id"][:]]
        ours = handle["features/avgpool"][:].astype(np.float64)
        clip_len, stride = int(handle.attrs["clip_len"]), int(handle.attrs["stride"])
        described = {k: handle.attrs.get(k) for k in ("precision", "crop_rule", "resize_method")}
    print(f"{args.features}: {described}")
    paths = [os.path.join(args.videos, name) for name in ids]
    results = list(torchvision_features(args.weights, paths, clip_len, stride))
    theirs = np.stack([features for features, _ in results])
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    cosine = (ours * theirs).sum(1)
    centred_ours, centred_theirs = ours - ours.mean(0), theirs - theirs.mean(0)
    centred = (centred_ours * centred_theirs).sum(1) / np.linalg.norm(centred_ours, axis=1) \
        / np.linalg.norm(centred_theirs, axis=1)
    relative = np.linalg.norm(ours - theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    for i, name in enumerate(ids):
        top = int(results[i][1].argmax())
        label = _KINETICS400_CATEGORIES[top] if len(results[i][1]) == 400 else f"class {top}"
        print(f"{name:32s} 1 - cosine {1 - cosine[i]:+.1e}  1 - centred {1 - centred[i]:+.1e}  "
              f"rel. L2 {relative[i]:.1e}  torchvision's top class {top} ({label})")
    ok = cosine.min() >= args.min_cosine and centred.min() >= args.min_centred
    print(f"min cosine {cosine.min():.8f}, min centred {centred.min():.8f}: "
          f"{'ok' if ok else 'BELOW the thresholds'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
