"""The Ray Data job on a local CPU cluster (skipped without Ray: pip install c3d-extract[ray])."""

import numpy as np
import pytest

from c3d_extract.extractor import ExtractOptions, extract
from c3d_extract.store import read_attributes, read_features
from tests.videos import write_video

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_job_shards_merge_and_report_failures_as_rows(local_ray, tmp_path, random_weights):
    from c3d_extract.ray_job import run_ray_job

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 16)
    write_video(videos / "b.mp4", 16)
    (videos / "broken.mp4").write_text("not a video\n")
    options = ExtractOptions(batch_size=1, workers=1)
    out = tmp_path / "feats.h5"
    job = run_ray_job(str(videos), str(out), weights="random", options=options, num_actors=2)
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
