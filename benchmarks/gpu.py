"""The GPU benchmark in one go: ``python -m benchmarks.gpu --out DIR [--device cpu] [--tiny]``
(``benchmarks/gpu.sh`` installs the carried wheels first, then runs this).

Stages, each in a child process with its own time limit, within a total budget (300 s):
the CUDA path without OpenVINO; a generated corpus (UCF101-like 320x240 videos of 5-8 s,
MPEG-4 Part 2 and H.264, and a few 1080p ones); ``--decode-only`` and the whole extraction
with the command's defaults for 1, 4, 8 and 14 decode workers; the network alone (fp32 and
bf16, batch 16-256, channels_last_3d and cudnn.benchmark on and off); one batch in bf16
eager, with ``torch.compile`` and as a CUDA graph; training steps of R(2+1)D-18 and C3D
with AMP bf16; ``c3d-train`` runs and a killed and resumed ``--deterministic`` run
compared bit for bit with an uninterrupted one; NVDEC against the CPU decoder; and the
suite's CUDA tests (``pytest -m gpu``). A stage that fails or runs out of time is recorded
as such in the JSON and the others go on.

Writes ``DIR/gpu-bench.json`` and ``DIR/gpu-bench.md`` (also printed). ``--device cpu
--tiny`` rehearses the whole on a CPU in about a minute (the test suite does).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from benchmarks.corpus import CorpusSpec, write_video
from benchmarks.measure import isolated
from benchmarks.run import _Log, hardware, hardware_line, versions

_ROOT = Path(__file__).resolve().parents[1]
#: The sections every result file has (None where the stage did not run or failed).
SECTIONS = ("openvino_free", "corpus", "extract", "network", "network_compiled",
            "train_steps", "c3d_train", "resume", "nvdec", "tests", "goals")


@dataclass(frozen=True)
class Sizes:
    """How much each stage does: the H200 run, or a CPU rehearsal (``--tiny``)."""

    ucf_videos: int = 300
    ucf_frames: Tuple[int, int] = (125, 200)   # 5-8 s at 25 fps
    ucf_size: Tuple[int, int] = (320, 240)
    hd_videos: int = 3
    hd_frames: int = 75
    hd_size: Tuple[int, int] = (1920, 1080)
    workers: Tuple[int, ...] = (1, 4, 8, 14)
    videos_per_worker: int = 24                # videos of a run with N workers: N x this
    batches: Tuple[int, ...] = (16, 32, 64, 128, 256)
    variant_batch: int = 64                    # the layout / autotuning variants' batch
    precisions: Tuple[str, ...] = ("fp32", "bf16")
    seconds: float = 0.5                       # timed seconds per network configuration
    warmup: int = 3
    compiled_batch: int = 64
    train_batch: Dict[str, int] = None  # type: ignore[assignment]
    train_input: Dict[str, Tuple[int, int]] = None  # type: ignore[assignment]
    train_clips_per_video: int = 6             # the tiny UCF101's videos per class and group
    train_video_size: Tuple[int, int] = (171, 128)
    train_cli_archs: Tuple[str, ...] = ("r2plus1d_18", "c3d")  # tiny: the tests' tiny3d
    resume_arch: str = "r2plus1d_18"
    train_cli_batch: int = 16
    train_workers: int = 8                     # c3d-train's decoding processes
    tests: str = "tests"
    budget: float = 300.0


GPU_SIZES = Sizes(train_batch={"r2plus1d_18": 32, "c3d": 32},
                  train_input={"r2plus1d_18": (16, 112), "c3d": (16, 112)})
TINY_SIZES = Sizes(
    ucf_videos=3, ucf_frames=(16, 20), ucf_size=(160, 120), hd_videos=1, hd_frames=16,
    hd_size=(320, 240), workers=(1, 2), videos_per_worker=1, batches=(1,), variant_batch=1,
    precisions=("fp32",), seconds=0.0, warmup=0, compiled_batch=1,
    train_batch={"r2plus1d_18": 1}, train_input={"r2plus1d_18": (4, 32), "tiny3d": (4, 32)},
    train_clips_per_video=1, train_video_size=(86, 64), train_cli_archs=("tiny3d",),
    resume_arch="tiny3d",
    train_cli_batch=4, train_workers=0, budget=480.0)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/gpu",
                        help="folder of gpu-bench.json and gpu-bench.md")
    parser.add_argument("--work", help="folder of the corpus, datasets and training runs "
                        "(kept for the next run; default: OUT/work)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes: a rehearsal of every stage in about a minute")
    parser.add_argument("--budget", type=float,
                        help="seconds in all (default 300; tiny 480, for a loaded CPU)")
    parser.add_argument("--skip", default="", help="comma-separated stages to leave out")
    args = parser.parse_args(argv)
    sizes = TINY_SIZES if args.tiny else GPU_SIZES
    if args.budget:
        sizes = replace(sizes, budget=args.budget)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    work = Path(args.work).resolve() if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results = run(work, args.device, sizes, tiny=args.tiny, skip=skip,
                  save=lambda partial: _write(out / "gpu-bench.json",
                                              json.dumps(partial, indent=2) + "\n"))
    _write(out / "gpu-bench.json", json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    _write(out / "gpu-bench.md", table + "\n")
    print(table)
    print(f"\nwritten: {out / 'gpu-bench.json'} and {out / 'gpu-bench.md'}", file=sys.stderr)
    return 0


def _write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


class Stages:
    """Runs stages within the budget; records each one's status, seconds and error."""

    def __init__(self, budget: float, log: Callable[[str], None]) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + budget
        self.log = log
        self.status: Dict[str, Dict[str, Any]] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, limit: float, function: Callable[[float], Any],
            minimum: float = 5.0) -> Any:
        timeout = min(limit, self.left())
        if timeout < minimum:
            self.status[name] = {"status": "skipped", "error": "the time budget is spent"}
            self.log(f"{name}: skipped (time budget)")
            return None
        self.log(f"{name} (at most {timeout:.0f} s)")
        started = time.monotonic()
        record: Dict[str, Any] = {"status": "ok", "limit_s": round(timeout, 1)}
        result = None
        try:
            result = function(timeout)
        except subprocess.TimeoutExpired:
            record.update(status="timeout", error=f"stopped after {timeout:.0f} s")
        except Exception as error:  # noqa: BLE001 - any failure is recorded, the rest goes on
            text = f"{type(error).__name__}: {error}"
            # A child's traceback ends with the line that says what went wrong.
            record.update(status="failed", error=text.strip().splitlines()[-1][:500],
                          detail=_tail(text))
        record["seconds"] = round(time.monotonic() - started, 1)
        self.status[name] = record
        if record["status"] != "ok":
            self.log(f"{name}: {record['status']}: {record.get('error', '')[-300:]}")
        return result


