"""Bad arguments, bad files and a full disk: one clear line, the right exit code, no
traceback, and an existing output file left byte for byte as it was. Also: nothing
left behind (processes, temporary files) after success, failure and interruption."""

import os
import resource
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from c3d_extract.store.read import read_features, read_video_table
from tests.support.runs import (assert_no_processes_left, file_size, leftovers, new_tag,
                                processes_tagged, start, wait_for)
from tests.support.videos import write_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    """A folder with two videos and a finished output for one of them."""
    root = tmp_path_factory.mktemp("cli")
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 16, width=32, height=32)
    out = root / "done.h5"
    tag = new_tag()
    process = start(videos, out, tag=tag)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    write_video(videos / "b.mp4", 16, width=34, height=32)
    # After a success: no worker, no journal, lock or temporary file.
    assert leftovers(out) == []
    assert_no_processes_left(tag)
    (root / "plain_file").write_text("not a folder\n")
    (root / "bad_list.txt").write_bytes(b"\xff\xfe\x00 not utf-8")
    (root / "garbage.npy").write_bytes(np.random.default_rng(1).bytes(3000))
    (root / "notes.h5").write_text("my notes, not features\n")
    return root


# (arguments after INPUTS, exit code, text the one-line error must contain).
# "{out}" is a copy of an existing output, "{root}" the fixture's folder.
BAD_ARGUMENTS = [
    (["--layer", "fc9"], 2, "unknown layer"),
    (["--layer", ""], 2, "comma-separated"),
    (["--layer", "fc6,fc6"], 2, "named twice"),
    (["--clip-len", "0"], 2, "--clip-len"),
    (["--clip-len", "many"], 2, "--clip-len"),
    (["--stride", "-8"], 2, "--stride"),
    (["--short", "wrap"], 2, "--short"),
    (["--batch-size", "-1"], 2, "--batch-size"),
    (["--batch-size", "1.5"], 2, "--batch-size"),
    (["--device", "tpu"], 2, "device"),
    (["--precision", "fp8"], 2, "--precision"),
    (["--decoder", "ffmpeg"], 2, "--decoder"),
    (["--workers", "-2"], 2, "--workers"),
    (["--timeout", "0"], 2, "--timeout"),
    (["--timeout", "nan"], 2, "timeout must be a positive number"),
    (["--timeout", "soon"], 2, "--timeout"),
    (["--mean", "{root}/nowhere.npy"], 2, "--mean"),
    (["--mean", "{root}/garbage.npy"], 2, "cannot read the mean file"),
    (["--list", "{root}/nowhere.txt"], 2, "no such list file"),
    (["--list", "{root}/bad_list.txt"], 2, "cannot read the list file"),
    (["--weights", "{root}/nowhere.pt"], 1, "no weights file"),
    (["--weights", "{root}/garbage.npy"], 1, "garbage.npy"),
    (["--stride", "4"], 1, "other parameters"),
    (["--bogus-option"], 2, "No such option"),
]
BAD_FILES = [
    # (INPUTS, -o, exit code, message)
    (["{root}/nowhere"], "{out}", 2, "no such file or directory"),
    ([], "{out}", 2, "give at least one video"),
    (["{root}/videos"], "{root}/missing_dir/out.h5", 1, "does not exist"),
    (["{root}/videos"], "{root}/plain_file/out.h5", 1, "is not a directory"),
    (["{root}/videos"], "/proc/out.h5", 1, "/proc"),
    (["{root}/videos"], "{root}", 2, "-o"),
    (["{root}/videos"], "{root}/notes.h5", 1, "cannot read"),
]


def _run(inputs, out, extra):
    return subprocess.run(
        [sys.executable, "-m", "c3d_extract", *inputs, "-o", out, "--weights", "random",
         "--quiet", *extra], capture_output=True, text=True, timeout=600)


def _error_line(stderr):
    lines = [line for line in stderr.splitlines()
             if line.strip() and not line.startswith(("WARNING", "Usage:", "Try "))]
    return lines


