"""``c3d-export``: files, crops, reruns, the index, errors and the command line."""

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from c3d_extract.cli.export import cli
from c3d_extract.errors import ExportError
from c3d_extract.export import ExportOptions, export_features
from c3d_extract.export.crops import EXPORT_ORDER, canonical_name, parse_crop_order
from c3d_extract.export.segments import (ekosman_clip_ranges, matlab_round, rtfm_clip_ranges,
                                         sultani_clip_ranges)
from tests.support.export_support import clip_features, index_rows, make_crops, write_store

DIM = 8
TORCHVISION_TEN_CROP = ("top_left,top_right,bottom_left,bottom_right,center,"
                        "flipped top_left,flipped top_right,flipped bottom_left,"
                        "flipped bottom_right,flipped center")


def small_store(path, **kwargs):
    videos = {"Abuse/Abuse001_x264.mp4": clip_features(5, 1, DIM),
              "Normal/Normal_Videos001_x264.avi": clip_features(3, 2, DIM),
              "top.mp4": clip_features(1, 3, DIM)}
    write_store(path, videos, dim=DIM, **kwargs)
    return videos


# ------------------------------------------------------------------ segment arithmetic

@pytest.mark.parametrize("n", [1, 2, 17, 31, 32, 33, 49, 200])
def test_every_rule_covers_clips_in_order(n):
    for ranges in (sultani_clip_ranges(n), ekosman_clip_ranges(n), rtfm_clip_ranges(n)):
        assert len(ranges) == 32
        assert all(0 <= first <= last < n for first, last in ranges)
        assert all(a[0] <= b[0] for a, b in zip(ranges, ranges[1:]))


def test_matlab_round_goes_away_from_zero_numpy_to_even():
    values = np.array([0.5, 1.5, 2.5, -2.5, 2.4999])
    assert matlab_round(values).tolist() == [1, 2, 3, -3, 2]
    assert np.round(values).tolist() == [0.0, 2.0, 2.0, -2.0, 2.0]


def test_sultani_halves_round_up():
    # N = 17: linspace(1, 17, 33) = 1, 1.5, 2, ...; round(1.5) = 2 so segment 1 is clip 1
    # alone (b(2) - 1 = 1) and segment 2 clip 2 (b(3) = 2 makes 2..1 empty).
    ranges = sultani_clip_ranges(17)
    assert ranges[:4] == [(0, 0), (1, 1), (1, 1), (2, 2)]
    # b(32) = round(16.5) = 17 = b(33): the range 17..16 is empty, so clip 17 alone
    assert ranges[-1] == (16, 16)
    # N = 33: b = 1..33, so the last segment is clip 32 and clip 33 is never read
    assert sultani_clip_ranges(33)[-1] == (31, 31)


def test_sultani_one_clip_is_every_segment():
    assert sultani_clip_ranges(1) == [(0, 0)] * 32
    assert ekosman_clip_ranges(1) == [(0, 0)] * 32 and rtfm_clip_ranges(1) == [(0, 0)] * 32


# ------------------------------------------------------------------ crop names

def test_crop_names():
    assert canonical_name("Top-Left (flipped)") == "mirrored_top_left"
    assert canonical_name("centre") == "center"
    assert canonical_name("hflip_br") == "mirrored_bottom_right"
    assert parse_crop_order('["c", "tl", "tr", "bl", "br"]') == EXPORT_ORDER[:5]
    with pytest.raises(ExportError, match="unknown crop"):
        canonical_name("left")
    with pytest.raises(ExportError, match="twice"):
        parse_crop_order("center,centre")


# ------------------------------------------------------------------ npy

