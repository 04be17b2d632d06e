"""The Ray job's actor without Ray: what it extracts, and what it counts as already done."""

import numpy as np

from c3d_extract.device.sharding import Shard, shard_path
from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.ray_job import ShardExtractor
from c3d_extract.extraction.run import extract_videos
from c3d_extract.store.read import read_attributes, read_features
from c3d_extract.store.records import RunParameters, VideoRecord
from c3d_extract.store.write import FeatureStore
from c3d_extract.video.sources import VideoSource
from tests.support.videos import write_video


def test_a_shard_counts_videos_in_its_file_and_in_its_journal_as_resumed(tmp_path):
    paths = {name: str(write_video(tmp_path / name, 16)) for name in ("a.mp4", "b.mp4",
                                                                      "c.mp4")}
    output = str(tmp_path / "feats.h5")
    shard = shard_path(output, Shard(0, 1))
    options = ExtractOptions(batch_size=1, workers=1)
    actor = ShardExtractor(output, 1, "random", options, None, False)
    # a.mp4 committed to the shard file; b.mp4 only in its journal, as a killed run leaves it.
    extract_videos([VideoSource("a.mp4", paths["a.mp4"])], output, weights=actor.prepared,
                   options=options, shard=Shard(0, 1))
    params = RunParameters.from_attrs(read_attributes(shard))
    store = FeatureStore(shard, params, {"fc6": 4096}, shard=Shard(0, 1)).open()
    store.add(VideoRecord(id="b.mp4", status="error", error="from an earlier run"))
    store.sync()
    store.close()  # not committed: the journal keeps b.mp4

    rows = actor({"id": np.array(["a.mp4", "b.mp4", "c.mp4", ""], dtype=object),
                  "path": np.array([paths["a.mp4"], paths["b.mp4"], paths["c.mp4"], ""],
                                   dtype=object),
                  "shard": np.zeros(4, np.int64)})
    assert list(rows["id"]) == ["c.mp4", ""]  # only c.mp4 was extracted ...
    assert list(rows["status"]) == ["ok", ""] and list(rows["resumed"]) == [0, 2]  # ... a, b done
    ids, _ = read_features(shard)
    assert sorted(ids) == ["a.mp4", "b.mp4", "c.mp4"]