def run(out: Path, device: str, sizes: Sizes, *, tiny: bool = False,
        skip: frozenset = frozenset(),
        save: Callable[[Dict[str, Any]], None] = lambda partial: None) -> Dict[str, Any]:
    """Every stage in turn; ``out`` holds the corpus and runs. ``save`` receives the results
    so far after each stage (a run stopped from outside leaves what it had measured)."""
    log = _Log()
    stages = Stages(sizes.budget, log)
    on_cuda = device.startswith("cuda")
    results: Dict[str, Any] = {name: None for name in SECTIONS}
    results["settings"] = {"device": device, "tiny": tiny, "sizes": _jsonable(asdict(sizes)),
                           "weights": "random (seed 0)"}

    def stage(name: str, limit: float, function: Callable[[float], Any], **kw) -> None:
        if name in skip:
            stages.status[name] = {"status": "skipped", "error": "--skip"}
            return
        results[name] = stages.run(name, limit, function, **kw)
        results["stages"] = stages.status
        save(results)

    # The corpus first: its writers are forked before this process imports torch.
    stage("corpus", 90, lambda timeout: make_corpus(out / "corpus", sizes, timeout))
    corpus = results["corpus"]
    try:
        results["hardware"], results["versions"] = _describe(device)
        results["hardware_line"] = hardware_line(results["hardware"])
    except Exception as error:  # noqa: BLE001 - the stages below say more; keep going
        results["hardware"], results["versions"] = {"error": str(error)[:300]}, {}
        results["hardware_line"] = f"Hardware: unknown ({type(error).__name__}: " \
                                   f"{str(error)[:200]})"
    log(results["hardware_line"])
    stage("openvino_free", 60, lambda timeout: _task({"task": "openvino_free"}, timeout))
    decoder = "decord" if results["versions"].get("decord") else "pyav"
    if corpus:
        runs = [{"corpus": "320x240", "workers": w, "folder": corpus["subsets"][str(w)]}
                for w in sizes.workers]
        runs.append({"corpus": "1080p", "workers": max(sizes.workers), "folder": corpus["hd"]})
        stage("extract", 150, lambda timeout: _task({
            "task": "extract", "device": device, "decoder": decoder, "runs": runs,
            "warmup": sizes.warmup}, timeout))
    stage("network", 90, lambda timeout: _task({
        "task": "network", "device": device, "configs": network_configs(sizes, on_cuda),
        "warmup": sizes.warmup, "seconds": sizes.seconds}, timeout))
    stage("train_steps", 45, lambda timeout: _task({
        "task": "train_steps", "device": device, "precision": "bf16" if on_cuda else "fp32",
        "warmup": min(sizes.warmup, 2), "seconds": sizes.seconds,
        "archs": [{"name": name, "batch": sizes.train_batch[name],
                   "clip_len": sizes.train_input[name][0], "crop": sizes.train_input[name][1]}
                  for name in sizes.train_batch]}, timeout))
    stage("tests", 100, lambda timeout: run_tests(sizes.tests, timeout))
    dataset = None
    if {"c3d_train", "resume"} - skip:
        dataset = stages.run("train_data", 40,
                             lambda timeout: make_train_data(out / "train-data", sizes))
    if dataset:
        stage("resume", 70, lambda timeout: resumed_run(out / "runs", dataset, device, sizes,
                                                        timeout))
        stage("c3d_train", 70, lambda timeout: c3d_train_runs(out / "runs", dataset, device,
                                                              sizes, timeout))
    if corpus:
        stage("nvdec", 40, lambda timeout: _task({
            "task": "nvdec", "device": device, "h264_video": corpus["h264_video"],
            "folder": corpus["subsets"][str(sizes.workers[min(1, len(sizes.workers) - 1)])],
            "workers": max(sizes.workers)}, timeout))
    if on_cuda:
        stage("network_compiled", 120, lambda timeout: _task({
            "task": "network_compiled", "device": device, "batch": sizes.compiled_batch,
            "seconds": sizes.seconds, "variants": ["compile", "cuda_graph"]}, timeout),
            minimum=30)
    else:
        stages.status["network_compiled"] = {
            "status": "skipped", "error": "torch.compile and CUDA graphs are measured on CUDA"}
    results["stages"] = stages.status
    results["goals"] = goals(results)
    results["seconds"] = round(time.monotonic() - stages.started, 1)
    return results


