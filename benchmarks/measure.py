"""The measurements. Each runs in a fresh Python process (``isolated``), so that its
peak memory is its own and no measurement inherits another's threads or caches.

Run as ``python -m benchmarks.measure '<task as JSON>'``; the result is the last
line of stdout, as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

Result = Dict[str, Any]
_ROOT = Path(__file__).resolve().parents[1]


def isolated(task: Dict[str, Any], timeout: float = 3600,
             module: str = "benchmarks.measure") -> Result:
    """Run one measurement in a child interpreter (``python -m MODULE TASK_JSON``) and
    return its result."""
    load_before = os.getloadavg()[0]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-m", module, json.dumps(task)],
                          cwd=str(_ROOT), env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {task['task']} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Other work on the machine shows here: figures taken under load are lower.
    result["load_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def summary(values: List[float]) -> Result:
    return {"median": statistics.median(values), "runs": [round(v, 4) for v in values]}


def video_files(folder: str) -> List[str]:
    from c3d_extract.video.sources import is_video_name

    return sorted(str(p) for p in Path(folder).iterdir() if is_video_name(p.name))


class ChildrenPeak:
    """Peak resident memory of this process's children (the decode workers), sampled.

    ``RUSAGE_CHILDREN`` cannot tell: a child started by fork + exec is charged the
    parent's whole resident set at the fork. Each child's own high-water mark
    (``VmHWM`` in ``/proc/PID/status``, reset by exec) is read instead, every
    ``interval`` seconds while it lives.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: Dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ChildrenPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.wait(self.interval):
            for pid in _children(me):
                kib = proc_kib(f"/proc/{pid}/status", "VmHWM")
                if kib:
                    # The latest reading, not the largest: one taken between fork and
                    # exec would show the parent's memory.
                    self.peaks[int(pid)] = kib / 1024

    @property
    def largest_mib(self) -> float:
        return max(self.peaks.values(), default=0.0)


def _children(pid: str) -> List[str]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += (task / "children").read_text().split()
        except OSError:
            pass
    return found


def proc_kib(file: str, key: str) -> int:
    """A ``key: N kB`` field of a /proc file (``/proc/PID/status``, ``/proc/meminfo``);
    0 where there is none."""
    try:
        with open(file) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_figures(device_type: str = "cpu", child_mib: float = 0.0,
                   n_children: int = 0) -> Result:
    """Peak resident memory of this process, and the total with ``n_children`` children
    as large as the largest seen (MiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    figures: Result = {"peak_rss_mib": round(own, 1), "peak_rss_child_mib": round(child_mib, 1),
                       "peak_rss_total_mib": round(own + n_children * child_mib, 1),
                       "cuda_max_allocated_mib": None}
    if device_type == "cuda":
        import torch

        figures["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return figures


# ---------------------------------------------------------------- decoding only

def decode_only(task: Dict[str, Any]) -> Result:
    """Frames/s of one decode worker's job (decode + resize + crop), on one core."""
    import cv2

    from c3d_extract.video.preprocess import SPORTS1M
    from c3d_extract.video.workers import decode_video

    cv2.setNumThreads(1)  # as in the workers
    paths = video_files(task["folder"])
    counted = [0]

    def send(message) -> None:
        if message[0] == "frames":
            counted[0] += len(message[1])
        elif message[0] == "error":
            raise RuntimeError(message[1])

    # Untimed: the decoder's first use imports and initialises it, which a worker does once.
    decode_video(task["decoder"], paths[0], SPORTS1M, lambda message: None)
    rates, cpu = [], []
    for _ in range(task["repeats"]):
        counted[0] = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        for path in paths:
            decode_video(task["decoder"], path, SPORTS1M, send)
        rates.append(counted[0] / (time.perf_counter() - started))
        cpu.append((time.process_time() - cpu_started) / counted[0])
    return {"frames_per_s": summary(rates), "cpu_s_per_frame": summary(cpu),
            "n_frames": counted[0], **memory_figures()}


# ---------------------------------------------------------------- the network only

def synthetic_batch(batch_size: int, clip_len: int = 16, stride: int = 8, crop: int = 112,
                    seed: int = 0):
    """A batch as the batcher makes it: consecutive clips of one video, frames shared."""
    from c3d_extract.extraction.batching import Batch, Clip

    n_frames = clip_len + stride * (batch_size - 1)
    frames = np.random.default_rng(seed).integers(0, 256, (n_frames, crop, crop, 3), np.uint8)
    starts = [stride * i for i in range(batch_size)]
    index = np.array([[s + k for k in range(clip_len)] for s in starts], np.int64)
    clips = tuple(Clip(0, s, tuple(range(s, s + clip_len))) for s in starts)
    return Batch(frames, index, clips)


