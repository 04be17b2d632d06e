"""Real videos -> c3d-extract (random weights) -> c3d-svm / c3d-pca: above-chance motion classes.

Set ``C3D_EVAL_DOCS=docs/evaluation`` to copy the pictures this test draws into
that folder (the README's examples are made this way).
"""

import os
import re
import shutil
import subprocess
import sys
from itertools import combinations

import pytest
from click.testing import CliRunner

from c3d_extract.cli.pca import main as pca_main
from c3d_extract.cli.svm import main as svm_main
from c3d_extract.store.read import read_video_table
from tests.support.eval_helpers import MOTIONS, write_labels_csv, write_motion_video
from tests.support.paths import ROOT

VIDEOS_PER_CLASS = 4
REPO = str(ROOT)


def _run(group, args):
    result = CliRunner().invoke(group, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_motion_classes_from_real_videos(tmp_path):
    videos = tmp_path / "videos"
    for k, motion in enumerate(MOTIONS):
        (videos / motion).mkdir(parents=True)
        for i in range(VIDEOS_PER_CLASS):
            write_motion_video(str(videos / motion / f"{motion}_{i}.mp4"), motion, 100 * k + i)
    feats = str(tmp_path / "feats.h5")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "c3d_extract", str(videos), "-o", feats,
                    "--weights", "random", "--decoder", "pyav", "--layer", "fc6,fc7,pool5,prob",
                    "--quiet"], check=True, env=env, cwd=str(tmp_path), timeout=300)
    table = read_video_table(feats)
    assert len(table["id"]) == 3 * VIDEOS_PER_CLASS and set(table["status"]) == {"ok"}

    # the last video of each class is for testing; labels name videos by file name
    rows = [(f"{motion}_{i}", motion, "test" if i == VIDEOS_PER_CLASS - 1 else "train")
            for motion in MOTIONS for i in range(VIDEOS_PER_CLASS)]
    labels = write_labels_csv(str(tmp_path / "labels.csv"), rows)
    model = str(tmp_path / "model.skops")
    pictures = {name: str(tmp_path / f"{name}.png")
                for name in ("confusion", "compactness", "tsne", "roc")}

    _run(svm_main, ["train", feats, labels, "-o", model, "--C", "100"])
    output = _run(svm_main, ["eval", model, feats, labels, "--plot", pictures["confusion"]])
    accuracy = float(re.search(r"accuracy ([\d.]+)%", output).group(1)) / 100
    assert accuracy >= 2 / 3  # chance is 1/3

    output = _run(svm_main, ["cv", feats, labels, "--C", "100", "--folds", "4"])
    cv_accuracy = float(re.search(r"cross-validated accuracy ([\d.]+)%", output).group(1)) / 100
    assert cv_accuracy >= 0.6

    _run(pca_main, [feats, labels, "--dims", "2,4,8", "--C", "100",
                    "--plot", pictures["compactness"]])
    _run(pca_main, ["tsne", feats, labels, "-o", pictures["tsne"], "--perplexity", "3"])

    names = [f"{motion}_{i}" for motion in MOTIONS for i in range(VIDEOS_PER_CLASS)]
    pairs = [(a, b, int(a.split("_")[0] == b.split("_")[0]), n % 3 + 1)
             for n, (a, b) in enumerate(combinations(names, 2))]
    pairs_csv = write_labels_csv(str(tmp_path / "pairs.csv"), pairs,
                                 ("video_a", "video_b", "same", "fold"))
    output = _run(svm_main, ["pairs", feats, pairs_csv, "--plot", pictures["roc"]])
    assert "layers fc6, fc7, pool5, prob, 12 distances each (48 features)" in output

    for path in pictures.values():
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 5000
    target = os.environ.get("C3D_EVAL_DOCS")
    if target:
        os.makedirs(target, exist_ok=True)
        for name, path in pictures.items():
            shutil.copyfile(path, os.path.join(target, f"{name}.png"))
