"""The measurements of ``benchmarks.gpu``, each run in a child interpreter with a time limit:
``python -m benchmarks.gpu_tasks '<task as JSON>'``; the result is the last line of stdout.

Every task takes ``device`` (cuda or cpu) and sizes from the driver, so that the same code
runs on an H200 and, with tiny sizes, on a CPU as a rehearsal.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List

import numpy as np

Result = Dict[str, Any]


def _rate(value: float) -> float:
    """A rate rounded to what it can tell: 0.1 above 10, three decimals below."""
    return round(value, 1) if value >= 10 else round(value, 3)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device) -> Any:
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _timed(step: Callable[[], None], device, seconds: float, min_steps: int = 1) -> Dict[str, Any]:
    """Run ``step`` at least ``min_steps`` times and until ``seconds`` have passed."""
    n = 0
    _sync(device)
    started = time.perf_counter()
    while n < min_steps or time.perf_counter() - started < seconds:
        step()
        n += 1
        if n % 4 == 0 or n >= min_steps:
            _sync(device)
    _sync(device)
    return {"steps": n, "seconds": time.perf_counter() - started}


def _measured(step: Callable[[], None], device, task: Dict[str, Any], batch: int) -> Result:
    """``step`` after ``task["warmup"]`` calls, for ``task["seconds"]``: clips/s, steps, peak."""
    for _ in range(task["warmup"]):
        step()
    timed = _timed(step, device, task["seconds"])
    return {"clips_per_s": _rate(timed["steps"] * batch / timed["seconds"]),
            "steps": timed["steps"], "peak_mib": _peak_mib(device)}


# ---------------------------------------------------------------- no OpenVINO on the CUDA path

def openvino_free(task: Dict[str, Any]) -> Result:
    """Import everything the CUDA path uses with ``openvino`` made unimportable, resolve the
    backend for CUDA, and list the project's modules that did import it."""
    import importlib
    import pkgutil

    class _Refuse:
        def find_spec(self, name, path=None, target=None):
            if name == "openvino" or name.startswith("openvino."):
                raise ImportError("openvino is not available on this machine")
            return None

    sys.meta_path.insert(0, _Refuse())
    import c3d_extract

    imported, failed = [], {}
    for module in pkgutil.walk_packages(c3d_extract.__path__, "c3d_extract."):
        if module.name in ("c3d_extract.extraction.openvino_runner",
                           "c3d_extract.extraction.ray_job"):
            continue
        try:
            importlib.import_module(module.name)
            imported.append(module.name)
        except ImportError as error:
            failed[module.name] = str(error)
    import torch

    from c3d_extract.extraction.backends import resolve_backend

    backend = resolve_backend("auto", torch.device("cuda"))
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "openvino")
    return {"modules_imported": len(imported), "import_failures": failed,
            "backend_on_cuda": backend, "openvino_modules_loaded": loaded,
            "ok": not failed and not loaded and backend == "torch"}


# ---------------------------------------------------------------- decoding and extraction

def extract_rates(task: Dict[str, Any]) -> Result:
    """For each run (a folder and a number of decode workers): ``--decode-only`` (the decode
    workers' own rate), then the whole extraction with the command's defaults, into fresh
    files; one network, prepared once, serves every run."""
    from benchmarks.measure import synthetic_batch
    from c3d_extract.extraction.network import prepare_network
    from c3d_extract.extraction.options import ExtractOptions, default_batch_size
    from c3d_extract.extraction.run import check_videos, extract_videos
    from c3d_extract.video.sources import discover
    from c3d_extract.weights.loading import random_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights, on purpose
        prepared = prepare_network(random_weights(),
                                   ExtractOptions(device=task["device"], decoder=task["decoder"]))
    # cuDNN's choice of kernels and the first allocations: untimed, once for every run.
    batch_size = default_batch_size(prepared.device_type)
    for _ in range(task["warmup"]):
        prepared.runner.submit(synthetic_batch(batch_size))
        prepared.runner.collect(wait=True)
    rows: List[Result] = []
    with tempfile.TemporaryDirectory() as scratch:
        for number, run in enumerate(task["runs"]):
            workers = run["workers"]
            videos = discover([run["folder"]], None)
            options = ExtractOptions(device=task["device"], workers=workers,
                                     decoder=task["decoder"])
            decoded = check_videos(videos, f"{scratch}/decode-{number}.h5", options=options,
                                   overwrite=True)
            done = _quiet_extract(extract_videos, videos, f"{scratch}/e2e-{number}.h5",
                                  prepared, options)
            rows.append({
                "corpus": run["corpus"], "workers": workers, "videos": len(videos),
                "frames": done.n_frames, "clips": done.n_clips, "failed": done.n_failed,
                "decode_frames_per_s": round(decoded.n_frames / decoded.seconds, 1),
                "decode_seconds": round(decoded.seconds, 2),
                "e2e_frames_per_s": round(done.n_frames / done.seconds, 1),
                "e2e_clips_per_s": _rate(done.n_clips / done.seconds),
                "e2e_seconds": round(done.seconds, 2),
                "e2e_over_decode": round(decoded.seconds / done.seconds, 3),
            })
    return {"rows": rows, "precision": prepared.precision, "batch_size": batch_size,
            "backend": prepared.backend, "decoder": task["decoder"]}