def _runner(device_name: str, precision: str, batch_size: int):
    from c3d_extract.extraction.network import prepare_network
    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.weights.loading import random_weights

    options = ExtractOptions(device=device_name, precision=precision, batch_size=batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights, on purpose
        return prepare_network(random_weights(), options)


def _synchronize(device_type: str) -> None:
    if device_type == "cuda":
        import torch

        torch.cuda.synchronize()


def model_only(task: Dict[str, Any]) -> Result:
    """Clips/s of ``ClipRunner`` on synthetic uint8 frames: copy, gather, normalise, forward.

    The precisions take turns, repeat by repeat, so that a change in the machine's
    load during the measurement touches them alike and their ratio stays fair.
    """
    import torch

    runners = {p: _runner(task["device"], p, task["batch_size"]) for p in task["precisions"]}
    batch = synthetic_batch(task["batch_size"])
    per_repeat = task["batches_per_repeat"]
    device_type = next(iter(runners.values())).device_type
    for prepared in runners.values():
        for _ in range(task["warmup"]):
            prepared.runner(batch)
    _synchronize(device_type)
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rates: Dict[str, List[float]] = {p: [] for p in runners}
    for _ in range(task["repeats"]):
        for precision, prepared in runners.items():
            started = time.perf_counter()
            for _ in range(per_repeat):
                prepared.runner(batch)  # returns host arrays: synchronised
            rates[precision].append(per_repeat * len(batch.clips)
                                    / (time.perf_counter() - started))
    return {"results": [{"precision": p, "clips_per_s": summary(r)} for p, r in rates.items()],
            "batch_size": task["batch_size"], "torch_threads": torch.get_num_threads(),
            **memory_figures(device_type)}


# ---------------------------------------------------------------- the whole extraction

def end_to_end(task: Dict[str, Any]) -> Result:
    """``extract()`` over a folder into a fresh HDF5 file, as a user runs it."""
    import torch

    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.extraction.run import extract
    from c3d_extract.video.workers import default_workers
    from c3d_extract.weights.loading import random_weights

    options = ExtractOptions(device=task["device"], precision=task["precision"],
                             decoder=task["decoder"], batch_size=task["batch_size"],
                             workers=task["workers"])
    weights = random_weights()
    # Kernels are chosen on first use (oneDNN primitives, cudnn.benchmark): do it untimed.
    prepared = _runner(task["device"], task["precision"], task["batch_size"])
    for _ in range(task["warmup"]):
        prepared.runner(synthetic_batch(task["batch_size"]))
    del prepared
    clip_rates, frame_rates, walls = [], [], []
    summary_ = None
    with tempfile.TemporaryDirectory() as scratch, ChildrenPeak() as children:
        for repeat in range(task["repeats"]):
            last = repeat == task["repeats"] - 1
            output = task["keep"] if last and task.get("keep") else f"{scratch}/run{repeat}.h5"
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                summary_ = extract(task["folder"], output, weights=weights, options=options,
                                   overwrite=True)
            walls.append(time.perf_counter() - started)
            if summary_.n_failed:
                raise RuntimeError(f"{summary_.n_failed} videos failed: {summary_.failures}")
            clip_rates.append(summary_.n_clips / summary_.seconds)
            frame_rates.append(summary_.n_frames / summary_.seconds)
    device_type = "cuda" if torch.cuda.is_available() and task["device"] != "cpu" else "cpu"
    workers = min(task["workers"] or default_workers(device_type), summary_.n_processed)
    return {"clips_per_s": summary(clip_rates), "frames_per_s": summary(frame_rates),
            "wall_s": summary(walls), "n_videos": summary_.n_processed,
            "n_clips": summary_.n_clips, "n_frames": summary_.n_frames,
            "precision": task["precision"], "torch_threads": torch.get_num_threads(),
            "workers": workers, **memory_figures(device_type, children.largest_mib, workers)}


# ---------------------------------------------------------------- the naive baseline

def naive_descriptors(paths: List[str], model, device, mean_bgr) -> Dict[str, np.ndarray]:
    """How a first script does it: one video at a time, decoded whole into memory,
    float32 clips built on the host, one clip per forward pass."""
    import av
    import cv2
    import torch

    descriptors = {}
    for path in paths:
        with av.open(path) as container:
            frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        video = np.stack([cv2.resize(f, (171, 128), interpolation=cv2.INTER_LINEAR)[8:120, 29:141]
                          for f in frames]).astype(np.float32) - mean_bgr
        features = []
        for start in range(0, len(video) - 15, 8):
            clip = np.ascontiguousarray(video[start:start + 16].transpose(3, 0, 1, 2))
            with torch.no_grad():
                fc6 = model.extract(torch.from_numpy(clip[None]).to(device), ["fc6"])["fc6"]
            features.append(fc6[0].cpu().numpy())
        mean = np.mean(features, axis=0, dtype=np.float64)
        descriptors[Path(path).name] = (mean / np.linalg.norm(mean)).astype(np.float32)
    return descriptors


def naive(task: Dict[str, Any]) -> Result:
    import torch

    from c3d_extract.video.preprocess import SPORTS1M
    from c3d_extract.weights.loading import load_network, random_weights

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    device = torch.device("cuda" if task["device"] != "cpu" and torch.cuda.is_available()
                          else "cpu")
    model = load_network(random_weights()).to(device)
    mean_bgr = np.asarray(SPORTS1M.mean, np.float32)
    paths = video_files(task["folder"])
    with torch.no_grad():  # untimed warm-up
        model.extract(torch.zeros(1, 3, 16, 112, 112, device=device), ["fc6"])
    rates_clips, rates_frames = [], []
    descriptors: Dict[str, np.ndarray] = {}
    lengths = [_count_frames(p) for p in paths]
    n_frames = sum(lengths)
    n_clips = sum((n - 16) // 8 + 1 for n in lengths)
    for _ in range(task["repeats"]):
        started = time.perf_counter()
        descriptors = naive_descriptors(paths, model, device, mean_bgr)
        _synchronize(device.type)
        seconds = time.perf_counter() - started
        rates_clips.append(n_clips / seconds)
        rates_frames.append(n_frames / seconds)
    if task.get("keep"):
        np.savez(task["keep"], **descriptors)
    return {"clips_per_s": summary(rates_clips), "frames_per_s": summary(rates_frames),
            "n_videos": len(paths), "n_clips": n_clips, "n_frames": n_frames,
            **memory_figures(device.type)}


def _count_frames(path: str) -> int:
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


# ---------------------------------------------------------------- the command, as a user runs it

#: Variables that would change what the command's defaults mean.
_PINNING = ("C3D_EXTRACT_CPU_PRECISION", "C3D_EXTRACT_BACKEND")


def command_line(task: Dict[str, Any]) -> Result:
    """``c3d-extract FOLDER -o OUT --weights W --device cpu [ARGS]`` timed as a whole
    process, after one untimed run of the same command on ``warmup_folder`` (one video),
    which also pays any one-off conversion of the weights."""
    env = {k: v for k, v in os.environ.items() if k not in _PINNING}
    env.update(task.get("env", {}))
    command = [sys.executable, "-m", "c3d_extract"]
    common = ["--weights", task["weights"], "--device", "cpu", "--quiet", "--overwrite",
              *task.get("args", [])]
    with tempfile.TemporaryDirectory() as scratch:
        warm = subprocess.run([*command, task["warmup_folder"], "-o", f"{scratch}/warm.h5",
                               *common], env=env, capture_output=True, text=True)
        if warm.returncode != 0:
            raise RuntimeError(f"warm-up failed: {warm.stderr[-2000:]}")
        started = time.perf_counter()
        done = subprocess.run([*command, task["folder"], "-o", task["keep"], *common],
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"c3d-extract failed: {done.stderr[-2000:]}")
    from c3d_extract.store.read import read_attributes, read_video_table

    table = read_video_table(task["keep"])
    n_clips, n_frames = int(np.sum(table["n_clips"])), int(np.sum(table["n_frames"]))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": round(wall, 2), "clips_per_s": summary([n_clips / wall]),
            "frames_per_s": summary([n_frames / wall]), "n_clips": n_clips,
            "n_frames": n_frames, "precision": str(read_attributes(task["keep"])["precision"]),
            "args": task.get("args", []), "peak_rss_largest_process_mib": round(peak, 1)}


TASKS: Dict[str, Callable[[Dict[str, Any]], Result]] = {
    "decode": decode_only, "model": model_only, "e2e": end_to_end, "naive": naive,
    "cli": command_line,
}


def main() -> None:
    task = json.loads(sys.argv[1])
    result = TASKS[task["task"]](task)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
