"""Fuzzed parsers: the list-file reader and the feature-file reader either succeed or
raise the library's own typed error, never anything else."""

import os
import shutil

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from c3d_extract.errors import C3DError, StoreError, UsageError
from c3d_extract.store.read import (read_attributes, read_clip_features, read_features,
                                    read_video_table)
from c3d_extract.store.records import RunParameters, VideoRecord
from c3d_extract.store.write import FeatureStore
from c3d_extract.video.sources import discover, read_list_file

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- list files

def _expected_entries(text):
    """The entries of a list file, computed the plain way: lines split on the usual line
    ends only, stripped, without blanks and comments."""
    entries = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            entries.append(entry)
    return entries


PATH_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
                                  blacklist_characters="\x85"), min_size=1, max_size=20)


@FUZZ
@given(lines=st.lists(st.one_of(PATH_TEXT, st.just(""), st.just("# comment"),
                                PATH_TEXT.map(lambda p: f"  {p}\t")), max_size=12),
       newline=st.sampled_from(["\n", "\r\n"]))
def test_list_file_entries(tmp_path, lines, newline):
    list_file = tmp_path / "list.txt"
    text = newline.join(lines)
    list_file.write_bytes(text.encode("utf-8"))
    sources = read_list_file(str(list_file))
    entries = _expected_entries(text)
    assert [s.id for s in sources] == [os.path.normpath(e) for e in entries]
    for source, entry in zip(sources, entries):
        expected = entry if os.path.isabs(entry) else os.path.join(str(tmp_path), entry)
        assert source.path == expected


@FUZZ
@given(data=st.binary(max_size=400))
def test_list_file_of_any_bytes(tmp_path, data):
    list_file = tmp_path / "list.txt"
    list_file.write_bytes(data)
    try:
        sources = read_list_file(str(list_file))
    except UsageError as error:
        assert "list file" in str(error)
        return
    assert all(s.id and s.path for s in sources)
    try:
        discover([], str(list_file))  # ids, duplicates, odd characters (NUL) included
    except UsageError:
        pass


def test_list_file_that_is_a_directory(tmp_path):
    with pytest.raises(UsageError, match="list file"):
        read_list_file(str(tmp_path))


# ---------------------------------------------------------------- feature files

DIMS = {"fc6": 8}
PARAMS = RunParameters(layers=("fc6",), clip_len=16, stride=8, short_policy="pad",
                       weights="random", weights_sha256="0", preprocessing="{}",
                       precision="fp32", per_clip=True)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("h5") / "valid.h5"
    rng = np.random.default_rng(0)
    with FeatureStore(str(out), PARAMS, DIMS) as store:
        for i in range(5):
            clips = rng.random((2, 8)).astype(np.float32)
            mean = clips.mean(0)
            store.add(VideoRecord(id=f"v{i}.mp4", status="ok", n_frames=24, n_clips=2,
                                  features={"fc6": mean / np.linalg.norm(mean)},
                                  clip_features={"fc6": clips},
                                  clip_starts=np.array([0, 8])))
        store.add(VideoRecord(id="bad.mp4", status="error", error="broken"))
        store.commit(complete=True, n_inputs=6)
    return out.read_bytes()


READERS = [read_attributes, read_video_table, read_features,
           lambda path: read_features(path, only_with_features=True), read_clip_features]


def _read_all(path):
    """Every reader: a StoreError is fine, any other exception is a bug."""
    for reader in READERS:
        try:
            reader(path)
        except StoreError:
            pass


@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes_are_a_store_error(tmp_path, data):
    path = str(tmp_path / "random.h5")
    with open(path, "wb") as handle:
        handle.write(data)
    for reader in READERS:
        with pytest.raises(StoreError):
            reader(path)


@FUZZ
@given(fraction=st.floats(0.0, 0.999))
def test_truncated_files(tmp_path, valid_file, fraction):
    path = str(tmp_path / "cut.h5")
    with open(path, "wb") as handle:
        handle.write(valid_file[:int(len(valid_file) * fraction)])
    _read_all(path)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)), min_size=1,
                      max_size=8))
def test_damaged_bytes(tmp_path, valid_file, flips):
    data = bytearray(valid_file)
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    path = str(tmp_path / "damaged.h5")
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    _read_all(path)


DAMAGES = {
    "no videos group": lambda f: f.__delitem__("videos"),
    "no id column": lambda f: f["videos"].__delitem__("id"),
    "short feature matrix": lambda f: f["features/fc6"].resize(3, axis=0),
    "features of the wrong rank": lambda f: (f["features"].__delitem__("fc6"),
                                             f["features"].create_dataset("fc6", data=[1.0])),
    "ids that are numbers": lambda f: (f["videos"].__delitem__("id"),
                                       f["videos"].create_dataset("id", data=np.arange(6))),
    "ids that are not UTF-8": lambda f: (
        f["videos"].__delitem__("id"),
        f["videos"].create_dataset("id", data=np.array([b"\xff\xfe"] * 6, dtype="S2"))),
    "no format attribute": lambda f: f.attrs.__delitem__("format"),
    "no layers attribute": lambda f: f.attrs.__delitem__("layers"),
    "a group where a dataset belongs": lambda f: (f["clips"].__delitem__("video"),
                                                  f["clips"].create_group("video")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_structurally_damaged_files(tmp_path, valid_file, damage):
    path = tmp_path / "f.h5"
    path.write_bytes(valid_file)
    with h5py.File(path, "r+") as handle:
        DAMAGES[damage](handle)
    _read_all(str(path))
    # A run resuming into such a file refuses it with a typed error and leaves it alone.
    before = path.read_bytes()
    try:
        with FeatureStore(str(path), PARAMS, DIMS):
            pass
    except C3DError:
        pass
    assert path.read_bytes() == before
    shutil.rmtree(tmp_path, ignore_errors=True)