#: Issue 23's goals for the GPU table.
GOALS = {"network_bf16_clips_per_s": 3000.0, "e2e_over_decode": 0.80}


def goals(results: Dict[str, Any]) -> Dict[str, Any]:
    """The goals, measured where their stage ran: the network's best bf16 rate, the least
    end-to-end / decode-only ratio (320x240, 4 workers or more) and whether training rates
    were recorded for both architectures. None where not measured."""
    network = results.get("network") or {"rows": []}
    bf16 = [r["clips_per_s"] for r in network["rows"]
            if r["precision"] == "bf16" and r.get("clips_per_s")]
    extract = results.get("extract") or {"rows": []}
    ratios = [r["e2e_over_decode"] for r in extract["rows"]
              if r["corpus"] == "320x240" and r["workers"] >= 4]
    steps = results.get("train_steps") or {"rows": []}
    trained = {r["arch"] for r in steps["rows"] if r.get("clips_per_s")}
    measured = {"network_bf16_clips_per_s": max(bf16) if bf16 else None,
                "e2e_over_decode": min(ratios) if ratios else None}
    met = {name: None if value is None else value >= GOALS[name]
           for name, value in measured.items()}
    return {"targets": GOALS, "measured": measured, "met": met,
            "training_recorded": sorted(trained),
            "training_both": {"r2plus1d_18", "c3d"} <= trained}


