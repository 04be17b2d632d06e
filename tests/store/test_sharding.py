"""Hash sharding: the assignment, its stability and balance, file names, launcher variables."""

import hashlib
import os
import random

import pytest

from c3d_extract.device.launch import auto_device, launched_shard, local_rank
from c3d_extract.device.sharding import (Shard, parse_shard, parse_shard_path, select, shard_files,
                                         shard_of, shard_path)
from c3d_extract.errors import UsageError
from c3d_extract.video.sources import VideoSource


def reference_shard(video_id, count):
    """The documented rule, written another way: 16 hex digits of the SHA-256, mod count."""
    return int(hashlib.sha256(video_id.encode("utf-8")).hexdigest()[:16], 16) % count


def some_ids(n, seed=0):
    rng = random.Random(seed)
    return [f"class_{rng.randrange(400)}/v_{rng.getrandbits(40):x}.mp4" for _ in range(n)]


def test_the_rule_is_the_documented_hash():
    ids = some_ids(500) + ["", "ünï cödé/ßpace name.mkv", "a\\x9fb.avi", "日本語.mp4"]
    for count in (1, 2, 3, 7, 8, 1000):
        assert [shard_of(i, count) for i in ids] == [reference_shard(i, count) for i in ids]


def test_a_value_checked_with_sha256sum():
    # `printf video.mp4 | sha256sum` starts 5a44db20c2ccb60c, which is
    # 6504564695583471116 in decimal (`bc`): 6 mod 10, and 0xc = 12 mod 16.
    assert shard_of("video.mp4", 16) == 12
    assert shard_of("video.mp4", 10) == 6
    assert shard_of("video.mp4", 1) == 0


def test_adding_videos_never_moves_old_ones():
    old = some_ids(300, seed=1)
    new = old + some_ids(300, seed=2)
    random.Random(3).shuffle(new)
    before = {i: shard_of(i, 4) for i in old}
    after = {i: shard_of(i, 4) for i in new}
    assert all(after[i] == before[i] for i in old)


def test_shards_partition_the_videos_in_input_order():
    videos = [VideoSource(i, f"/data/{i}") for i in some_ids(200, seed=4)]
    shares = [select(videos, Shard(k, 3)) for k in range(3)]
    assert sorted(v.id for share in shares for v in share) == sorted(v.id for v in videos)
    for share in shares:
        positions = [videos.index(v) for v in share]
        assert positions == sorted(positions)


@pytest.mark.parametrize("count", [2, 4, 8])
def test_shards_are_roughly_balanced(count):
    ids = some_ids(8000, seed=count)
    sizes = [0] * count
    for video_id in ids:
        sizes[shard_of(video_id, count)] += 1
    expected = len(ids) / count
    # A binomial share has a standard deviation below sqrt(expected); allow 5 of them.
    assert all(abs(size - expected) < 5 * expected ** 0.5 for size in sizes), sizes


def test_parse_shard():
    assert parse_shard("1/4") == Shard(1, 4) and parse_shard(" 0 / 1 ") == Shard(0, 1)
    assert str(Shard(3, 8)) == "3/8"
    for bad in ("4/4", "-1/4", "1", "a/b", "1/0", "1/4/5"):
        with pytest.raises(UsageError):
            parse_shard(bad)


