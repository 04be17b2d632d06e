"""Decode workers never import torch (nor OpenVINO) for the C3D preset: the reason the package
imports them inside functions. Each check runs in a fresh interpreter, decodes a real video
and counts its frames, so that it cannot pass by decoding nothing."""

import json
import subprocess
import sys

import pytest

from tests.support.videos import write_video

N_FRAMES = 16

# The worker's own loop (worker_main) over a pipe, in this process, once per decoder and
# frame sampling; then the modules it left behind.
IN_PROCESS = r"""
import json, sys, threading
from multiprocessing import Pipe

from c3d_extract.video.opening import available_decoders
from c3d_extract.video.preprocess import SPORTS1M
from c3d_extract.video.workers import FrameSampling, worker_main

path = sys.argv[1]
runs = []
for decoder in [d for d in ("decord", "pyav") if d in available_decoders()]:
    for sampling in (FrameSampling(), FrameSampling(target_fps=12.5, crop=False)):
        parent, child = Pipe(duplex=True)
        parent.send((0, path))
        parent.send(None)
        messages = []

        def read():
            while True:
                slot, message = parent.recv()
                messages.append(message)
                if message[0] in ("end", "error"):
                    return

        reader = threading.Thread(target=read)
        reader.start()
        worker_main(child, decoder, SPORTS1M.geometry(), sampling=sampling)
        reader.join(60)
        frames = [m[1] for m in messages if m[0] == "frames"]
        runs.append({"decoder": decoder, "crop": sampling.crop, "kinds": [m[0] for m in messages],
                     "end": list(messages[-1]),
                     "frames": sum(len(f) for f in frames),
                     "shapes": sorted({str(list(f.shape[1:])) for f in frames})})
print(json.dumps({"runs": runs, "torch": "torch" in sys.modules,
                  "openvino": "openvino" in sys.modules,
                  "c3d_modules": sorted(m for m in sys.modules if m.startswith("c3d_extract"))}))
"""

# Spawned workers of a DecodePool: what their processes have mapped once a video is decoded.
SPAWNED = r"""
import json, sys, time

from c3d_extract.video.preprocess import SPORTS1M
from c3d_extract.video.workers import DecodePool, Failed, Finished, Frames


def mapped(pid):
    with open(f"/proc/{pid}/maps") as handle:
        return sorted({line.split()[-1] for line in handle if "/" in line.split()[-1]})


def loaded(paths, package):
    return [p for p in paths if f"/{package}/" in p or f"/{package}.libs/" in p
            or f"/lib{package}" in p]


path, decoder = sys.argv[1], sys.argv[2]
report = {}
with DecodePool(1, decoder, SPORTS1M, timeout=120) as pool:
    pool.submit(0, path)
    events = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            isinstance(e, (Finished, Failed)) for e in events):
        events.extend(pool.poll(0.2))
    (pid,) = pool.worker_pids
    paths = mapped(pid)
    report["frames"] = sum(len(e.frames) for e in events if isinstance(e, Frames))
    report["ended"] = [repr(e) for e in events if isinstance(e, (Finished, Failed))]
    report["worker_torch"] = loaded(paths, "torch")
    report["worker_openvino"] = loaded(paths, "openvino")
    report["worker_cv2"] = bool(loaded(paths, "cv2"))
    report["worker_decoder"] = bool(loaded(paths, {"pyav": "av", "decord": "decord"}[decoder]))
report["parent_torch"] = "torch" in sys.modules
report["parent_openvino"] = "openvino" in sys.modules
import torch  # noqa: E402,F401  the check above would see it: it is looked for the same way
report["torch_detectable"] = bool(loaded(mapped("self"), "torch"))
print(json.dumps(report))
"""

# A whole --decode-only run (check_videos): workers, clip batches, the store; no network.
DECODE_ONLY = r"""
import json, sys
from pathlib import Path

from c3d_extract.extraction.run import check_videos
from c3d_extract.store.read import read_video_table
from c3d_extract.video.sources import discover

folder, output = sys.argv[1], sys.argv[2]
summary = check_videos(discover([folder]), output)
table = read_video_table(output)
print(json.dumps({"status": [str(s) for s in table["status"]],
                  "n_frames": [int(n) for n in table["n_frames"]],
                  "n_clips": [int(n) for n in table["n_clips"]],
                  "torch": "torch" in sys.modules, "openvino": "openvino" in sys.modules}))
"""


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("no_torch") / "v.mp4", N_FRAMES)


def run_script(script, *args):
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_worker_loop_decodes_a_video_without_torch(video):
    """worker_main decodes every frame, with each installed decoder and with resampling and
    uncropped frames, in an interpreter that never imports torch or OpenVINO."""
    report = run_script(IN_PROCESS, video)
    assert report["runs"], "no decoder installed"
    for run in report["runs"]:
        assert run["kinds"][:2] == ["ready", "start"] and run["kinds"][-1] == "end", run
        n_sent = run["end"][1]
        assert n_sent == run["frames"] > 0, run
        if run["crop"]:
            assert run["frames"] == N_FRAMES and run["shapes"] == ["[112, 112, 3]"], run
            assert run["end"] == ["end", N_FRAMES, 64, 48, N_FRAMES], run
        else:  # 25 fps resampled to 12.5: every other frame, resized, not cropped
            assert run["frames"] == N_FRAMES // 2 and run["shapes"] == ["[128, 171, 3]"], run
    assert "c3d_extract.video.workers" in report["c3d_modules"]
    assert not report["torch"], f"torch imported; c3d_extract modules: {report['c3d_modules']}"
    assert not report["openvino"], report["c3d_modules"]


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_spawned_decode_workers_do_not_load_torch(video, decoder):
    """A DecodePool's spawned worker decodes the video with its decoder's library and cv2
    loaded, and neither it nor the parent that only drives the pool loads torch or OpenVINO
    (the check is shown to see torch once it is imported)."""
    pytest.importorskip({"pyav": "av", "decord": "decord"}[decoder])
    report = run_script(SPAWNED, video, decoder)
    assert report["frames"] == N_FRAMES, report
    assert len(report["ended"]) == 1 and report["ended"][0].startswith("Finished("), report
    assert report["worker_cv2"] and report["worker_decoder"], report
    assert report["worker_torch"] == [] and report["worker_openvino"] == [], report
    assert not report["parent_torch"] and not report["parent_openvino"], report
    assert report["torch_detectable"], report


def test_a_decode_only_run_never_imports_torch(video, tmp_path):
    """``--decode-only`` (check_videos) decodes, counts clips and writes its file in a process
    that never imports torch or OpenVINO: it needs no network, so it pays for none."""
    report = run_script(DECODE_ONLY, video.parent, tmp_path / "d.h5")
    assert report["status"] == ["ok"] and report["n_frames"] == [N_FRAMES], report
    assert report["n_clips"] == [1], report  # 16 frames: one clip of 16 at stride 8
    assert not report["torch"] and not report["openvino"], report