def _task(task: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    return isolated(task, timeout=timeout, module="benchmarks.gpu_tasks")


# ---------------------------------------------------------------- the corpus

def _ucf_spec(index: int, sizes: Sizes) -> CorpusSpec:
    low, high = sizes.ucf_frames
    n_frames = low + (index * 37) % (high - low + 1)
    codec = "mpeg4" if index % 2 == 0 else "libx264"
    return CorpusSpec("ucf", 1, n_frames, *sizes.ucf_size, codecs=(codec,))


def _write_one(job: Tuple[str, Dict[str, Any], int]) -> str:
    path, spec, index = job
    spec_ = CorpusSpec(**{**spec, "codecs": tuple(spec["codecs"])})
    write_video(Path(path), spec_, index)
    return path


def make_corpus(root: Path, sizes: Sizes, timeout: float) -> Dict[str, Any]:
    """The videos (written in parallel, kept for the next run) and, for each worker
    count, a folder of hard links to the first N x ``videos_per_worker`` of them."""
    stamp_text = json.dumps(_jsonable(asdict(sizes)), sort_keys=True)
    stamp = root / "corpus.json"
    ucf, hd = root / "ucf", root / "hd"
    jobs = []
    names = []
    for index in range(sizes.ucf_videos):
        spec = _ucf_spec(index, sizes)
        name = f"ucf-{index:03d}{'.avi' if spec.codecs[0] == 'mpeg4' else '.mp4'}"
        names.append(name)
        jobs.append((str(ucf / name), asdict(spec), index))
    for index in range(sizes.hd_videos):
        spec = CorpusSpec("hd", 1, sizes.hd_frames, *sizes.hd_size)
        jobs.append((str(hd / f"hd-{index:02d}.mp4"), asdict(spec), index))
    if not (stamp.exists() and stamp.read_text() == stamp_text):
        shutil.rmtree(root, ignore_errors=True)
        ucf.mkdir(parents=True)
        hd.mkdir(parents=True)
        deadline = time.monotonic() + timeout
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            # The long 1080p videos first, so that they do not finish last.
            for _ in pool.map(_write_one, sorted(jobs, key=lambda j: -j[1]["width"])):
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired("corpus", timeout)
        stamp.write_text(stamp_text)
    subsets = {}
    for workers in sizes.workers:
        n = min(len(names), max(1, workers * sizes.videos_per_worker))
        folder = root / f"ucf-{n}"
        if not folder.exists():
            partial = root / f"ucf-{n}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for name in names[:n]:
                _link(ucf / name, partial / name)
            os.replace(partial, folder)
        subsets[str(workers)] = str(folder)
    frames = [_ucf_spec(i, sizes).n_frames for i in range(sizes.ucf_videos)]
    h264 = next(name for name in names if name.endswith(".mp4")) if len(names) > 1 \
        else names[0]
    return {"ucf_videos": sizes.ucf_videos, "ucf_frames": sum(frames),
            "ucf_size": list(sizes.ucf_size), "ucf_codecs": ["mpeg4", "libx264"],
            "hd_videos": sizes.hd_videos, "hd_frames": sizes.hd_frames * sizes.hd_videos,
            "hd_size": list(sizes.hd_size), "subsets": subsets, "hd": str(hd),
            "h264_video": str(ucf / h264)}


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


# ---------------------------------------------------------------- the network's configurations

def network_configs(sizes: Sizes, on_cuda: bool) -> List[Dict[str, Any]]:
    """Every batch in both precisions with the command's settings (channels_last_3d and
    cudnn.benchmark on CUDA), then each setting turned off at one batch."""
    configs = [{"precision": p, "batch": b, "channels_last": on_cuda, "cudnn_benchmark": on_cuda,
                "variant": "default"} for p in sizes.precisions for b in sizes.batches]
    if on_cuda:
        for precision in sizes.precisions:
            for layout, autotune, name in ((False, True, "no channels_last_3d"),
                                           (True, False, "no cudnn.benchmark"),
                                           (False, False, "neither")):
                configs.append({"precision": precision, "batch": sizes.variant_batch,
                                "channels_last": layout, "cudnn_benchmark": autotune,
                                "variant": name})
    return configs


# ---------------------------------------------------------------- training

def make_train_data(root: Path, sizes: Sizes) -> Dict[str, str]:
    """A UCF101-shaped dataset (3 classes, 4 groups, MPEG-4 AVI) and its split files."""
    from tests.support.train_data import write_tiny_ucf101

    stamp = root / "done.json"
    text = json.dumps([sizes.train_clips_per_video, list(sizes.train_video_size)])
    if not (stamp.exists() and stamp.read_text() == text):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        width, height = sizes.train_video_size
        write_tiny_ucf101(root, clips=sizes.train_clips_per_video, width=width, height=height)
        stamp.write_text(text)
    return {"root": str(root / "UCF-101"), "splits": str(root / "ucfTrainTestlist")}


def _train_command(dataset: Dict[str, str], run_dir: Path, arch: str, device: str,
                   sizes: Sizes, extra: List[str], fresh: bool = True) -> List[str]:
    # tiny3d (the tests' architecture of a few hundred parameters) is registered first.
    launch = ["-c", _TINY_LAUNCH] if arch == "tiny3d" else ["-m", "c3d_extract.cli.train"]
    command = [sys.executable, *launch, dataset["root"], "-o",
               str(run_dir), "--dataset", "ucf101", "--splits", dataset["splits"],
               "--arch", arch, "--epochs", "1", "--batch-size", str(sizes.train_cli_batch),
               "--val-fraction", "0", "--device", device, "--workers",
               str(sizes.train_workers), *(["--overwrite"] if fresh else []), *extra]
    if arch in sizes.train_input and arch != "c3d":
        clip_len, crop = sizes.train_input[arch]
        command += ["--clip-len", str(clip_len), "--crop-size", str(crop)]
    return command


_TINY_LAUNCH = ("import sys; from tests.support.train_support import register_tiny; "
                "register_tiny(); from c3d_extract.cli.train import main; "
                "sys.argv[0] = 'c3d-train'; main()")


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    return env


def c3d_train_runs(root: Path, dataset: Dict[str, str], device: str, sizes: Sizes,
                   timeout: float) -> Dict[str, Any]:
    """One epoch of ``c3d-train`` per architecture with AMP bf16 (fp32 on a CPU): the
    training clips/s from metrics.csv, and the run's wall time."""
    root.mkdir(parents=True, exist_ok=True)  # c3d-train creates the run folder only
    deadline = time.monotonic() + timeout
    precision = "bf16" if device.startswith("cuda") else "fp32"
    rows = []
    for arch in sizes.train_cli_archs:
        run_dir = root / f"train-{arch}"
        started = time.monotonic()
        done = subprocess.run(
            _train_command(dataset, run_dir, arch, device, sizes, ["--precision", precision]),
            env=_env(), capture_output=True, text=True,
            timeout=max(1.0, deadline - time.monotonic()))
        row: Dict[str, Any] = {"arch": arch, "precision": precision,
                               "batch": sizes.train_cli_batch,
                               "wall_s": round(time.monotonic() - started, 1),
                               "exit": done.returncode}
        if done.returncode != 0:
            row["error"] = _tail(done.stderr)
        else:
            for metric in _metric_rows(run_dir / "metrics.csv"):
                if metric["split"] == "train":
                    seconds = float(metric["seconds"])
                    row.update(clips=int(metric["samples"]), train_s=seconds,
                               clips_per_s=round(int(metric["samples"]) / seconds, 1)
                               if seconds > 0 else None)
        rows.append(row)
    return {"rows": rows}


def resumed_run(root: Path, dataset: Dict[str, str], device: str, sizes: Sizes,
                timeout: float) -> Dict[str, Any]:
    """R(2+1)D-18 with ``--deterministic``: an uninterrupted run, and one killed after its
    first checkpoint and run again; their model files compared bit for bit."""
    root.mkdir(parents=True, exist_ok=True)  # c3d-train creates the run folder only
    deadline = time.monotonic() + timeout
    arch = sizes.resume_arch
    extra = ["--deterministic", "--checkpoint-every", "1", "--seed", "3"]
    if device.startswith("cuda"):
        extra += ["--precision", "bf16"]
    reference, killed = root / "deterministic-reference", root / "deterministic-resumed"

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    done = subprocess.run(_train_command(dataset, reference, arch, device, sizes, extra),
                          env=_env(), capture_output=True, text=True, timeout=left())
    if done.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed: {_tail(done.stderr)}")
    shutil.rmtree(killed, ignore_errors=True)
    process = subprocess.Popen(_train_command(dataset, killed, arch, device, sizes, extra),
                               env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoint.pt"
    while process.poll() is None and not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    was_killed = process.poll() is None
    if was_killed:
        process.send_signal(signal.SIGKILL)
    process.wait()
    again = subprocess.run(_train_command(dataset, killed, arch, device, sizes, extra,
                                          fresh=False),
                           env=_env(), capture_output=True, text=True, timeout=left())
    if again.returncode != 0:
        raise RuntimeError(f"the resumed run failed: {_tail(again.stderr)}")
    resumed = re.search(r"resuming from step (\d+)", again.stderr)
    difference = compare_models(reference / "model.safetensors", killed / "model.safetensors")
    step = int(resumed.group(1)) if resumed else None
    return {"arch": arch, "killed": was_killed, "resumed_from_step": step,
            "identical": difference is None, "difference": difference,
            "checked": was_killed and step is not None and difference is None}


def compare_models(a: Path, b: Path) -> Optional[str]:
    """None when both model files hold the same tensors bit for bit, else the first
    difference."""
    import torch
    from safetensors.torch import load_file

    first, second = load_file(str(a)), load_file(str(b))
    if sorted(first) != sorted(second):
        return "different tensor names"
    for name in sorted(first):
        x, y = first[name].contiguous(), second[name].contiguous()
        if x.dtype != y.dtype or x.shape != y.shape or \
                not x.view(-1).view(torch.uint8).equal(y.view(-1).view(torch.uint8)):
            return f"{name} differs"
    return None


def _metric_rows(path: Path) -> List[Dict[str, str]]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- the suite's CUDA tests

def gpu_test_files(folder: str = "tests") -> List[str]:
    """The suite's files with CUDA tests: collected alone, so that the test dependencies
    the GPU machine lacks (hypothesis, scikit-video) stop nothing."""
    return sorted(str(path.relative_to(_ROOT)) for path in (_ROOT / folder).rglob("test_*.py")
                  if "mark.gpu" in path.read_text())


def run_tests(folder: str, timeout: float) -> Dict[str, Any]:
    files = gpu_test_files(folder)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu",
                           "-p", "no:cacheprovider", *files], cwd=str(_ROOT), env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    counts = {kind: int(n) for n, kind in re.findall(
        r"(\d+) (passed|failed|skipped|errors?|deselected)", last)}
    result = {"exit": done.returncode, "summary": last.strip("= "), "files": files, **counts}
    if done.returncode not in (0, 5):  # 5: nothing collected
        result["output"] = _tail(done.stdout, 3000)
    return result


# ---------------------------------------------------------------- what it ran on

def _describe(device: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    import torch

    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        resolved = torch.device("cpu")
    info = hardware(resolved)
    if resolved.type == "cuda":
        info["driver"] = _driver_version()
    found = versions()
    for module in ("skops", "openvino"):
        import importlib.util

        found[module] = "installed" if importlib.util.find_spec(module) else None
    return info, found


def _driver_version() -> Optional[str]:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


# ---------------------------------------------------------------- the table

def markdown(results: Dict[str, Any]) -> str:
    versions = results.get("versions") or {}
    lines = [results.get("hardware_line") or "Hardware: unknown",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
             f"Settings: device {results['settings']['device']}"
             f"{' (tiny rehearsal sizes)' if results['settings']['tiny'] else ''}, random "
             f"weights, {results.get('seconds', 0):.0f} s in all", ""]
    goal = results.get("goals")
    if goal:
        shown = {True: "met", False: "**not met**", None: "not measured"}
        measured = goal["measured"]
        lines += [f"Goals: network bf16 >= {goal['targets']['network_bf16_clips_per_s']:,.0f} "
                  f"clips/s: {_number(measured['network_bf16_clips_per_s'])} "
                  f"({shown[goal['met']['network_bf16_clips_per_s']]}); end to end >= "
                  f"{goal['targets']['e2e_over_decode']:.0%} of decode-only (4+ workers): "
                  f"{_number(measured['e2e_over_decode'])} "
                  f"({shown[goal['met']['e2e_over_decode']]}); training recorded for "
                  f"{', '.join(goal['training_recorded']) or 'none'}.", ""]
    lines += _table(("stage", "status", "seconds", "note"), "llrl",
                    [(name, record["status"], record.get("seconds", "-"),
                      _cell(record.get("error", "")))
                     for name, record in results.get("stages", {}).items()])
    extract = results.get("extract")
    if extract:
        lines += ["", f"End to end (`c3d-extract` defaults: {extract['precision']}, batch "
                  f"{extract['batch_size']}, decoder {extract['decoder']}) and `--decode-only` "
                  "with the same workers:", ""]
        lines += _table(("corpus", "workers", "videos", "frames", "decode-only frames/s",
                         "end-to-end frames/s", "end-to-end clips/s", "end to end / decode-only"),
                        "lrrrrrrr",
                        [(r["corpus"], r["workers"], r["videos"], r["frames"],
                          f"{r['decode_frames_per_s']:,.0f}", f"{r['e2e_frames_per_s']:,.0f}",
                          f"{r['e2e_clips_per_s']:,.1f}", f"{r['e2e_over_decode']:.2f}")
                         for r in extract["rows"]])
    network = results.get("network")
    if network:
        lines += ["", "The network alone (C3D to fc6, clips already on the device):", ""]
        lines += _table(("precision", "batch", "variant", "clips/s", "peak MiB"), "lrlrr",
                        [(r["precision"], r["batch"], r["variant"], _rate(r),
                          _number(r.get("peak_mib"))) for r in network["rows"]])
    compiled = results.get("network_compiled")
    if compiled:
        lines += [""] + _table(("bf16, one batch", "batch", "clips/s", "setup s", "peak MiB"),
                               "lrrrr",
                               [(r["variant"], r["batch"], _rate(r), r.get("setup_s", "-"),
                                 _number(r.get("peak_mib"))) for r in compiled["rows"]])
    steps = results.get("train_steps")
    if steps:
        lines += ["", "Training steps (forward, backward, SGD) on clips on the device:", ""]
        lines += _table(("architecture", "precision", "batch", "input", "clips/s", "peak MiB"),
                        "llrlrr",
                        [(r["arch"], r["precision"], r["batch"],
                          f"{r['clip_len']}x{r['crop']}x{r['crop']}", _rate(r),
                          _number(r.get("peak_mib"))) for r in steps["rows"]])
    train = results.get("c3d_train")
    if train:
        lines += [""] + _table(("`c3d-train`, one epoch", "precision", "batch", "clips",
                                "training s", "clips/s", "wall s"), "llrrrrr",
                               [(r["arch"], r["precision"], r["batch"], r.get("clips", "-"),
                                 r.get("train_s", "-"), _rate(r), r["wall_s"])
                                for r in train["rows"]])
    resume = results.get("resume")
    if resume:
        when = "after its first checkpoint" if resume["killed"] else \
            "too late (it had finished)"
        verdict = "bit-identical" if resume["identical"] else \
            f"DIFFERENT ({resume['difference']})"
        lines.append(f"\n`--deterministic` {resume['arch']}: killed {when}, resumed from step "
                     f"{resume['resumed_from_step']}: {verdict} to the uninterrupted run.")
    nvdec = results.get("nvdec")
    if nvdec:
        lines.append(f"\nNVDEC: {nvdec['decode_frames_per_s']:,.0f} frames/s decode-only with "
                     f"{nvdec['workers']} workers ({nvdec['decoded_on_gpu']} videos on the GPU, "
                     f"{nvdec['decoded_on_cpu']} on the CPU); frames vs PyAV: max abs "
                     f"{nvdec['max_abs_diff']}, mean {_number(nvdec['mean_abs_diff'])}, 99th "
                     f"percentile {nvdec['p99_abs_diff']}.")
    tests = results.get("tests")
    if tests:
        lines.append(f"\n`pytest -m gpu`: {tests['summary']} (exit {tests['exit']}).")
    check = results.get("openvino_free")
    if check:
        lines.append(f"\nCUDA path without OpenVINO: {'ok' if check['ok'] else 'NOT ok'} "
                     f"({check['modules_imported']} modules imported, backend on CUDA "
                     f"{check['backend_on_cuda']}).")
    return "\n".join(lines)


def _table(header: Sequence[str], align: str, rows: Iterable[Sequence[Any]]) -> List[str]:
    """A markdown table; ``align`` has a letter per column: l(eft) or r(ight)."""
    return (["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
            + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def _rate(row: Dict[str, Any]) -> str:
    """A row's clips/s, or the error that stopped its measurement."""
    return _number(row.get("clips_per_s"), row.get("error"))


def _number(value: Any, error: Optional[str] = None) -> str:
    if error:
        return error
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")[:200]


def _tail(text: str, limit: int = 1500) -> str:
    return text.strip()[-limit:]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


if __name__ == "__main__":
    sys.exit(main())
