"""Sharded runs end to end on real videos: torchrun on CPU, --shard, resume, merge."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import extract
from c3d_extract.store.read import read_attributes, read_features, read_video_table
from tests.support.videos import write_video

pytestmark = pytest.mark.slow


def owner(video_id, count):
    return int(hashlib.sha256(video_id.encode()).hexdigest()[:16], 16) % count


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "c3d_extract", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Five short videos, six clips in all, in both shards of two."""
    root = tmp_path_factory.mktemp("videos")
    (root / "b").mkdir()
    names = {"a.mp4": 16, "b/c.mp4": 16, "d.mp4": 24, "e.mp4": 16, "b/f.mp4": 16}
    for name, n_frames in names.items():
        write_video(root / name, n_frames)
    assert {owner(name, 2) for name in names} == {0, 1}
    return root


def test_torchrun_on_cpu_equals_a_single_process_run(corpus, tmp_path, random_weights):
    out = tmp_path / "feats.h5"
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "-m", "c3d_extract", str(corpus), "-o", str(out), "--weights", "random",
         "--batch-size", "2", "--workers", "1", "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    for index in range(2):
        shard = tmp_path / f"feats.shard-{index:05d}-of-00002.h5"
        attrs = read_attributes(str(shard))
        assert (attrs["shard_index"], attrs["shard_count"]) == (index, 2)
        assert attrs["complete"] is True
        ids = read_video_table(str(shard))["id"]
        assert len(ids) == attrs["n_inputs"] > 0 and all(owner(i, 2) == index for i in ids)
    assert not out.exists()
    merged = run_cli("merge", str(out))
    assert merged.returncode == 0, merged.stderr

    single = tmp_path / "single.h5"
    extract(str(corpus), str(single), weights=random_weights,
            options=ExtractOptions(batch_size=2, workers=1))
    ids, features = read_features(str(out))
    single_ids, single_features = read_features(str(single))
    assert sorted(ids) == sorted(single_ids) == ["a.mp4", "b/c.mp4", "b/f.mp4", "d.mp4",
                                                 "e.mp4"]
    order = [single_ids.index(i) for i in ids]
    assert np.abs(features - single_features[order]).max() < 1e-5
    assert read_attributes(str(out))["complete"] is True


def test_a_shard_of_a_directory_named_merge_resumes_and_merges(tmp_path):
    folder = tmp_path / "merge"
    folder.mkdir()
    # One video in each shard of two; only shard 1 is extracted.
    write_video(folder / "x1.mp4", 16)
    write_video(folder / "x2.mp4", 16)
    assert {owner("x1.mp4", 2), owner("x2.mp4", 2)} == {0, 1}
    mine = "x1.mp4" if owner("x1.mp4", 2) == 1 else "x2.mp4"
    args = ["./merge", "-o", "feats.h5", "--shard", "1/2", "--weights", "random",
            "--batch-size", "1", "--workers", "1", "--quiet"]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "shard 1/2: 1 videos" in first.stderr
    shard = tmp_path / "feats.shard-00001-of-00002.h5"
    assert list(read_video_table(str(shard))["id"]) == [mine]
    attrs = read_attributes(str(shard))
    assert (attrs["shard_index"], attrs["shard_count"], attrs["complete"]) == (1, 2, True)

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "processed 0" in again.stderr and "skipped 1" in again.stderr

    other = run_cli(*args[:4], "2/3", *args[5:], cwd=tmp_path)
    assert other.returncode == 0, other.stderr  # another count is another file
    assert (tmp_path / "feats.shard-00002-of-00003.h5").exists()
    (tmp_path / "feats.shard-00002-of-00003.h5").unlink()

    bad = run_cli(*args[:4], "2/2", *args[5:], cwd=tmp_path)
    assert bad.returncode == 2 and "shard 2/2 does not exist" in bad.stderr

    refused = run_cli("merge", "feats.h5", cwd=tmp_path)
    assert refused.returncode == 1 and "shard 0 of 2 is missing" in refused.stderr
    merged = run_cli("merge", "feats.h5", "--allow-incomplete", cwd=tmp_path)
    assert merged.returncode == 3, merged.stderr
    assert read_attributes(str(tmp_path / "feats.h5"))["missing_shards"] == [0]