def test_bad_arguments_and_files_give_one_line_and_leave_the_output_alone(existing, tmp_path):
    root = existing
    cases = []
    for n, (extra, code, message) in enumerate(BAD_ARGUMENTS):
        out = tmp_path / f"out{n}.h5"
        out.write_bytes((root / "done.h5").read_bytes())
        fill = {"root": str(root), "out": str(out)}
        cases.append(([str(root / "videos" / "a.mp4")], str(out),
                      [arg.format(**fill) for arg in extra], code, message))
    for n, (inputs, out_pattern, code, message) in enumerate(BAD_FILES):
        out = tmp_path / f"file{n}.h5"
        out.write_bytes((root / "done.h5").read_bytes())
        fill = {"root": str(root), "out": str(out)}
        cases.append(([i.format(**fill) for i in inputs], out_pattern.format(**fill), [],
                      code, message))
    before = {case[1]: open(case[1], "rb").read() for case in cases if os.path.isfile(case[1])}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: _run(case[0], case[1], case[2]), cases))
    problems = []
    for (inputs, out, extra, code, message), result in zip(cases, results):
        lines = _error_line(result.stderr)
        what = f"{' '.join(inputs + extra)} -o {out}"
        if result.returncode != code:
            problems.append(f"{what}: exit {result.returncode}, not {code}: {result.stderr}")
        if "Traceback" in result.stderr or len(lines) != 1 or message not in lines[0]:
            problems.append(f"{what}: expected one line with {message!r}: {result.stderr!r}")
        if out in before and open(out, "rb").read() != before[out]:
            problems.append(f"{what}: the output changed")
        if os.path.isdir(os.path.dirname(out)) and os.access(os.path.dirname(out), os.W_OK) \
                and not out.startswith("/proc") and os.path.isfile(out) and leftovers(out):
            problems.append(f"{what}: left {leftovers(out)}")
    assert not problems, "\n".join(problems)


def _limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes then fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


# Where the space runs out: (largest file size in bytes, start from an existing output).
# The journal's first record (16 KB of fc6 features) does not fit in 10 KB; the commit's
# copy of the existing output (over 1 MB: HDF5 chunks) does not fit in 60 KB; a new HDF5
# file does not either, which fails inside h5py instead.
FULL_DISKS = {"journal": (10_000, True), "commit copy": (60_000, True),
              "new hdf5 file": (60_000, False)}


@pytest.mark.parametrize("where", sorted(FULL_DISKS))
def test_a_full_disk_is_one_clear_error_and_the_output_survives(existing, tmp_path, where):
    limit, from_existing = FULL_DISKS[where]
    out = tmp_path / "f.h5"
    if from_existing:
        out.write_bytes((existing / "done.h5").read_bytes())
        assert out.stat().st_size > limit
    before = out.read_bytes() if from_existing else None
    tag = new_tag()
    process = start(existing / "videos", out, "--batch-size", "1", tag=tag,
                    preexec_fn=_limit_file_size(limit))
    _, err = process.communicate(timeout=600)
    assert process.returncode == 1, err
    assert "Traceback" not in err
    lines = _error_line(err)
    assert len(lines) == 1 and "File too large" in lines[0], err
    assert (out.read_bytes() if from_existing else out.exists()) == (before or False)
    assert_no_processes_left(tag)
    assert not [name for name in leftovers(out) if ".tmp-" in name or name.endswith(".lock")]
    # With room again, the rerun completes what the full disk stopped.
    rerun = start(existing / "videos", out)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert sorted(read_features(str(out))[0]) == ["a.mp4", "b.mp4"]
    assert leftovers(out) == []


def test_nothing_is_left_behind_after_failure_and_interruption(existing, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(6):
        write_video(videos / f"v{i}.mp4", 16, width=32, height=32)
    (videos / "broken.mp4").write_bytes(b"\x00" * 64)
    # Some videos fail: exit 3.
    failing = tmp_path / "failing.h5"
    tag = new_tag()
    process = start([existing / "videos" / "a.mp4", videos / "broken.mp4"], failing, tag=tag)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 3, err
    assert leftovers(failing) == []
    assert_no_processes_left(tag)
    # Interrupted with SIGINT, then with SIGTERM, while videos are being written: exit 130.
    for signum in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"interrupted{int(signum)}.h5"
        tag = new_tag()
        process = start(videos, out, "--batch-size", "1", tag=tag)
        journal = str(out) + ".journal"
        wait_for(lambda: file_size(journal) > 20_000, process,
                 "the first video was journaled")
        wait_for(lambda: len(processes_tagged(tag)) > 1, process, "decode workers started")
        process.send_signal(signum)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 130, err
        assert "Traceback" not in err
        assert leftovers(out) == []
        assert_no_processes_left(tag)
        assert 1 <= len(read_video_table(str(out))["id"]) <= 7
