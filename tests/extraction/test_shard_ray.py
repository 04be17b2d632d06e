"""The Ray Data job on a local CPU cluster (skipped without Ray: pip install c3d-extract[ray])."""

import numpy as np
import pytest

from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import extract
from c3d_extract.store.read import read_attributes, read_features
from tests.support.videos import write_video

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_job_shards_merge_and_report_failures_as_rows(local_ray, tmp_path, random_weights):
    from c3d_extract.extraction.ray_job import run_ray_job

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 16)
    write_video(videos / "b.mp4", 16)
    (videos / "broken.mp4").write_text("not a video\n")
    options = ExtractOptions(batch_size=1, workers=1)
    out = tmp_path / "feats.h5"
    job = run_ray_job(str(videos), str(out), weights="random", options=options, num_actors=2,
                      keep_shards=True)
    assert job.merge_error == "" and job.merge is not None and job.merge.complete
    assert sorted((row["id"], row["status"]) for row in job.rows) == [
        ("a.mp4", "ok"), ("b.mp4", "ok"), ("broken.mp4", "error")]
    assert [video_id for video_id, _ in job.failures] == ["broken.mp4"]
    for index in range(2):
        attrs = read_attributes(str(tmp_path / f"feats.shard-{index:05d}-of-00002.h5"))
        assert attrs["shard_count"] == 2 and attrs["complete"] is True

    single = tmp_path / "single.h5"
    extract(str(videos), str(single), weights=random_weights, options=options)
    ids, features = read_features(str(out), only_with_features=True)
    single_ids, single_features = read_features(str(single), only_with_features=True)
    assert sorted(ids) == sorted(single_ids) == ["a.mp4", "b.mp4"]
    order = [single_ids.index(i) for i in ids]
    assert np.abs(features - single_features[order]).max() < 1e-5

    again = run_ray_job(str(videos), str(out), weights="random", options=options, num_actors=2)
    assert again.rows == [] and again.merge.complete  # every video was already done


def test_the_command_line_ray_run_merges_removes_shards_and_resumes(tmp_path, random_weights):
    import subprocess
    import sys

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 24)
    write_video(videos / "b.mp4", 16, codec="mpeg4")
    (videos / "broken.mp4").write_text("not a video\n")
    out = tmp_path / "feats.h5"

    def ray_run(*extra):
        # --ray=local: a Ray instance of this test's own, whatever else runs on the machine.
        return subprocess.run(
            [sys.executable, "-m", "c3d_extract", str(videos), "-o", str(out), "--weights",
             "random", "--batch-size", "1", "--workers", "1", "--quiet", "--ray=local",
             *extra], capture_output=True, text=True, timeout=600)

    first = ray_run("--keep-shards")
    assert first.returncode == 3, first.stderr  # broken.mp4 failed; the others have features
    assert "3 videos: this job extracted 3" in first.stderr and "Traceback" not in first.stderr
    assert (tmp_path / "feats.shard-00000-of-00001.h5").exists()  # --keep-shards

    single = tmp_path / "single.h5"
    extract(str(videos), str(single), weights=random_weights,
            options=ExtractOptions(batch_size=1, workers=1))
    ids, features = read_features(str(out), only_with_features=True)
    single_ids, single_features = read_features(str(single), only_with_features=True)
    assert sorted(ids) == sorted(single_ids) == ["a.mp4", "b.mp4"]
    order = [single_ids.index(i) for i in ids]
    # Same network and inputs; Ray's workers may use other thread counts, so the fp32 sums
    # can differ in order: unit vectors of 4,096 values then agree to ~1e-6.
    assert np.abs(features - single_features[order]).max() < 1e-5

    write_video(videos / "c.mp4", 16)  # the dataset grows: only c.mp4 is extracted
    second = ray_run()  # the kept shards resume; merged again, then removed
    assert second.returncode == 3, second.stderr
    assert "4 videos: this job extracted 1 (1 ok)" in second.stderr
    assert "3 were already done" in second.stderr and "shard files removed" in second.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.h5", "single.h5", "videos"]
    ids_after, features_after = read_features(str(out), only_with_features=True)
    assert sorted(ids_after) == ["a.mp4", "b.mp4", "c.mp4"]
    for video_id, row in zip(ids, features):  # the earlier rows, copied unchanged
        assert np.array_equal(features_after[ids_after.index(video_id)], row)

    third = ray_run()  # nothing new: answered from the merged output, Ray not started
    assert third.returncode == 3, third.stderr
    assert "4 videos: this job extracted 0 (none)" in third.stderr
    assert "4 were already done" in third.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.h5", "single.h5", "videos"]


def test_a_rerun_after_an_interrupted_job_keeps_the_earlier_merge(local_ray, tmp_path):
    from c3d_extract.device.sharding import Shard
    from c3d_extract.extraction.ray_job import run_ray_job
    from c3d_extract.extraction.run import extract_videos
    from c3d_extract.video.sources import VideoSource

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 16)
    options = ExtractOptions(batch_size=1, workers=1)
    out = tmp_path / "feats.h5"
    first = run_ray_job(str(videos), str(out), weights="random", options=options, num_actors=1)
    assert first.merge.complete and first.shards_removed  # a.mp4 lives in the output only
    # A second job on a new video, interrupted after its shard's first commit.
    write_video(videos / "b.mp4", 16)
    extract_videos([VideoSource("b.mp4", str(videos / "b.mp4"))], str(out), weights="random",
                   options=options, shard=Shard(0, 1))
    again = run_ray_job(str(videos), str(out), weights="random", options=options, num_actors=1)
    assert again.merge_error == "" and again.merge.complete
    assert sorted(read_features(str(out))[0]) == ["a.mp4", "b.mp4"]
