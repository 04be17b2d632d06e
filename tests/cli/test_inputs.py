"""Hostile inputs: every kind gets the outcome a user would expect, with both decoders.

The corpus (tests/support/hostile.py) is written here with PyAV, numpy and plain bytes.
Several kinds hold the very frames of ``frames16.mp4`` (same writer, same
content); their descriptors must equal its descriptor, which checks that
rotation metadata, odd names, links and folders change nothing.
"""

import subprocess
import sys

import numpy as np
import pytest

from c3d_extract.store.read import read_features, read_video_table
from tests.support import hostile

pytestmark = pytest.mark.slow

# kind: (status, frames decoded or None, text the error must contain or None).
EXPECTED = {
    "empty": ("error", 0, "empty (0 bytes)"),
    "random_bytes": ("error", 0, "does not recognise the file as a video"),
    "text_file": ("error", 0, "does not recognise the file as a video"),
    "truncated10": ("error", 0, "moov atom"),
    "truncated50": ("error", 0, "moov atom"),
    "truncated90": ("error", 0, "moov atom"),
    "faststart_truncated": ("error", 16, "damaged or cut short"),
    "no_moov": ("error", 0, "moov atom"),
    "audio_only": ("error", 0, "no video stream"),
    "frames1": ("padded", 1, None),
    "frames15": ("padded", 15, None),
    "frames16": ("ok", 16, None),
    "frames17": ("ok", 17, None),
    "gray": ("ok", 16, None),
    "yuv444": ("ok", 16, None),
    "ten_bit": ("ok", 16, None),
    "smallest": ("ok", 16, None),
    "huge": ("padded", 2, None),
    "odd_size": ("ok", 16, None),
    "even_size": ("ok", 16, None),
    "rotated": ("ok", 16, None),
    "variable_rate": ("ok", len(hostile.VFR_PTS_MS), None),
    "header_overcounts": ("ok", 20, None),
    "header_undercounts": ("ok", 20, None),
    "corrupt_middle": ("error", None, "damaged part way"),  # not --allow-damaged
    "strange_name": ("ok", 16, None),
    "symlink": ("ok", 16, None),
    "broken_symlink": ("error", 0, "broken symbolic link"),
    "directory_named_like_a_video": ("ok", 16, None),
    "unreadable": ("error", 0, "Permission denied"),
    "image_named_mp4": ("error", 0, "not a video (FFmpeg reads it as a still png image)"),
}
# Stored width x height, where it is not the writer's default 64x48.
SIZES = {"smallest": (1, 1), "huge": (4000, 3000), "odd_size": (63, 47), "even_size": (34, 32)}
# Same frames as frames16.mp4.
SAME_AS_FRAMES16 = ("rotated", "strange_name", "symlink", "directory_named_like_a_video")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "videos"
    made, skipped = hostile.build(root)
    assert set(made) | set(skipped) == set(EXPECTED)
    assert len(made) >= 20
    assert hostile.rotation_of(root / made["rotated"]) != 0  # the metadata is really there
    assert hostile.frame_count_of_avi_header(
        (root / made["header_overcounts"]).read_bytes()) == 5000
    return root, made, skipped


def run_corpus(corpus, out, decoder):
    root, made, skipped = corpus
    result = subprocess.run(
        [sys.executable, "-m", "c3d_extract", str(root), "-o", str(out), "--weights", "random",
         "--decoder", decoder, "--timeout", "120", "--quiet"],
        capture_output=True, text=True, timeout=900)
    return result


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_every_hostile_kind_gets_its_expected_outcome(corpus, tmp_path, decoder):
    root, made, skipped = corpus
    out = tmp_path / "hostile.h5"
    result = run_corpus(corpus, out, decoder)
    assert result.returncode == 3, result.stderr  # some failed, the run finished
    assert "Traceback" not in result.stderr
    table = read_video_table(str(out))
    row = {video_id: i for i, video_id in enumerate(table["id"])}
    assert sorted(row) == sorted(made.values())  # "folder.mp4" itself is no video
    problems = []
    for kind, video_id in made.items():
        status, n_frames, message = EXPECTED[kind]
        i = row[video_id]
        got = (table["status"][i], int(table["n_frames"][i]), table["error"][i])
        if got[0] != status or (n_frames is not None and got[1] != n_frames) \
                or (message is not None and message not in got[2]):
            problems.append(f"{kind}: expected {status}/{n_frames}/{message!r}, got {got}")
        if status != "error":
            size = (int(table["width"][i]), int(table["height"][i]))
            if size != SIZES.get(kind, (64, 48)):
                problems.append(f"{kind}: stored size {size}")
            if got[2]:
                problems.append(f"{kind}: an error message without an error: {got[2]!r}")
    assert not problems, "\n".join(problems)
    corrupt = row[made["corrupt_middle"]]
    assert 1 <= table["n_frames"][corrupt] < 24

    ids, fc6 = read_features(str(out))
    features = dict(zip(ids, fc6))
    for kind, video_id in made.items():
        norm = np.linalg.norm(features[video_id])
        expected_norm = 0.0 if EXPECTED[kind][0] == "error" else 1.0
        assert norm == pytest.approx(expected_norm, abs=1e-5), kind
    reference = features[made["frames16"]]
    for kind in SAME_AS_FRAMES16:
        assert np.abs(features[made[kind]] - reference).max() < 1e-5, kind
    # The summary names what failed and why.
    assert "failed: empty.mp4: the file is empty" in result.stderr


def test_skipped_kinds_say_why(corpus):
    _, _, skipped = corpus
    for kind, reason in skipped.items():
        assert reason, kind
