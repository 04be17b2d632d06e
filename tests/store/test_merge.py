"""Merging shard files: the refusals, --allow-incomplete, and the merged rows themselves.

The shards are written with the store directly (no network), from records
whose features the tests know, so the merged file is checked against them.
"""

import hashlib
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from c3d_extract.device.sharding import Shard
from c3d_extract.errors import MergeError
from c3d_extract.store.merge import merge_shards
from c3d_extract.store.read import (read_attributes, read_clip_features, read_features,
                                    read_video_table)
from c3d_extract.store.records import RunParameters, VideoRecord
from c3d_extract.store.write import FeatureStore
from tests.support.store_support import run_parameters

DIMS = {"fc6": 5, "prob": 3}
COUNT = 3


params = run_parameters


def owner(video_id, count=COUNT):
    return int(hashlib.sha256(video_id.encode()).hexdigest()[:16], 16) % count


def make_record(video_id, n_clips):
    if n_clips == 0:
        return VideoRecord(id=video_id, status="error", error="cannot decode")
    seed = int(hashlib.md5(video_id.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    clips = {layer: rng.random((n_clips, dim)).astype(np.float32) for layer, dim in DIMS.items()}
    return VideoRecord(
        id=video_id, status="ok", n_frames=8 * n_clips + 8, n_clips=n_clips, fps=25.0,
        width=64, height=48,
        features={k: v.mean(0) / np.linalg.norm(v.mean(0)) for k, v in clips.items()},
        clip_features=clips, clip_starts=np.arange(n_clips, dtype=np.int64) * 8)


#: 12 videos with 0 (a failed one) to 3 clips each.
RECORDS = {r.id: r for r in (make_record(f"dir/video {k}.mp4", k % 4) for k in range(12))}


def shard_name(tmp_path, index, count=COUNT, stem="feats"):
    return tmp_path / f"{stem}.shard-{index:05d}-of-{count:05d}.h5"


def write_shard(tmp_path, index, count=COUNT, *, p=None, ids=None, commit=True,
                complete=True, extra=(), stem="feats"):
    """Shard ``index`` of ``count`` with its share of RECORDS (or ``ids``) and ``extra``."""
    ids = [i for i in RECORDS if owner(i, count) == index] if ids is None else ids
    path = shard_name(tmp_path, index, count, stem)
    with FeatureStore(str(path), p or params(), DIMS, shard=Shard(index, count)) as store:
        for video_id in list(ids) + list(extra):
            store.add(RECORDS[video_id])
        store.sync()
        if commit:
            store.commit(complete=complete, n_inputs=len(ids) + len(extra))
    return path


def write_all(tmp_path, count=COUNT):
    return [write_shard(tmp_path, i, count) for i in range(count)]


def refusal(output, shards=None, **kwargs):
    with pytest.raises(MergeError) as caught:
        merge_shards(str(output), shards, **kwargs)
    assert not os.path.exists(output)
    return str(caught.value)


def test_every_shard_has_some_videos():
    assert all(any(owner(i) == k for i in RECORDS) for k in range(COUNT))


def test_merged_file_holds_every_row_of_every_shard(tmp_path):
    write_all(tmp_path)
    out = tmp_path / "feats.h5"
    summary = merge_shards(str(out))
    assert summary.complete and summary.merged == [0, 1, 2] and summary.n_videos == 12
    assert summary.status_counts == {"ok": 9, "error": 3}
    for layer in DIMS:
        ids, matrix = read_features(str(out), layer)
        assert sorted(ids) == sorted(RECORDS)
        for video_id, row in zip(ids, matrix):
            expected = RECORDS[video_id].features.get(layer, np.zeros(DIMS[layer]))
            np.testing.assert_array_equal(row, expected)
        video_row, starts, clip_matrix = read_clip_features(str(out), layer)
        assert len(video_row) == sum(r.n_clips for r in RECORDS.values())
        for video_id, record in RECORDS.items():
            mine = video_row == ids.index(video_id)
            assert list(starts[mine]) == [8 * k for k in range(record.n_clips)]
            if record.n_clips:
                np.testing.assert_array_equal(clip_matrix[mine], record.clip_features[layer])
    table = read_video_table(str(out))
    for row, video_id in enumerate(table["id"]):
        record = RECORDS[video_id]
        assert table["status"][row] == record.status and table["error"][row] == record.error
        assert table["n_clips"][row] == record.n_clips
    attrs = read_attributes(str(out))
    assert attrs["complete"] is True and attrs["n_inputs"] == 12
    assert attrs["merged_shard_count"] == 3 and attrs["missing_shards"] == []
    assert "shard_index" not in attrs and "shard_count" not in attrs
    assert RunParameters.from_attrs(attrs) == params()
    with h5py.File(out, "r") as handle:
        assert handle["features/fc6"].maxshape == (None, 5)  # still appendable
        assert not handle["features/fc6"].is_virtual
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["feats.h5"] + [shard_name(tmp_path, k).name for k in range(3)])


def test_merge_with_named_shards_and_a_remerge_replaces_the_output(tmp_path):
    shards = [str(p) for p in write_all(tmp_path)]
    out = tmp_path / "elsewhere" / "all.h5"
    out.parent.mkdir()
    merge_shards(str(out), shards[::-1])
    first = read_features(str(out))
    merge_shards(str(out), shards)
    again = read_features(str(out))
    assert first[0] == again[0] and np.array_equal(first[1], again[1])
    assert [owner(i) for i in first[0]] == sorted(owner(i) for i in first[0])


def test_a_missing_shard_is_named_and_allow_incomplete_records_it(tmp_path):
    write_shard(tmp_path, 0)
    write_shard(tmp_path, 2)
    out = tmp_path / "feats.h5"
    message = refusal(out)
    assert "shard 1 of 3 is missing" in message and "feats.shard-00001-of-00003.h5" in message
    assert "--allow-incomplete" in message
    summary = merge_shards(str(out), allow_incomplete=True)
    assert not summary.complete and summary.missing == [1] and summary.merged == [0, 2]
    attrs = read_attributes(str(out))
    assert attrs["complete"] is False and attrs["missing_shards"] == [1]
    assert attrs["incomplete_shards"] == []
    ids, _ = read_features(str(out))
    assert sorted(ids) == sorted(i for i in RECORDS if owner(i) != 1)


def test_a_shard_interrupted_before_its_first_commit_is_missing(tmp_path):
    write_shard(tmp_path, 0)
    write_shard(tmp_path, 2)
    write_shard(tmp_path, 1, commit=False)
    assert not shard_name(tmp_path, 1).exists()
    message = refusal(tmp_path / "feats.h5")
    assert "shard 1 of 3 is missing" in message and "left its journal" in message


def test_an_incomplete_shard_is_refused(tmp_path):
    write_all(tmp_path)
    share = [i for i in RECORDS if owner(i) == 1]
    write_shard(tmp_path, 1, ids=share[:1], complete=False)  # replaces shard 1
    message = refusal(tmp_path / "feats.h5")
    assert "shard 1" in message and "incomplete" in message
    summary = merge_shards(str(tmp_path / "feats.h5"), allow_incomplete=True)
    assert summary.incomplete == [1] and summary.missing == []
    assert read_attributes(str(tmp_path / "feats.h5"))["incomplete_shards"] == [1]


def test_a_shard_with_an_unfinished_journal_is_refused(tmp_path):
    share = [i for i in RECORDS if owner(i) == 2]
    write_shard(tmp_path, 0)
    write_shard(tmp_path, 1)
    write_shard(tmp_path, 2, ids=share[:1])
    # An interrupted rerun: a video in the journal that never reached the file.
    write_shard(tmp_path, 2, ids=share[1:], commit=False)
    assert os.path.exists(str(shard_name(tmp_path, 2)) + ".journal")
    message = refusal(tmp_path / "feats.h5")
    assert "shard 2" in message and "unfinished" in message and "journal" in message


def test_a_shard_being_written_is_refused(tmp_path):
    write_all(tmp_path)
    store = FeatureStore(str(shard_name(tmp_path, 0)), params(), DIMS, shard=Shard(0, COUNT))
    with store:
        message = refusal(tmp_path / "feats.h5")
    assert "shard 0" in message and "writing it now" in message


def test_shards_with_other_parameters_are_refused_even_with_allow_incomplete(tmp_path):
    write_shard(tmp_path, 0)
    write_shard(tmp_path, 1, p=params(weights_sha256="def", weights="other.pickle"))
    write_shard(tmp_path, 2, p=params(stride=16))
    message = refusal(tmp_path / "feats.h5", allow_incomplete=True)
    assert "shard 1" in message and "weights_sha256: 'abc' in shard 0, 'def' in shard 1" \
        in message
    assert "stride: 8 in shard 0, 16 in shard 2" in message


def test_a_moved_weights_file_with_the_same_hash_is_fine(tmp_path):
    write_shard(tmp_path, 0)
    write_shard(tmp_path, 1, p=params(weights="/elsewhere/w.safetensors"))
    write_shard(tmp_path, 2)
    assert merge_shards(str(tmp_path / "feats.h5")).complete


def test_a_duplicated_id_is_refused(tmp_path):
    write_all(tmp_path)
    stray = next(i for i in RECORDS if owner(i) == 0)
    # A file with shard 1's attributes that also holds a video of shard 0.
    write_shard(tmp_path, 1, stem="copy", extra=[stray])
    shards = [str(shard_name(tmp_path, 0)), str(shard_name(tmp_path, 1, stem="copy")),
              str(shard_name(tmp_path, 2))]
    message = refusal(tmp_path / "feats.h5", shards, allow_incomplete=True)
    assert f"video id {stray!r} is in shard 0 and in shard 1" in message
    assert "belong to other shards" in message


def test_mixed_shard_counts_and_a_shard_given_twice(tmp_path):
    two = write_all(tmp_path, count=2)
    three = write_all(tmp_path, count=3)
    message = refusal(tmp_path / "feats.h5")  # found by name: two runs lie there
    assert "different shard counts" in message
    message = refusal(tmp_path / "out.h5", [str(p) for p in two + three[:1]])
    assert "different shard counts" in message
    message = refusal(tmp_path / "out.h5", [str(two[0]), str(two[1]),
                                            str(write_shard(tmp_path, 1, 2, stem="b"))])
    assert "shard 1 is given twice" in message


def test_nothing_to_merge_and_files_that_are_not_shards(tmp_path):
    assert "no shard files feats.shard-*-of-*.h5" in refusal(tmp_path / "feats.h5")
    plain = tmp_path / "plain.h5"
    with FeatureStore(str(plain), params(), DIMS) as store:
        store.add(RECORDS["dir/video 1.mp4"])
        store.commit(complete=True, n_inputs=1)
    assert "is not a shard file" in refusal(tmp_path / "out.h5", [str(plain)])
    write_all(tmp_path)
    # An ordinary run's output is never replaced by a merge.
    with pytest.raises(MergeError, match="not the result of a merge"):
        merge_shards(str(plain), [str(shard_name(tmp_path, k)) for k in range(3)])


def test_cli_merge(tmp_path):
    write_shard(tmp_path, 0)
    write_shard(tmp_path, 2)
    out = tmp_path / "feats.h5"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "c3d_extract", "merge", *args],
                              capture_output=True, text=True, timeout=300)

    refused = run(str(out))
    assert refused.returncode == 1 and "shard 1 of 3 is missing" in refused.stderr
    assert "Traceback" not in refused.stderr and not out.exists()
    allowed = run(str(out), "--allow-incomplete")
    assert allowed.returncode == 3 and "MISSING shards 1" in allowed.stderr
    write_shard(tmp_path, 1)
    merged = run(str(out))
    # Exit 3: the merged file has the failed videos of the shards.
    assert merged.returncode == 3 and "merged 3 of 3 shards" in merged.stderr
    assert "3 videos failed" in merged.stderr
    named = run("-o", str(tmp_path / "named.h5"), *[str(shard_name(tmp_path, k))
                                                    for k in range(3)])
    assert named.returncode == 3, named.stderr
    usage = run(str(out), str(tmp_path / "x.h5"))
    assert usage.returncode == 2
    helped = run("--help")
    assert helped.returncode == 0 and "Usage: c3d-extract merge" in helped.stdout


