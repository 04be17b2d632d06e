"""Write tests/data/r2plus1d_18_torchvision_golden.npz with torchvision's own r2plus1d_18.

Run under a separate environment that has torchvision (it is not a dependency of the project):

    python3 -m venv ../tv-venv
    ../tv-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    ../tv-venv/bin/python scripts/make_r2plus1d_golden.py

It loads the seeded weights of ``tests/r2plus1d_reference.py`` (made from the tensor list, not
from any model) strictly into torchvision's model, runs the fixed input in eval mode and stores
the logits and the 512-d pooled features. ``tests/test_r2plus1d.py`` compares our module to them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.r2plus1d_reference import GOLDEN, golden_input, synthetic_state_dict  # noqa: E402


def main() -> None:
    import torchvision
    from torchvision.models.video import r2plus1d_18

    model = r2plus1d_18(num_classes=400)
    model.load_state_dict(synthetic_state_dict(), strict=True)
    model.eval()
    pooled = {}
    model.avgpool.register_forward_hook(lambda m, i, o: pooled.setdefault("x", o.flatten(1)))
    with torch.no_grad():
        logits = model(golden_input())
    np.savez_compressed(GOLDEN, logits=logits.numpy(), avgpool=pooled["x"].numpy(),
                        torchvision=np.array(torchvision.__version__),
                        torch=np.array(torch.__version__))
    print(f"wrote {GOLDEN} with torchvision {torchvision.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
