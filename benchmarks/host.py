"""The host side without the network: ``python -m benchmarks.host --out DIR [--quick]``.

Two questions, each measured in fresh interpreters (``measure.isolated``):

- **decode-only pipeline**: how many frames/s ``c3d-extract --decode-only`` (decode
  workers, transport to the parent, clip batching, the store) delivers with N workers,
  against N times what one process decodes alone (``measure.decode_only``). Target:
  >= 85 %.
- **store at scale**: the commit of 100 new videos into a synthetic store of 10,000 and
  100,000 rows (fc6, 4,096 floats a row): seconds, bytes written, against the file's
  size; and how long a rerun takes to open the store with those 100 in its journal.

Writes ``DIR/host.json`` and prints Markdown tables (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from benchmarks.corpus import CORPORA, CorpusSpec, ensure_corpus
from benchmarks.measure import isolated, memory_figures, summary

Result = Dict[str, Any]
TARGET_SCALING = 0.85
DIM = 4096
ADDED = 100


# ---------------------------------------------------------------- measurements (children)

def pipeline(task: Dict[str, Any]) -> Result:
    """``check_videos`` (``--decode-only``) over a folder with ``workers`` decode workers.

    Whole: frames over the call's wall time (worker start-up included). Steady: frames
    decoded between the first and the last frame message, as the parent received them.
    CPU seconds per frame, which the machine's other load does not change: the parent's,
    and the workers' less their start-up (measured on a 16-frame video).
    """
    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.extraction.run import Progress, check_videos
    from c3d_extract.video.sources import VideoSource, discover

    class Clock(Progress):
        def __init__(self) -> None:
            self.first = self.last = 0.0
            self.frames = 0

        def frames_decoded(self, n_frames: int) -> None:
            now = time.perf_counter()
            if not self.frames:
                self.first = now
            self.frames += n_frames
            self.last = now

    videos = discover([task["folder"]])
    options = ExtractOptions(decoder=task["decoder"], workers=task["workers"])
    whole, steady, parent_cpu, worker_cpu = [], [], [], []
    frames = 0
    with tempfile.TemporaryDirectory() as scratch:
        tiny = ensure_corpus(CorpusSpec("startup", 1, 16, 320, 240), Path(scratch))
        tiny_videos = discover([str(tiny)]) * task["workers"]
        tiny_videos = [VideoSource(f"{k}/{v.id}", v.path) for k, v in enumerate(tiny_videos)]
        _, startup = _cpu_of(lambda: check_videos(tiny_videos, f"{scratch}/tiny.h5",
                                                  options=options))
        for repeat in range(task["repeats"]):
            clock = Clock()
            started = time.perf_counter()
            result, (own, children) = _cpu_of(lambda: check_videos(
                videos, f"{scratch}/run{repeat}.h5", options=options, progress=clock))
            wall = time.perf_counter() - started
            if result.n_failed:
                raise RuntimeError(f"{result.n_failed} videos failed: {result.failures}")
            frames = result.n_frames
            whole.append(frames / wall)
            # The first message's frames arrived at ``first``: count the frames after it.
            first_message = 16
            steady.append((clock.frames - first_message) / max(clock.last - clock.first, 1e-9))
            parent_cpu.append(own / frames)
            worker_cpu.append(max(children - startup[1], 0.0) / frames)
    return {"frames_per_s": summary(whole), "steady_frames_per_s": summary(steady),
            "parent_cpu_s_per_frame": summary(parent_cpu),
            "worker_cpu_s_per_frame": summary(worker_cpu),
            "worker_startup_cpu_s": round(startup[1] / task["workers"], 3),
            "n_frames": frames, "workers": task["workers"], **memory_figures()}


def _cpu_of(call: Callable[[], Any]) -> Tuple[Any, Tuple[float, float]]:
    """``(result, (own CPU s, reaped children's CPU s))`` of ``call()``."""
    def seconds(who: int) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    own, children = seconds(resource.RUSAGE_SELF), seconds(resource.RUSAGE_CHILDREN)
    result = call()
    return result, (seconds(resource.RUSAGE_SELF) - own,
                    seconds(resource.RUSAGE_CHILDREN) - children)


def _io_bytes() -> Dict[str, int]:
    """``wchar`` (bytes handed to write calls) and ``write_bytes`` (to storage) so far."""
    fields: Dict[str, int] = {}
    with open("/proc/self/io") as handle:
        for line in handle:
            key, value = line.split(":")
            fields[key] = int(value)
    return {"wchar": fields.get("wchar", 0), "write_bytes": fields.get("write_bytes", 0)}


def _synthetic_store(path: str, rows: int, params, dims: Dict[str, int]) -> None:
    """A feature file of ``rows`` videos, written with h5py in the store's layout."""
    import h5py

    from c3d_extract.store.layout import create_layout

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as handle:
        create_layout(handle, params, dims)
        handle.attrs["complete"] = True
        handle.attrs["n_inputs"] = rows
        for start in range(0, rows, 4096):
            n = min(4096, rows - start)
            for name, values in (
                    ("id", np.array([f"class{i % 101:03d}/v_{i:07d}.avi"
                                     for i in range(start, start + n)], dtype=object)),
                    ("status", np.full(n, "ok", dtype=object)),
                    ("error", np.full(n, "", dtype=object)),
                    ("codec", np.full(n, "mpeg4", dtype=object)),
                    ("n_frames", np.full(n, 175)), ("n_clips", np.full(n, 20)),
                    ("fps", np.full(n, 25.0)), ("width", np.full(n, 320)),
                    ("height", np.full(n, 240)), ("zero_descriptor", np.zeros(n))):
                dataset = handle["videos"][name]
                dataset.resize(start + n, axis=0)
                dataset[start:] = values
            features = handle["features/fc6"]
            features.resize(start + n, axis=0)
            block = rng.standard_normal((n, DIM)).astype(np.float32)
            features[start:] = block / np.linalg.norm(block, axis=1, keepdims=True)


def store_scale(task: Dict[str, Any]) -> Result:
    """Commit ``ADDED`` videos into a synthetic store of ``rows`` rows; time a rerun's open."""
    from c3d_extract.atomic_files import fsync_path
    from c3d_extract.store.read import read_features
    from c3d_extract.store.records import RunParameters, VideoRecord
    from c3d_extract.store.write import FeatureStore

    params = RunParameters(layers=("fc6",), clip_len=16, stride=8, short_policy="pad",
                           weights="synthetic", weights_sha256="0" * 64, preprocessing="{}",
                           precision="fp32", per_clip=False)
    dims = {"fc6": DIM}
    rng = np.random.default_rng(1)
    path = os.path.join(task["folder"], f"store-{task['rows']}.h5")
    started = time.perf_counter()
    _synthetic_store(path, task["rows"], params, dims)
    fsync_path(path)  # on disk, as a store of earlier runs is: the commit's fsyncs are its own
    build_s = time.perf_counter() - started
    size_before = os.path.getsize(path)
    records = []
    for i in range(ADDED):
        vector = rng.standard_normal(DIM).astype(np.float32)
        records.append(VideoRecord(id=f"new/v_{i:04d}.avi", status="ok", n_frames=175,
                                   n_clips=20, fps=25.0, width=320, height=240, codec="h264",
                                   features={"fc6": vector / np.linalg.norm(vector)}))
    try:
        # A run that was killed after journaling the 100 videos: what a rerun's open costs.
        store = FeatureStore(path, params, dims).open()
        for record in records:
            store.add(record)
        store.sync()
        store.journal.close()
        store.lock.release()
        started = time.perf_counter()
        store = FeatureStore(path, params, dims).open()
        open_s = time.perf_counter() - started
        assert len(store.done) == task["rows"] + ADDED
        io_before = _io_bytes()
        started = time.perf_counter()
        store.commit(complete=True, n_inputs=task["rows"] + ADDED)
        commit_s = time.perf_counter() - started
        io_after = _io_bytes()
        store.close()
        size_after = os.path.getsize(path)
        ids, matrix = read_features(path)
        assert len(ids) == task["rows"] + ADDED and ids[-1] == records[-1].id
        assert np.allclose(matrix[-1], records[-1].features["fc6"])
        # What the commit cost before it appended in place: a copy of the whole file.
        started = time.perf_counter()
        shutil.copyfile(path, path + ".copy")
        fsync_path(path + ".copy")
        copy_s = time.perf_counter() - started
    finally:
        for leftover in (path, path + ".copy"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return {"rows": task["rows"], "added": ADDED, "build_s": round(build_s, 2),
            "size_before_bytes": size_before, "size_after_bytes": size_after,
            "commit_s": round(commit_s, 4), "open_with_journal_s": round(open_s, 4),
            "copy_s": round(copy_s, 3),
            "commit_wchar_bytes": io_after["wchar"] - io_before["wchar"],
            "commit_write_bytes": io_after["write_bytes"] - io_before["write_bytes"],
            "added_feature_bytes": ADDED * DIM * 4}


TASKS = {"pipeline": pipeline, "store_scale": store_scale}


# ---------------------------------------------------------------- the driver

def run(out: Path, *, quick: bool, decoder: str, workers: List[int],
        store_rows: List[int]) -> Result:
    repeats = 2 if quick else 3
    spec = CORPORA["quick" if quick else "full"][0]  # the UCF101-like corpus
    folder = str(ensure_corpus(spec, out / "corpus"))
    results: Result = {"corpus": spec.name, "decoder": decoder, "repeats": repeats,
                       "cpu_count": os.cpu_count(), "pipeline": [], "store": []}
    started = time.perf_counter()
    # Rounds of one measurement each, in turn, so that a change in the machine's load
    # touches the one-process rate and every worker count alike.
    one: List[Result] = []
    by_workers: Dict[int, List[Result]] = {n: [] for n in workers}
    for round_ in range(repeats):
        _log(f"round {round_ + 1}/{repeats}: one process, decode only ({decoder}) on "
             f"{spec.name}, then --decode-only with {', '.join(map(str, workers))} workers")
        one.append(isolated({"task": "decode", "folder": folder, "decoder": decoder,
                             "repeats": 1}))
        for n in workers:
            by_workers[n].append(isolated(
                {"task": "pipeline", "folder": folder, "decoder": decoder, "workers": n,
                 "repeats": 1}, module="benchmarks.host"))
    results["one_process"] = _merged(one, ("frames_per_s", "cpu_s_per_frame"))
    results["pipeline"] = [{**_merged(runs, ("frames_per_s", "steady_frames_per_s",
                                             "parent_cpu_s_per_frame",
                                             "worker_cpu_s_per_frame")),
                            "workers": n} for n, runs in by_workers.items()]
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    for rows in store_rows:
        _log(f"store at scale: {rows:,} rows + {ADDED}")
        results["store"].append(isolated({"task": "store_scale", "folder": str(work),
                                          "rows": rows}, module="benchmarks.host"))
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def _merged(runs: List[Result], keys: Tuple[str, ...]) -> Result:
    """One result from single-run results: medians of ``keys``, every load reading."""
    merged = dict(runs[-1])
    for key in keys:
        merged[key] = summary([run[key]["median"] for run in runs])
    merged["load_1min"] = [min(r["load_1min"][0] for r in runs),
                           max(r["load_1min"][1] for r in runs)]
    return merged


def markdown(results: Result) -> str:
    one = results["one_process"]["frames_per_s"]["median"]
    one_cpu = results["one_process"]["cpu_s_per_frame"]["median"]
    lines = [f"Decode only, {results['corpus']} corpus, {results['decoder']}, "
             f"{results['cpu_count']} CPUs; one process alone: {one:,.0f} frames/s, "
             f"{one_cpu * 1e3:.2f} CPU ms a frame", "",
             "| workers | frames/s (whole run) | frames/s (steady) | steady / (N x one "
             "process) | target | met | load (1 min) |", "|---:|---:|---:|---:|---:|---|---|"]
    for row in results["pipeline"]:
        n = row["workers"]
        steady = row["steady_frames_per_s"]["median"]
        ratio = steady / (n * one)
        lines.append(f"| {n} | {row['frames_per_s']['median']:,.0f} | {steady:,.0f} | "
                     f"{ratio:.2f} | {TARGET_SCALING} | "
                     f"{'yes' if ratio >= TARGET_SCALING else '**no**'} | "
                     f"{row['load_1min'][0]:.1f}-{row['load_1min'][1]:.1f} |")
    lines += ["", "| workers | worker CPU ms a frame (net of start-up) | one process / worker "
              "| parent CPU ms a frame | frames/s one parent can take (1 core) |",
              "|---:|---:|---:|---:|---:|"]
    for row in results["pipeline"]:
        worker = row["worker_cpu_s_per_frame"]["median"]
        parent = row["parent_cpu_s_per_frame"]["median"]
        lines.append(f"| {row['workers']} | {worker * 1e3:.2f} | {one_cpu / worker:.2f} | "
                     f"{parent * 1e3:.3f} | {1 / parent:,.0f} |")
    lines += ["", "| store rows | file MiB | commit of 100 rows, s | bytes written by the "
              "commit (wchar) | to storage (write_bytes) | rerun's open with 100 journaled, "
              "s | a copy of the file (the former commit), s |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["store"]:
        lines.append(f"| {row['rows']:,} | {row['size_before_bytes'] / 2**20:,.0f} | "
                     f"{row['commit_s']:.3f} | {row['commit_wchar_bytes']:,} | "
                     f"{row['commit_write_bytes']:,} | {row['open_with_journal_s']:.3f} | "
                     f"{row['copy_s']:.2f} |")
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for host.json and the corpus")
    parser.add_argument("--quick", action="store_true", help="short corpus, 2 runs each")
    parser.add_argument("--decoder", default="decord")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--store-rows", default="10000,100000",
                        help="sizes of the synthetic stores, comma-separated")
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("{"):  # a child measurement (``measure.isolated``)
        task = json.loads(argv[0])
        print(json.dumps(TASKS[task["task"]](task)))
        return 0
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("--out is required")
    out = Path(args.out)
    results = run(out, quick=args.quick, decoder=args.decoder,
                  workers=[int(n) for n in args.workers.split(",")],
                  store_rows=[int(n) for n in args.store_rows.split(",")])
    (out / "host.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nwritten: {out / 'host.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