def test_npy_keeps_subfolders_and_rows(tmp_path):
    videos = small_store(tmp_path / "f.h5")
    out = tmp_path / "out"
    summary = export_features(str(tmp_path / "f.h5"), str(out), ExportOptions(format="npy"))
    assert summary.written == 3 and summary.exported == 3
    for video_id, features in videos.items():
        array = np.load(out / (os.path.splitext(video_id)[0] + ".npy"))
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, features)
    rows = {row["id"]: row for row in index_rows(out)}
    assert rows["Abuse/Abuse001_x264.mp4"]["output"] == "Abuse/Abuse001_x264.npy"
    assert rows["Abuse/Abuse001_x264.mp4"]["segments"].split() == [
        f"{16 * i}-{16 * i + 15}" for i in range(5)]
    assert rows["top.mp4"]["frames"] == "19" and rows["top.mp4"]["clips"] == "1"
    assert not [name for _, _, names in os.walk(out) for name in names if ".tmp-" in name]


def test_rerun_skips_finished_files_and_writes_missing_ones(tmp_path):
    small_store(tmp_path / "f.h5")
    out = tmp_path / "out"
    export_features(str(tmp_path / "f.h5"), str(out), ExportOptions(format="npy"))
    kept = out / "Abuse" / "Abuse001_x264.npy"
    os.utime(kept, (1, 1))
    os.remove(out / "top.npy")
    summary = export_features(str(tmp_path / "f.h5"), str(out), ExportOptions(format="npy"))
    assert (summary.written, summary.already_there) == (1, 2)
    assert os.stat(kept).st_mtime == 1 and (out / "top.npy").exists()
    assert len(index_rows(out)) == 3
    summary = export_features(str(tmp_path / "f.h5"), str(out),
                              ExportOptions(format="npy", overwrite=True))
    assert summary.written == 3 and os.stat(kept).st_mtime != 1


def test_failed_videos_are_left_out(tmp_path):
    write_store(tmp_path / "f.h5", {"a.mp4": clip_features(2, 1, DIM)}, dim=DIM,
                failed=["broken.mp4"])
    summary = export_features(str(tmp_path / "f.h5"), str(tmp_path / "out"),
                              ExportOptions(format="npy"))
    assert summary.without_features == ["broken.mp4"] and summary.written == 1
    assert [row["id"] for row in index_rows(tmp_path / "out")] == ["a.mp4"]


