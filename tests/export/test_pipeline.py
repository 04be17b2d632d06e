"""Extraction with ten crops at a target frame rate, then export: the UCF-Crime / RTFM
recipe of the README end to end, on a tiny stand-in network."""

import csv

import numpy as np
from click.testing import CliRunner

from c3d_extract.cli.export import cli
from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import extract
from c3d_extract.store.read import read_clip_features
from tests.support.tiny_network import tiny_model
from tests.support.videos import write_video


def _extract(folder, out, crops):
    options = ExtractOptions(layers=("fc6",), per_clip=True, crops=crops, stride=16,
                             target_fps=30.0, decoder="pyav", batch_size=4)
    summary = extract(str(folder), str(out), weights=tiny_model(), options=options)
    assert summary.complete and summary.n_failed == 0


def test_ten_crops_at_30_fps_export_as_rtfm_and_crop_files(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    # 50 frames at 25 fps: 2 s, resampled to 60 frames at 30 fps: 3 clips of 16 at stride 16.
    write_video(folder / "Abuse001_x264.mp4", 50, width=80, height=60, fps=25)
    single, ten = tmp_path / "one.h5", tmp_path / "ten.h5"
    _extract(folder, single, 1)
    _extract(folder, ten, 10)
    _, starts, one_crop = read_clip_features(str(single), "fc6")
    assert list(starts) == [0, 16, 32]

    rtfm = tmp_path / "rtfm"
    result = CliRunner().invoke(cli, [str(ten), "--format", "rtfm", "-o", str(rtfm)])
    assert result.exit_code == 0, result.output
    array = np.load(rtfm / "Abuse001_x264.npy")
    assert array.shape == (3, 10, one_crop.shape[1])
    assert np.array_equal(array[:, 0], one_crop)  # the centre crop is the single-crop run
    listed = (rtfm / "rtfm.list").read_text().split()
    assert listed == [str((rtfm / "Abuse001_x264.npy").resolve())]
    with open(rtfm / "index.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["fps"]) == 30.0 and int(row["frames"]) == 60 and int(row["clips"]) == 3

    files = tmp_path / "files"
    result = CliRunner().invoke(cli, [str(ten), "--format", "npy", "--crop-files",
                                      "-o", str(files)])
    assert result.exit_code == 0, result.output
    for k in range(10):
        assert np.array_equal(np.load(files / f"Abuse001_x264__{k}.npy"), array[:, k])