def test_shard_file_names(tmp_path):
    assert shard_path("out/feats.h5", Shard(1, 4)) == "out/feats.shard-00001-of-00004.h5"
    assert shard_path("feats", Shard(12, 100000)) == "feats.shard-00012-of-100000"
    assert shard_path("a.b/f.v2.hdf5", Shard(0, 2)) == "a.b/f.v2.shard-00000-of-00002.hdf5"
    for output, shard in (("out/feats.h5", Shard(3, 5)), ("feats", Shard(0, 1)),
                          ("x/f.v2.hdf5", Shard(7, 123456))):
        assert parse_shard_path(shard_path(output, shard)) == (output, shard)
    assert parse_shard_path("feats.h5") is None
    assert parse_shard_path("feats.shard-00004-of-00004.h5") is None
    for name in ("feats.shard-00000-of-00002.h5", "feats.shard-00001-of-00002.h5",
                 "feats.shard-00000-of-00003.h5", "other.shard-00000-of-00002.h5",
                 "feats.shard-00000-of-00002.h5.journal", "feats.h5"):
        (tmp_path / name).write_bytes(b"")
    found = shard_files(str(tmp_path / "feats.h5"))
    assert found == {2: {0: str(tmp_path / "feats.shard-00000-of-00002.h5"),
                         1: str(tmp_path / "feats.shard-00001-of-00002.h5")},
                     3: {0: str(tmp_path / "feats.shard-00000-of-00003.h5")}}


def test_launcher_variables():
    assert launched_shard({}) is None and local_rank({}) is None
    assert launched_shard({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == Shard(3, 8)
    assert local_rank({"LOCAL_RANK": "1"}) == 1
    assert launched_shard({"RANK": "0"}) is None
    for bad in ({"RANK": "8", "WORLD_SIZE": "8"}, {"RANK": "x", "WORLD_SIZE": "2"},
                {"RANK": "-1", "WORLD_SIZE": "2"}):
        with pytest.raises(UsageError):
            launched_shard(bad)


def test_auto_device():
    assert auto_device(0, None) == "cpu" and auto_device(0, 3) == "cpu"
    assert auto_device(8, None) == "cuda"
    assert auto_device(8, 5) == "cuda:5"
    # A scheduler that shows each process only its own GPU.
    assert auto_device(1, 5) == "cuda:0"


def test_resolve_device_under_torchrun_on_cpu(monkeypatch):
    from c3d_extract.device.precision import resolve_device

    monkeypatch.setitem(os.environ, "LOCAL_RANK", "1")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert str(resolve_device("auto")) == "cuda:1"


def test_a_shard_file_resumes_only_as_the_same_shard(tmp_path):
    import numpy as np

    from c3d_extract.errors import ParameterMismatchError
    from c3d_extract.store.read import read_attributes
    from c3d_extract.store.records import RunParameters, VideoRecord
    from c3d_extract.store.write import FeatureStore

    params = RunParameters(layers=("fc6",), clip_len=16, stride=8, short_policy="pad",
                           weights="w", weights_sha256="abc", preprocessing="{}",
                           precision="fp32", per_clip=False)
    path = str(tmp_path / "f.shard-00001-of-00004.h5")
    record = VideoRecord(id="v.mp4", status="ok", n_clips=1,
                         features={"fc6": np.ones(4, np.float32) / 2})
    with FeatureStore(path, params, {"fc6": 4}, shard=Shard(1, 4)) as store:
        store.add(record)
        store.commit(complete=True, n_inputs=1)
    attrs = read_attributes(path)
    assert (attrs["shard_index"], attrs["shard_count"]) == (1, 4)
    with FeatureStore(path, params, {"fc6": 4}, shard=Shard(1, 4)) as store:
        assert store.done == {"v.mp4": "ok"}
    for other, words in ((Shard(2, 4), "holds shard 1/4, this run shard 2/4"),
                         (None, "holds shard 1/4, this run all videos")):
        with pytest.raises(ParameterMismatchError, match=words):
            FeatureStore(path, params, {"fc6": 4}, shard=other).open()
    # The journal of an interrupted run records its shard too.
    journal_only = str(tmp_path / "g.h5")
    store = FeatureStore(journal_only, params, {"fc6": 4}, shard=Shard(0, 2)).open()
    store.add(record)
    store.sync()
    store.journal.close()
    store.lock.release()
    with pytest.raises(ParameterMismatchError, match="journal .* holds shard 0/2"):
        FeatureStore(journal_only, params, {"fc6": 4}, shard=Shard(1, 2)).open()