def _quiet_extract(function, videos, output, weights, options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights, on purpose
        return function(videos, output, weights=weights, options=options, overwrite=True)


def nvdec(task: Dict[str, Any]) -> Result:
    """NVDEC's frames against PyAV's on one H.264 video (the colour-conversion tolerance),
    and ``--decode-only`` with ``--decoder nvdec`` over the corpus: fallbacks counted."""
    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.extraction.run import check_videos
    from c3d_extract.store.read import read_video_table
    from c3d_extract.video.opening import check_decoder, open_decoder
    from c3d_extract.video.sources import discover

    check_decoder("nvdec")
    with open_decoder("nvdec", task["h264_video"]) as video:
        gpu = np.stack(list(video.frames()))
        on_gpu = video.codec()
    with open_decoder("pyav", task["h264_video"]) as video:
        cpu = np.stack(list(video.frames()))
    difference = np.abs(gpu.astype(np.int16) - cpu.astype(np.int16)) if gpu.shape == cpu.shape \
        else None
    videos = discover([task["folder"]], None)
    with tempfile.TemporaryDirectory() as scratch:
        output = f"{scratch}/nvdec.h5"
        done = check_videos(videos, output, overwrite=True,
                            options=ExtractOptions(device=task["device"], decoder="nvdec",
                                                   workers=task["workers"]))
        codecs = [str(c) for c in read_video_table(output)["codec"]]
    return {"frames_equal_shape": difference is not None, "gpu_codec": on_gpu,
            "shape_gpu": list(gpu.shape), "shape_cpu": list(cpu.shape),
            "max_abs_diff": None if difference is None else int(difference.max()),
            "mean_abs_diff": None if difference is None else float(difference.mean()),
            "p99_abs_diff": None if difference is None else float(np.percentile(difference, 99)),
            "decode_frames_per_s": round(done.n_frames / done.seconds, 1),
            "workers": task["workers"], "videos": len(videos), "failed": done.n_failed,
            "decoded_on_gpu": sum(c.endswith("(nvdec)") for c in codecs),
            "decoded_on_cpu": sum(c.endswith("(cpu)") for c in codecs)}


# ---------------------------------------------------------------- the network alone

def _c3d(device, channels_last: bool):
    import torch

    from c3d_extract.weights.loading import load_network, random_weights

    model = load_network(random_weights()).to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    return model


def _clips(batch: int, device, channels_last: bool):
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 16, 112, 112, generator=generator).to(device)
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def network(task: Dict[str, Any]) -> Result:
    """C3D up to fc6 on device-resident clips: clips/s and peak memory per precision, batch
    and variant (channels_last_3d, cudnn.benchmark)."""
    import torch

    from c3d_extract.device.precision import autocast

    device = torch.device(task["device"])
    rows: List[Result] = []
    models = {}
    for config in task["configs"]:
        started = time.perf_counter()
        torch.backends.cudnn.benchmark = config["cudnn_benchmark"]
        layout = config["channels_last"]
        if layout not in models:
            models[layout] = _c3d(device, layout)
        model = models[layout]
        _reset_peak(device)
        row = dict(config)
        try:
            x = _clips(config["batch"], device, layout)

            def step() -> None:
                with torch.inference_mode(), autocast(config["precision"], device):
                    model.extract(x, ("fc6",))

            row.update(_measured(step, device, task, config["batch"]))
        except torch.cuda.OutOfMemoryError:
            row.update(error="out of memory", peak_mib=_peak_mib(device))
        row["wall_s"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        x = None
    return {"rows": rows}


def network_compiled(task: Dict[str, Any]) -> Result:
    """One batch size in bf16: eager, ``torch.compile`` and a captured CUDA graph."""
    import torch

    from c3d_extract.device.precision import autocast

    device = torch.device(task["device"])
    torch.backends.cudnn.benchmark = True
    model = _c3d(device, True)
    x = _clips(task["batch"], device, True)

    class Fc6(torch.nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net

        def forward(self, clips):
            return self.net.extract(clips, ("fc6",))["fc6"]

    wrapped = Fc6(model).eval()
    rows: List[Result] = []

    def measure(name: str, step: Callable[[], Any], warmup: int) -> None:
        started = time.perf_counter()
        _reset_peak(device)
        try:
            for _ in range(warmup):
                step()
            _sync(device)
            setup = time.perf_counter() - started
            timed = _timed(step, device, task["seconds"])
            rows.append({"variant": name, "batch": task["batch"], "precision": "bf16",
                         "clips_per_s": _rate(timed["steps"] * task["batch"] / timed["seconds"]),
                         "setup_s": round(setup, 1), "peak_mib": _peak_mib(device)})
        except Exception as error:  # noqa: BLE001 - a failed variant is a finding, recorded
            rows.append({"variant": name, "batch": task["batch"], "precision": "bf16",
                         "error": f"{type(error).__name__}: {str(error)[:300]}"})

    def eager():
        with torch.inference_mode(), autocast("bf16", device):
            return wrapped(x)

    measure("eager", eager, 3)
    if "compile" in task["variants"]:
        compiled = torch.compile(wrapped)

        def compiled_step():
            with torch.inference_mode(), autocast("bf16", device):
                return compiled(x)

        measure("torch.compile", compiled_step, 3)
    if "cuda_graph" in task["variants"] and device.type == "cuda":
        static = {}

        def uncached():
            with torch.inference_mode(), autocast("bf16", device, cache_enabled=False):
                return wrapped(x)

        def capture():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    uncached()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static["out"] = uncached()
            static["graph"] = graph

        def replay():
            if "graph" not in static:
                capture()
            static["graph"].replay()

        measure("CUDA graph", replay, 2)
    return {"rows": rows}


# ---------------------------------------------------------------- training

def train_steps(task: Dict[str, Any]) -> Result:
    """Training steps (forward, loss, backward, SGD) on device-resident clips with AMP:
    clips/s and peak memory of each architecture."""
    import torch
    from torch.nn import functional as F

    from c3d_extract.device.precision import autocast
    from c3d_extract.models.registry import create_model

    device = torch.device(task["device"])
    torch.backends.cudnn.benchmark = True
    if any(arch["name"] == "tiny3d" for arch in task["archs"]):
        from tests.support.train_support import register_tiny

        register_tiny()
    rows: List[Result] = []
    for arch in task["archs"]:
        started = time.perf_counter()
        row: Result = {"arch": arch["name"], "batch": arch["batch"], "precision": task["precision"],
                       "clip_len": arch["clip_len"], "crop": arch["crop"]}
        model = None
        try:
            torch.manual_seed(0)
            model = create_model(arch["name"], num_classes=101).to(device)
            if device.type == "cuda":
                model = model.to(memory_format=torch.channels_last_3d)
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            x = torch.randn(arch["batch"], 3, arch["clip_len"], arch["crop"], arch["crop"],
                            device=device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            y = torch.randint(0, 101, (arch["batch"],), device=device)
            _reset_peak(device)

            def step() -> None:
                with autocast(task["precision"], device):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            row.update(_measured(step, device, task, arch["batch"]))
        except torch.cuda.OutOfMemoryError:
            row.update(error="out of memory", peak_mib=_peak_mib(device))
        row["wall_s"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        model = None
    return {"rows": rows}


TASKS: Dict[str, Callable[[Dict[str, Any]], Result]] = {
    "openvino_free": openvino_free, "extract": extract_rates, "nvdec": nvdec,
    "network": network, "network_compiled": network_compiled, "train_steps": train_steps,
}


def main() -> None:
    task = json.loads(sys.argv[1])
    if task.get("device", "cpu") == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    result = TASKS[task["task"]](task)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
