"""``c3d-export``'s files against the code of the pipelines that read them.

Sultani et al. and RTFM publish no licence: their rules are re-implemented here, line by
line from the files and commits cited, written independently of ``c3d_extract.export``.
ekosman's repository is MIT: its ``to_segments``, ``FeaturesWriter``, ``read_features``
and annotation reader are vendored verbatim in ``tests/data/ekosman``.
"""

import glob
import importlib.util
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from c3d_extract.export import ExportOptions, export_features
from tests.support.export_support import DIM, clip_features, index_rows, write_store
from tests.support.paths import DATA

CLIP_COUNTS = (1, 31, 32, 33, 200)
IDS = {n: f"{'Normal_Videos' if n == 33 else 'Abuse'}/{'Normal_Videos' if n == 33 else 'Abuse'}"
          f"{n:03d}_x264.mp4" for n in CLIP_COUNTS}


def _ekosman():
    path = DATA / "ekosman" / "ekosman_reference.py"
    spec = importlib.util.spec_from_file_location("ekosman_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Per-clip fc6 of videos of 1, 31, 32, 33 and 200 clips (non-overlapping 16-frame)."""
    folder = tmp_path_factory.mktemp("store")
    videos = {IDS[n]: clip_features(n, seed=n) for n in CLIP_COUNTS}
    path = folder / "feats.h5"
    write_store(path, videos)
    return path, videos


# ------------------------------------------------------------- Sultani et al., CVPR 2018
# WaqasSultani/AnomalyDetectionCVPR2018 @ 8aa957cdaa7eac821e07115fe63920c3b07da59d

def matlab_round_half_away(value: Fraction) -> int:
    """MATLAB ``round`` of a positive number: x.5 goes up."""
    return math.floor(value + Fraction(1, 2))


def sultani_reference(feature_vect: np.ndarray) -> str:
    """Save_C3DFeatures_32Segments.m, lines 76-129, in Python (1-based like the script)."""
    n_files = len(feature_vect)                                   # length(AllFiles)
    feature_vect = feature_vect.astype(np.float64)                # Feature_vect=zeros(..) is double
    # thirty2_shots= round(linspace(1,length(AllFiles),33)); linspace divides by 32: exact
    thirty2_shots = [matlab_round_half_away(1 + Fraction(k * (n_files - 1), 32))
                     for k in range(33)]
    segments_features = []
    for ishots in range(1, len(thirty2_shots)):                  # for ishots=1:length(..)-1
        ss = thirty2_shots[ishots - 1]                           # ss=thirty2_shots(ishots)
        ee = thirty2_shots[ishots] - 1                           # ee=thirty2_shots(ishots+1)-1
        if ishots == len(thirty2_shots):                         # never true inside the loop
            ee = thirty2_shots[ishots]
        if ss == ee:
            temp_vect = feature_vect[ss - 1:ee, :][0]             # Feature_vect(ss:ee,:)
        elif ee < ss:
            temp_vect = feature_vect[ss - 1, :]                   # Feature_vect(ss,:)
        else:
            block = feature_vect[ss - 1:ee, :]                    # mean(Feature_vect(ss:ee,:))
            temp_vect = block.sum(axis=0) / block.shape[0]
        temp_vect = temp_vect / math.sqrt(float(np.dot(temp_vect, temp_vect)))  # /norm()
        segments_features.append(temp_vect)
    # fprintf (fid1,'%f ',feat_text); fprintf (fid1,'\n');
    return "".join("".join(format(v, ".6f") + " " for v in row) + "\n"
                   for row in segments_features)


def sultani_reader(video_path: str) -> np.ndarray:
    """Test_Anomaly_Detector_public.py, load_dataset_One_Video_Features (lines 43-60)."""
    with open(video_path, "r") as f:
        words = f.read().split()
    num_feat = len(words) // 4096
    rows = [np.float32(words[feat * 4096:feat * 4096 + 4096]) for feat in range(num_feat)]
    return np.vstack(rows)


def test_sultani_equals_the_matlab_script_and_its_reader_reads_it(store, tmp_path):
    path, videos = store
    summary = export_features(str(path), str(tmp_path), ExportOptions(format="sultani"))
    assert summary.written == len(CLIP_COUNTS) and not summary.failures
    # TrainingAnomalyDetector_public.py globs '*_C.txt' in one folder
    found = sorted(os.path.basename(f) for f in glob.glob(os.path.join(tmp_path, "*_C.txt")))
    assert found == sorted(f"{Path(i).stem}_C.txt" for i in videos)
    for video_id, features in videos.items():
        ours = (tmp_path / f"{Path(video_id).stem}_C.txt").read_text()
        reference = sultani_reference(features)
        assert ours.count("\n") == 32 and all(line.endswith(" ") for line in ours.splitlines())
        assert all(len(word.split(".")[1]) == 6 for word in ours.split())
        ours_values = np.array(ours.split(), dtype=np.float64)
        reference_values = np.array(reference.split(), dtype=np.float64)
        np.testing.assert_allclose(ours_values, reference_values, rtol=0, atol=1.01e-6)
        loaded = sultani_reader(str(tmp_path / f"{Path(video_id).stem}_C.txt"))
        assert loaded.shape == (32, DIM) and loaded.dtype == np.float32


def test_sultani_leaves_the_last_clip_out(tmp_path):
    """Only the last clip differs: the script's segments never read it (N = 33)."""
    base = clip_features(33, seed=5)
    changed = base.copy()
    changed[-1] *= 7
    write_store(tmp_path / "a.h5", {"v.mp4": base})
    write_store(tmp_path / "b.h5", {"v.mp4": changed})
    export_features(str(tmp_path / "a.h5"), str(tmp_path / "a"), ExportOptions(format="sultani"))
    export_features(str(tmp_path / "b.h5"), str(tmp_path / "b"), ExportOptions(format="sultani"))
    assert (tmp_path / "a" / "v_C.txt").read_text() == (tmp_path / "b" / "v_C.txt").read_text()


def test_sultani_index_has_the_scripts_segments(store, tmp_path):
    path, videos = store
    export_features(str(path), str(tmp_path), ExportOptions(format="sultani"))
    rows = {row["id"]: row for row in index_rows(tmp_path)}
    n = 200
    row = rows[IDS[n]]
    assert row["output"] == f"{Path(IDS[n]).stem}_C.txt" and row["clips"] == str(n)
    assert row["frames"] == str((n - 1) * 16 + 16 + 3) and float(row["fps"]) == 30.0
    shots = [matlab_round_half_away(1 + Fraction(k * (n - 1), 32)) for k in range(33)]
    expected = []
    for ss, nxt in zip(shots[:-1], shots[1:]):
        ee = max(nxt - 1, ss)
        expected.append(f"{(ss - 1) * 16}-{(ee - 1) * 16 + 15}")
    assert row["segments"].split() == expected
    # b(17) = round(100.5) = 101 in MATLAB (numpy's round gives 100): clips 101..106
    assert expected[16] == f"{100 * 16}-{105 * 16 + 15}"


# ------------------------------------------------------------- ekosman (MIT, vendored)

def test_ekosman_equals_its_features_writer_and_its_loader_reads_it(tmp_path):
    """512-d features (its loader takes any size; its writer is slow on 4096-d ones)."""
    ekosman = _ekosman()
    videos = {IDS[n]: clip_features(n, seed=n, dim=512) for n in CLIP_COUNTS}
    path = tmp_path / "feats.h5"
    write_store(path, videos, dim=512)
    out = tmp_path / "ours"
    summary = export_features(str(path), str(out), ExportOptions(format="ekosman"))
    assert summary.written == len(CLIP_COUNTS) and not summary.failures
    for video_id, features in videos.items():
        folder, name = video_id.split("/")
        reference_dir = str(tmp_path / "theirs" / folder)
        writer = ekosman.FeaturesWriter(num_videos=1)
        writer._init_video(name.split(".")[0], reference_dir)
        for idx, feature in enumerate(features):
            writer.store(feature, idx)
        writer.dump(reference_dir)
        ours = (out / folder / f"{name.split('.')[0]}.txt").read_bytes()
        assert ours == Path(writer.path).read_bytes(), video_id
    annotation = (out / "Train_Annotation.txt").read_text().splitlines()
    assert sorted(annotation) == sorted(
        f"{i} {(len(f) - 1) * 16 + 16 + 3}" for i, f in videos.items())
    normal, anomaly = ekosman._get_features_list(str(out), str(out / "Train_Annotation.txt"))
    assert len(normal) == 1 and len(anomaly) == len(CLIP_COUNTS) - 1
    stacked = [ekosman.read_features(f"{p}.txt") for p in normal + anomaly]
    assert all(tuple(t.shape) == (32, 512) for t in stacked)


def test_ekosman_refuses_a_video_with_a_zero_segment_by_name(tmp_path):
    ekosman = _ekosman()
    zero = np.zeros((40, 8), np.float32)
    write_store(tmp_path / "f.h5", {"A/zero.mp4": zero, "A/fine.mp4": clip_features(40, 1, 8)},
                dim=8)
    summary = export_features(str(tmp_path / "f.h5"), str(tmp_path / "out"),
                              ExportOptions(format="ekosman"))
    assert [video for video, _ in summary.failures] == ["A/zero.mp4"]
    assert "A/zero.mp4" in summary.failures[0][1]
    assert not (tmp_path / "out" / "A" / "zero.txt").exists()
    assert (tmp_path / "out" / "Train_Annotation.txt").read_text().startswith("A/fine.mp4 ")
    # why: their to_segments keeps the NaN rows (NaN != 0), which their loader would stack
    with np.errstate(invalid="ignore"):
        segments = ekosman.to_segments(zero)
    assert len(segments) == 32 and np.isnan(segments).all()


# ------------------------------------------------------------- RTFM
# tianyu0207/RTFM @ cf938f4c38c908ba19936ecfc60d54de7da0d8b9

def rtfm_process_feat(feat: np.ndarray, length: int) -> np.ndarray:
    """utils.py, process_feat (lines 33-42), without numpy's linspace."""
    new_feat = np.zeros((length, feat.shape[1]), np.float32)
    # r = np.linspace(0, len(feat), length+1, dtype=np.int): i*len/length, truncated
    r = [int(Fraction(i * len(feat), length)) for i in range(length + 1)]
    for i in range(length):
        if r[i] != r[i + 1]:
            new_feat[i, :] = np.mean(feat[r[i]:r[i + 1], :], 0)
        else:
            new_feat[i, :] = feat[r[i], :]
    return new_feat


class RtfmDataset:
    """dataset.py, Dataset (lines 9-70) for UCF, with the split line as a parameter (810)."""

    def __init__(self, rgb_list_file, is_normal, n_anomalous):
        self.list = list(open(rgb_list_file))
        self.list = self.list[n_anomalous:] if is_normal else self.list[:n_anomalous]

    def __getitem__(self, index):
        features = np.load(self.list[index].strip("\n"), allow_pickle=True)
        features = np.array(features, dtype=np.float32)
        features = features.transpose(1, 0, 2)  # [10, T, F]
        divided = [rtfm_process_feat(feature, 32) for feature in features]
        return np.array(divided, dtype=np.float32)

    def __len__(self):
        return len(self.list)


def test_rtfm_dataset_reads_our_list_and_arrays(store, tmp_path, monkeypatch):
    path, videos = store
    out = tmp_path / "features"
    summary = export_features(str(path), str(out), ExportOptions(format="rtfm"))
    assert summary.written == len(CLIP_COUNTS)
    lines = (out / "rtfm.list").read_text().splitlines()
    assert all(os.path.isabs(line) for line in lines)
    assert ["Normal" in line for line in lines] == [False] * 4 + [True]
    monkeypatch.chdir(tmp_path)  # RTFM reads its list from its own working folder
    os.makedirs("list")
    os.replace(out / "rtfm.list", "list/ucf-i3d.list")
    anomalous = RtfmDataset("list/ucf-i3d.list", is_normal=False, n_anomalous=4)
    normal = RtfmDataset("list/ucf-i3d.list", is_normal=True, n_anomalous=4)
    assert len(anomalous) == 4 and len(normal) == 1
    for dataset in (anomalous, normal):
        for index in range(len(dataset)):
            video_id = next(i for i in videos
                            if dataset.list[index].strip().endswith(i.replace(".mp4", ".npy")))
            raw = np.load(dataset.list[index].strip())
            assert raw.shape == (len(videos[video_id]), 1, DIM) and raw.dtype == np.float32
            np.testing.assert_array_equal(raw[:, 0], videos[video_id])
            item = dataset[index]
            assert item.shape == (1, 32, DIM)
            np.testing.assert_allclose(item[0], rtfm_process_feat(videos[video_id], 32),
                                       rtol=0, atol=0)


def test_rtfm_index_lists_process_feat_segments(store, tmp_path):
    path, _ = store
    export_features(str(path), str(tmp_path), ExportOptions(format="rtfm"))
    rows = {row["id"]: row for row in index_rows(tmp_path)}
    n = 31
    r = [int(Fraction(i * n, 32)) for i in range(33)]
    expected = [f"{r[i] * 16}-{(max(r[i + 1] - 1, r[i])) * 16 + 15}" for i in range(32)]
    assert rows[IDS[n]]["segments"].split() == expected


@pytest.mark.parametrize("n", CLIP_COUNTS + (2, 17))
def test_ekosman_ranges_are_those_of_its_to_segments(n):
    """On the identity matrix each of to_segments' rows is non-zero exactly on its clips."""
    from c3d_extract.export.segments import ekosman_clip_ranges

    segments = np.array(_ekosman().to_segments(np.eye(n, dtype=np.float32)))
    theirs = [(int(np.flatnonzero(row)[0]), int(np.flatnonzero(row)[-1])) for row in segments]
    assert ekosman_clip_ranges(n) == theirs