def test_clips_in_start_frame_order_whatever_the_file_order(tmp_path):
    features = clip_features(4, 9, DIM)
    write_store(tmp_path / "f.h5", {"a.mp4": features, "b.mp4": features[::-1].copy()},
                dim=DIM, shuffle_order=True)
    export_features(str(tmp_path / "f.h5"), str(tmp_path / "out"), ExportOptions(format="npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "a.npy"), features)


# ------------------------------------------------------------------ crops

def ten_crop_store(path, order=TORCHVISION_TEN_CROP):
    """A store of 10 crops whose crop k holds k + 100 * clip (easy to follow)."""
    small_store(path)
    n_clips = 5 + 3 + 1
    crops = np.zeros((n_clips, 10, DIM), np.float32)
    for clip in range(n_clips):
        for crop in range(10):
            crops[clip, crop] = 100 * clip + crop + 1
    make_crops(path, crops, order)
    return crops


def test_ten_crops_are_exported_in_the_deepmil_order(tmp_path):
    ten_crop_store(tmp_path / "f.h5")
    out = tmp_path / "out"
    export_features(str(tmp_path / "f.h5"), str(out), ExportOptions(format="npy"))
    array = np.load(out / "top.npy")
    assert array.shape == (1, 10, DIM)
    stored_order = [canonical_name(n) for n in TORCHVISION_TEN_CROP.split(",")]
    # top.mp4's one clip is the store's ninth (row 8): crop k holds 801 + k
    assert [array[0, k, 0] for k in range(10)] == [
        801 + stored_order.index(name) for name in EXPORT_ORDER]
    assert array[0, 0, 0] == 805  # the centre, stored fifth, is exported first


def test_crop_files_one_per_crop(tmp_path):
    ten_crop_store(tmp_path / "f.h5")
    out = tmp_path / "out"
    export_features(str(tmp_path / "f.h5"), str(out),
                    ExportOptions(format="npy", crop_files=True))
    whole = tmp_path / "whole"
    export_features(str(tmp_path / "f.h5"), str(whole), ExportOptions(format="npy"))
    array = np.load(whole / "Abuse" / "Abuse001_x264.npy")
    for k in range(10):
        crop = np.load(out / "Abuse" / f"Abuse001_x264__{k}.npy")
        assert crop.shape == (5, DIM)
        np.testing.assert_array_equal(crop, array[:, k])
    rows = [r for r in index_rows(out) if r["id"] == "top.mp4"]
    assert [r["crop"] for r in rows] == [str(k) for k in range(10)]


def test_without_crop_order_the_documented_order_is_assumed(tmp_path):
    crops = ten_crop_store(tmp_path / "f.h5", order=None)
    export_features(str(tmp_path / "f.h5"), str(tmp_path / "out"), ExportOptions(format="npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "top.npy"), crops[8:9])


def test_text_formats_and_rtfm_of_a_ten_crop_store(tmp_path):
    crops = ten_crop_store(tmp_path / "f.h5")
    summary = export_features(str(tmp_path / "f.h5"), str(tmp_path / "s"),
                              ExportOptions(format="sultani"))
    assert any("centre crop" in w for w in summary.warnings)
    # the centre crop, stored fifth, alone in a single-crop store: the same files
    centre = {"Abuse/Abuse001_x264.mp4": crops[0:5, 4], "Normal/Normal_Videos001_x264.avi":
              crops[5:8, 4], "top.mp4": crops[8:9, 4]}
    write_store(tmp_path / "single.h5", centre, dim=DIM)
    export_features(str(tmp_path / "single.h5"), str(tmp_path / "s1"),
                    ExportOptions(format="sultani"))
    for name in ("Abuse001_x264_C.txt", "top_C.txt"):
        assert (tmp_path / "s" / name).read_text() == (tmp_path / "s1" / name).read_text()
    export_features(str(tmp_path / "f.h5"), str(tmp_path / "r"), ExportOptions(format="rtfm"))
    assert np.load(tmp_path / "r" / "Abuse" / "Abuse001_x264.npy").shape == (5, 10, DIM)


def test_crop_files_needs_crops_and_npy(tmp_path):
    small_store(tmp_path / "f.h5")
    with pytest.raises(ExportError, match="--crops 5 or --crops 10"):
        export_features(str(tmp_path / "f.h5"), str(tmp_path / "o"),
                        ExportOptions(format="npy", crop_files=True))
    with pytest.raises(ExportError, match="--format npy"):
        export_features(str(tmp_path / "f.h5"), str(tmp_path / "o"),
                        ExportOptions(format="sultani", crop_files=True))


# ------------------------------------------------------------------ errors

def test_a_file_without_per_clip_features_names_the_option(tmp_path):
    small_store(tmp_path / "f.h5", per_clip=False)
    with pytest.raises(ExportError, match="--per-clip"):
        export_features(str(tmp_path / "f.h5"), str(tmp_path / "o"), ExportOptions(format="npy"))
    assert not (tmp_path / "o").exists()


def test_rtfm_needs_non_overlapping_clips(tmp_path):
    small_store(tmp_path / "f.h5", stride=8)
    with pytest.raises(ExportError, match="--stride 16"):
        export_features(str(tmp_path / "f.h5"), str(tmp_path / "o"), ExportOptions(format="rtfm"))


def test_rtfm_list_puts_anomalous_videos_first(tmp_path):
    small_store(tmp_path / "f.h5")
    summary = export_features(str(tmp_path / "f.h5"), str(tmp_path / "o"),
                              ExportOptions(format="rtfm"))
    lines = (tmp_path / "o" / "rtfm.list").read_text().splitlines()
    assert lines == [str(tmp_path / "o" / "Abuse" / "Abuse001_x264.npy"),
                     str(tmp_path / "o" / "top.npy"),
                     str(tmp_path / "o" / "Normal" / "Normal_Videos001_x264.npy")]
    assert "2 anomalous videos first" in summary.notes[0]


def test_two_videos_one_file_is_refused_naming_both(tmp_path):
    write_store(tmp_path / "f.h5", {"a/v.mp4": clip_features(2, 1, DIM),
                                    "b/v.avi": clip_features(2, 2, DIM)}, dim=DIM)
    with pytest.raises(ExportError, match="'a/v.mp4' and 'b/v.avi' both become v_C.txt"):
        export_features(str(tmp_path / "f.h5"), str(tmp_path / "o"),
                        ExportOptions(format="sultani"))


def test_sultani_refuses_a_zero_segment_by_name(tmp_path):
    write_store(tmp_path / "f.h5", {"z.mp4": np.zeros((3, DIM), np.float32),
                                    "ok.mp4": clip_features(3, 1, DIM)}, dim=DIM)
    summary = export_features(str(tmp_path / "f.h5"), str(tmp_path / "o"),
                              ExportOptions(format="sultani"))
    assert [v for v, _ in summary.failures] == ["z.mp4"]
    assert "'z.mp4'" in summary.failures[0][1] and (tmp_path / "o" / "ok_C.txt").exists()


def test_ids_outside_the_folder_are_refused(tmp_path):
    write_store(tmp_path / "f.h5", {"../up.mp4": clip_features(2, 1, DIM)}, dim=DIM)
    with pytest.raises(ExportError, match="not a relative path"):
        export_features(str(tmp_path / "f.h5"), str(tmp_path / "o"), ExportOptions(format="npy"))


def test_ekosman_refuses_a_dotted_class_folder(tmp_path):
    write_store(tmp_path / "f.h5", {"v1.0/a.mp4": clip_features(2, 1, DIM),
                                    "C/b.mp4": clip_features(2, 2, DIM)}, dim=DIM)
    summary = export_features(str(tmp_path / "f.h5"), str(tmp_path / "o"),
                              ExportOptions(format="ekosman"))
    assert [v for v, _ in summary.failures] == ["v1.0/a.mp4"]
    # 2 clips: 16 + 16 + 3 frames
    assert (tmp_path / "o" / "Train_Annotation.txt").read_text() == "C/b.mp4 35\n"


# ------------------------------------------------------------------ command line

def test_cli_exports_and_reports(tmp_path):
    small_store(tmp_path / "f.h5")
    result = CliRunner().invoke(cli, [str(tmp_path / "f.h5"), "--format", "ekosman",
                                      "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "Abuse" / "Abuse001_x264.txt").exists()


def test_cli_exit_codes(tmp_path):
    small_store(tmp_path / "noclips.h5", per_clip=False)
    runner = CliRunner()
    result = runner.invoke(cli, [str(tmp_path / "noclips.h5"), "--format", "npy",
                                 "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "--per-clip" in result.output
    assert "Traceback" not in result.output
    write_store(tmp_path / "z.h5", {"z.mp4": np.zeros((3, DIM), np.float32)}, dim=DIM)
    result = runner.invoke(cli, [str(tmp_path / "z.h5"), "--format", "sultani",
                                 "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and "refused: video 'z.mp4'" in result.output
    result = runner.invoke(cli, [str(tmp_path / "z.h5"), "--format", "csv",
                                 "-o", str(tmp_path / "o")])
    assert result.exit_code == 2


def test_c3d_extract_export_and_python_dash_m(tmp_path):
    small_store(tmp_path / "f.h5")
    result = subprocess.run([sys.executable, "-m", "c3d_extract", "export", str(tmp_path / "f.h5"),
                             "--format", "npy", "-o", str(tmp_path / "o"), "-q"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "top.npy").exists()