def test_a_full_disk_during_the_merge_is_one_clear_error(tmp_path):
    import resource
    import signal

    write_all(tmp_path)
    out = tmp_path / "feats.h5"
    out_size_limit = 40_000  # below the shards' size: the merged copy cannot fit

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes then fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (out_size_limit, out_size_limit))

    assert sum(shard_name(tmp_path, k).stat().st_size for k in range(COUNT)) > out_size_limit
    result = subprocess.run([sys.executable, "-m", "c3d_extract", "merge", str(out)],
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stderr
    assert "File too large" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or p.endswith(".lock")]


def test_an_earlier_merge_goes_first_when_its_shards_are_gone(tmp_path):
    """The Ray job removes shard files after a verified merge; new videos are then merged
    after the earlier output's rows."""
    ids = sorted(RECORDS)
    old, new = ids[:7], ids[7:]
    shards = [write_shard(tmp_path, k, ids=[i for i in old if owner(i) == k])
              for k in range(COUNT)]
    out = tmp_path / "feats.h5"
    merge_shards(str(out))
    for path in shards:
        os.unlink(path)
    new_shards = [str(write_shard(tmp_path, k, ids=[i for i in new if owner(i) == k]))
                  for k in range(COUNT)]
    summary = merge_shards(str(out), new_shards, base=str(out))
    assert summary.n_videos == 12 and summary.complete
    merged_ids, matrix = read_features(str(out))
    assert merged_ids[:7] == sorted(old, key=lambda i: (owner(i), old.index(i)))
    assert sorted(merged_ids[7:]) == sorted(new)
    for video_id, row in zip(merged_ids, matrix):
        np.testing.assert_array_equal(row, RECORDS[video_id].features.get("fc6", np.zeros(5)))
    video_row, _, _ = read_clip_features(str(out), "fc6")
    for video_id, record in RECORDS.items():  # clip rows point at the merged rows
        assert int((video_row == merged_ids.index(video_id)).sum()) == record.n_clips
    assert read_attributes(str(out))["n_inputs"] == 12

    again = [str(write_shard(tmp_path, k, ids=[i for i in ids if owner(i) == k],
                             stem="again")) for k in range(COUNT)]
    message = str(pytest.raises(MergeError, merge_shards, str(out), again, base=str(out)).value)
    assert "videos of the shards are in the earlier merge" in message
