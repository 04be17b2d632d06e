"""Training datasets: the four kinds read from hand-written split files, split hygiene, carving."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from c3d_extract.errors import DatasetError, SplitOverlapError, UsageError
from c3d_extract.train.datasets import DatasetSplits, Sample, load_dataset, split_by_group
from c3d_extract.train.videos import resolve_video
from c3d_extract.video.frame_folders import is_frame_folder, list_frames


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")  # the parsers only need the file to exist
    return path


def names(samples, root):
    return [os.path.relpath(s.path, root).replace(os.sep, "/") for s in samples]


# ---------------------------------------------------------------- UCF101

UCF_VIDEOS = [
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi",
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi",
    "Archery/v_Archery_g01_c01.avi", "Archery/v_Archery_g08_c01.avi",
    "Archery/v_Archery_g09_c01.avi", "Archery/v_Archery_g01_c02.avi",
]


def ucf(tmp_path: Path, train: str, test: str, class_ind: str = "1 Archery\n2 ApplyEyeMakeup\n",
        splits_name: str = "ucfTrainTestlist") -> Path:
    root = tmp_path / "UCF-101"
    for video in UCF_VIDEOS:
        touch(root / video)
    splits = tmp_path / splits_name
    splits.mkdir(exist_ok=True)
    (splits / "classInd.txt").write_text(class_ind)
    (splits / "trainlist01.txt").write_text(train)
    (splits / "testlist01.txt").write_text(test)
    return root


GOOD_TRAIN = ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n"
              "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi 2\n"
              "Archery/v_Archery_g08_c01.avi 1\n"
              "Archery/v_Archery_g09_c01.avi 1\n")
GOOD_TEST = ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
             "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi\n"
             "Archery/v_Archery_g01_c01.avi\n")


def test_ucf101_lists_classes_labels_and_groups(tmp_path):
    root = ucf(tmp_path, GOOD_TRAIN, GOOD_TEST)
    data = load_dataset("ucf101", str(root), val_fraction=0)
    assert data.classes == ("Archery", "ApplyEyeMakeup")  # classInd.txt order, not sorted
    assert names(data.train, root) == [line.split()[0] for line in GOOD_TRAIN.splitlines()]
    assert [s.label for s in data.train] == [1, 1, 0, 0]
    assert [s.group for s in data.train] == ["ApplyEyeMakeup_g08", "ApplyEyeMakeup_g08",
                                             "Archery_g08", "Archery_g09"]
    assert names(data.test, root) == GOOD_TEST.split()
    assert [s.label for s in data.test] == [1, 1, 0]
    assert all(os.path.isabs(s.path) for s in data.train + data.test)
    assert data.val == ()
    assert data.splits_dir == str(tmp_path / "ucfTrainTestlist")
    assert any(str(tmp_path / "ucfTrainTestlist") in note for note in data.notes)


def test_ucf101_split_folder_inside_root_or_given(tmp_path):
    root = ucf(tmp_path, GOOD_TRAIN, GOOD_TEST, splits_name="UCF-101/ucfTrainTestlist")
    assert load_dataset("ucf101", str(root)).splits_dir == str(root / "ucfTrainTestlist")
    other = tmp_path / "elsewhere"
    (root / "ucfTrainTestlist").rename(other)
    with pytest.raises(DatasetError, match="ucfTrainTestlist"):
        load_dataset("ucf101", str(root))
    assert load_dataset("ucf101", str(root), splits_dir=str(other)).splits_dir == str(other)


def test_ucf101_same_group_number_in_two_classes_is_no_overlap(tmp_path):
    # g08 trains for both classes here; g01 of Archery is a different group from g01 of
    # ApplyEyeMakeup. Moving Archery_g08 to the test list makes the lists share a group.
    root = ucf(tmp_path, GOOD_TRAIN, GOOD_TEST)
    load_dataset("ucf101", str(root))
    ucf(tmp_path, GOOD_TRAIN.replace("Archery/v_Archery_g08_c01.avi 1\n", ""),
        GOOD_TEST + "Archery/v_Archery_g08_c01.avi\n")
    load_dataset("ucf101", str(root))


def test_ucf101_group_overlap_refused_with_the_group_named(tmp_path):
    moved = "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi"
    train = GOOD_TRAIN.replace(f"{moved} 2\n", "") + "Archery/v_Archery_g01_c02.avi 1\n"
    root = ucf(tmp_path, train, GOOD_TEST + f"{moved}\n")
    with pytest.raises(SplitOverlapError) as caught:
        load_dataset("ucf101", str(root))
    message = str(caught.value)
    assert "2 UCF101 groups" in message
    assert "'ApplyEyeMakeup_g08', 'Archery_g01'" in message
    assert "video" not in message.split("UCF101 groups")[1].split("with the test")[0]
    assert caught.value.groups == ["ApplyEyeMakeup_g08", "Archery_g01"]
    assert caught.value.videos == []
    allowed = load_dataset("ucf101", str(root), allow_overlap=True)
    assert any("overlap allowed" in note and "Archery_g01" in note
               for note in allowed.notes)


def test_same_video_in_train_and_test_refused(tmp_path):
    root = ucf(tmp_path, GOOD_TRAIN, GOOD_TEST + "Archery/v_Archery_g09_c01.avi\n")
    with pytest.raises(SplitOverlapError) as caught:
        load_dataset("ucf101", str(root))
    assert caught.value.videos == ["Archery/v_Archery_g09_c01.avi"]
    assert caught.value.groups == ["Archery_g09"]
    assert "1 video (" in str(caught.value)


@pytest.mark.parametrize("train, test, class_ind, expected", [
    (GOOD_TRAIN + "Archery/v_Archery_g09_c01.avi x\n", GOOD_TEST, None,
     r"trainlist01.txt line 5: class index 'x'"),
    (GOOD_TRAIN + "Archery/v_Archery_g09_c01.avi 3\n", GOOD_TEST, None,
     r"trainlist01.txt line 5: class index '3'"),
    (GOOD_TRAIN, GOOD_TEST + "Bowling/v_Bowling_g01_c01.avi\n", None,
     r"testlist01.txt line 4: the folder 'Bowling'"),
    (GOOD_TRAIN, GOOD_TEST, "1 Archery\nApplyEyeMakeup\n", r"classInd.txt line 2"),
    (GOOD_TRAIN, GOOD_TEST, "\n", r"classInd.txt lists no classes"),
    ("\n", GOOD_TEST, None, r"trainlist01.txt lists no videos"),
    (GOOD_TRAIN, "", None, r"testlist01.txt lists no videos"),
])
def test_ucf101_bad_split_files_name_file_and_line(tmp_path, train, test, class_ind, expected):
    root = ucf(tmp_path, train, test, *(() if class_ind is None else (class_ind,)))
    with pytest.raises(DatasetError, match=expected):
        load_dataset("ucf101", str(root))


def test_ucf101_missing_videos_named(tmp_path):
    root = ucf(tmp_path, GOOD_TRAIN, GOOD_TEST)
    for video in ("Archery/v_Archery_g09_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"):
        os.remove(root / video)
    with pytest.raises(DatasetError) as caught:
        load_dataset("ucf101", str(root))
    message = str(caught.value)
    assert message.startswith("2 videos listed in")
    assert "trainlist01.txt" in message
    assert "v_Archery_g09_c01.avi" in message and "v_ApplyEyeMakeup_g08_c01.avi" in message


def test_ucf101_parent_folder_given_by_mistake_is_hinted(tmp_path):
    ucf(tmp_path, GOOD_TRAIN, GOOD_TEST)
    with pytest.raises(DatasetError, match=r"is the dataset folder .*UCF-101"):
        load_dataset("ucf101", str(tmp_path), splits_dir=str(tmp_path / "ucfTrainTestlist"))


def test_frame_folder_stands_for_a_listed_video(tmp_path):
    root = ucf(tmp_path, GOOD_TRAIN, GOOD_TEST)
    os.remove(root / "Archery/v_Archery_g09_c01.avi")
    for index in (1, 2, 10):
        touch(root / "Archery/v_Archery_g09_c01" / f"img_{index:d}.jpg")
    data = load_dataset("ucf101", str(root))
    assert str(root / "Archery/v_Archery_g09_c01") in [s.path for s in data.train + data.val]


# ---------------------------------------------------------------- HMDB51

def test_hmdb51_train_test_unused(tmp_path):
    root = tmp_path / "hmdb51"
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text(
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
        "April_09_brush_hair_u_nm_np1_ba_goo_1.avi 1 \n"
        "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 2 \n"
        "brushing_hair_2_brush_hair_h_nm_np2_le_goo_0.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text(
        "Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi 2\n"
        "Cartwheel_cartwheel_f_cm_np1_ri_med_3.avi 1\n")
    (splits / "cartwheel_test_split2.txt").write_text(
        "Cartwheel_cartwheel_f_cm_np1_ri_med_3.avi 2\n")
    for action, video in [("brush_hair", "April_09_brush_hair_u_nm_np1_ba_goo_0.avi"),
                          ("brush_hair", "April_09_brush_hair_u_nm_np1_ba_goo_1.avi"),
                          ("brush_hair", "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi"),
                          ("cartwheel", "Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi"),
                          ("cartwheel", "Cartwheel_cartwheel_f_cm_np1_ri_med_3.avi")]:
        touch(root / action / video)
    (root / "stray").mkdir()
    data = load_dataset("hmdb51", str(root), val_fraction=0)
    assert data.classes == ("brush_hair", "cartwheel")
    assert names(data.train, root) == ["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
                                       "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1.avi",
                                       "cartwheel/Cartwheel_cartwheel_f_cm_np1_ri_med_3.avi"]
    assert [s.label for s in data.train] == [0, 0, 1]
    assert data.train[0].group == data.train[1].group  # two clips of one source video
    assert names(data.test, root) == [
        "brush_hair/Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi",
        "cartwheel/Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi"]
    assert any("1 video marked 0" in note for note in data.notes)
    assert any("stray" in note for note in data.notes)
    # The unused video need not exist; a listed training video must.
    os.remove(root / "cartwheel/Cartwheel_cartwheel_f_cm_np1_ri_med_3.avi")
    with pytest.raises(DatasetError, match="Cartwheel_cartwheel_f_cm_np1_ri_med_3.avi"):
        load_dataset("hmdb51", str(root))
    (splits / "cartwheel_test_split1.txt").write_text(
        "Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi\n")
    with pytest.raises(DatasetError, match=r"cartwheel_test_split1.txt line 1"):
        load_dataset("hmdb51", str(root))
    (splits / "cartwheel_test_split1.txt").write_text("")
    with pytest.raises(DatasetError, match=r"cartwheel_test_split1.txt lists no videos"):
        load_dataset("hmdb51", str(root))


# ---------------------------------------------------------------- Kinetics

def test_kinetics_csvs_per_class_and_flat_folders_missing_counted(tmp_path):
    root = tmp_path / "kinetics600"
    root.mkdir()
    (root / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaa_111,14,24,train\n"
        '"passing American football (in game)",bbb-2,0,10,train\n'
        "abseiling,ccc,7,17,train\n"
        "zumba,ddd,30,40,train\n")
    (root / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "zumba,eee,1,11,val\n"
        "abseiling,fff,100,110,val\n")
    touch(root / "train/abseiling/aaa_111_000014_000024.mp4")
    touch(root / "train/passing American football (in game)/bbb-2_000000_000010.mp4")
    touch(root / "zumba_flat" / "ddd_000030_000040.mp4")
    touch(root / "val" / "eee_000001_000011.mp4")
    touch(root / "val" / "fff_000100_000110.mp4")
    data = load_dataset("kinetics", str(root), val_fraction=0)
    assert data.classes == ("abseiling", "passing American football (in game)", "zumba")
    assert names(data.train, root) == [
        "train/abseiling/aaa_111_000014_000024.mp4",
        "train/passing American football (in game)/bbb-2_000000_000010.mp4",
        "zumba_flat/ddd_000030_000040.mp4"]
    assert [s.label for s in data.train] == [0, 1, 2]
    assert [s.group for s in data.train] == ["aaa_111", "bbb-2", "ddd"]
    assert names(data.test, root) == ["val/eee_000001_000011.mp4", "val/fff_000100_000110.mp4"]
    assert [s.label for s in data.test] == [2, 0]
    assert any(note.startswith("1 of 4 videos listed in train.csv are missing") and "ccc" in note
               for note in data.notes)
    (root / "val.csv").write_text("label,youtube_id,time_start,time_end\nyoga,eee,1,11\n")
    with pytest.raises(DatasetError, match=r"val.csv line 2: the label 'yoga'"):
        load_dataset("kinetics", str(root))
    (root / "val.csv").write_text("label,youtube_id,time_start,time_end\nzumba,eee,1.5,11\n")
    with pytest.raises(DatasetError, match=r"val.csv line 2: time_start"):
        load_dataset("kinetics", str(root))
    (root / "val.csv").write_text("label,youtube_id,time_end\nzumba,eee,11\n")
    with pytest.raises(DatasetError, match=r"val.csv line 1: .*lacks time_start"):
        load_dataset("kinetics", str(root))


# ---------------------------------------------------------------- class folders

def test_folder_dataset_split_by_group_seeded(tmp_path):
    root = tmp_path / "clips"
    for name in ("walk", "run"):
        for group in range(1, 6):
            for clip in (1, 2):
                touch(root / name / f"{name}_g{group:02d}_c{clip:02d}.mp4")
    for index in (1, 2, 3):
        touch(root / "run" / "extra_frames" / f"{index:05d}.png")
    (root / "empty").mkdir()
    touch(root / "notes.txt")
    data = load_dataset("folder", str(root), val_fraction=0, seed=3)
    assert data.classes == ("run", "walk")
    everything = data.train + data.test
    assert len(everything) == 21
    assert str(root / "run" / "extra_frames") in [s.path for s in everything]
    assert not {s.group for s in data.train} & {s.group for s in data.test}
    # 20 % of each class by whole groups: 2 of the 10 (or 11) videos per class.
    assert sorted(s.label for s in data.test) == [0, 0, 1, 1]
    assert all(s.group.endswith(("_g01", "_g02", "_g03", "_g04", "_g05")) for s in data.test)
    again = load_dataset("folder", str(root), val_fraction=0, seed=3)
    assert again.test == data.test
    others = {load_dataset("folder", str(root), val_fraction=0, seed=s).test for s in range(6)}
    assert len(others) > 1
    assert any("empty" in note for note in data.notes)


def test_folder_dataset_needs_classes(tmp_path):
    touch(tmp_path / "a.mp4")
    with pytest.raises(DatasetError, match="at least two class subfolders"):
        load_dataset("folder", str(tmp_path))
    with pytest.raises(UsageError, match="takes no split folder"):
        load_dataset("folder", str(tmp_path), splits_dir=str(tmp_path))


# ---------------------------------------------------------------- validation carve

def test_validation_is_carved_by_whole_groups_per_class():
    samples = tuple(Sample(f"/d/c{label}/v_C{label}_g{group:02d}_c{clip}.avi", label,
                           f"C{label}_g{group:02d}")
                    for label in (0, 1) for group in range(1, 11) for clip in (1, 2, 3))
    kept, carved = split_by_group(samples, 0.2, seed=7, purpose=2)
    assert len(kept) + len(carved) == len(samples)
    assert not {s.group for s in kept} & {s.group for s in carved}
    for label in (0, 1):
        assert sum(s.label == label for s in carved) == 6  # 2 of 10 groups of 3
    assert split_by_group(samples, 0.2, seed=7, purpose=2) == (kept, carved)
    assert split_by_group(samples, 0.0, seed=7, purpose=2) == (samples, ())
    one_group = tuple(s for s in samples if s.group in ("C0_g01",))
    assert split_by_group(one_group, 0.5, seed=0, purpose=2) == (one_group, ())


def test_val_carved_from_train_on_generated_ucf101(tmp_path):
    from tests.support.train_data import write_split_files
    videos = {f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi": (c, g)
              for c in ("Alpha", "Beta") for g in range(1, 9) for k in (1, 2)}
    for relative in videos:
        touch(tmp_path / "UCF-101" / relative)
    (tmp_path / "ucfTrainTestlist").mkdir()
    write_split_files(tmp_path / "ucfTrainTestlist", ("Alpha", "Beta"),
                      {r: (c, 1 if g == 1 else g) for r, (c, g) in videos.items()})
    data = load_dataset("ucf101", str(tmp_path / "UCF-101"), val_fraction=0.3, seed=1)
    assert len(data.test) == 4
    assert data.val and not {s.group for s in data.val} & {s.group for s in data.train}
    assert len(data.train) + len(data.val) == 28
    assert any(note.startswith("validation:") for note in data.notes)
    restored = DatasetSplits.from_json(data.to_json())
    assert restored == data
    recorded = json.loads(data.to_json())
    assert [row["path"] for row in recorded["test"]] == [s.path for s in data.test]


# ---------------------------------------------------------------- frame folders

def test_frame_folder_natural_order(tmp_path):
    folder = tmp_path / "v"
    for index in (10, 2, 1, 11, 100, 3):
        touch(folder / f"frame{index}.jpg")
    assert [os.path.basename(p) for p in list_frames(str(folder)).paths] == [
        "frame1.jpg", "frame2.jpg", "frame3.jpg", "frame10.jpg", "frame11.jpg", "frame100.jpg"]
    assert is_frame_folder(str(folder))
    assert resolve_video(str(tmp_path / "v.avi")) == str(folder)
    touch(folder / "readme.txt")
    assert not is_frame_folder(str(folder))


def test_truncated_videos_are_left_out_of_the_lists_with_a_note(tmp_path):
    from tests.support.videos import write_video

    root = ucf(tmp_path, GOOD_TRAIN, GOOD_TEST)
    whole = write_video(tmp_path / "whole.avi", 20, codec="mpeg4").read_bytes()
    (root / "Archery/v_Archery_g09_c01.avi").write_bytes(whole[:len(whole) // 2])
    (root / "Archery/v_Archery_g08_c01.avi").write_bytes(whole)
    (root / "Archery/v_Archery_g01_c01.avi").write_bytes(whole[:len(whole) - 100])
    data = load_dataset("ucf101", str(root), val_fraction=0)
    assert "Archery/v_Archery_g09_c01.avi" not in names(data.train, root)
    assert "Archery/v_Archery_g08_c01.avi" in names(data.train, root)
    assert "Archery/v_Archery_g01_c01.avi" not in names(data.test, root)
    note = [n for n in data.notes if n.startswith("left out 2 truncated videos")]
    assert note and "(training 1, test 1)" in note[0]
    assert "truncated: the AVI RIFF header says the file has" in note[0]
