"""Run the throughput benchmark: ``python -m benchmarks.run --out DIR [--quick] [--device auto]``.

Writes ``DIR/bench.json`` (every figure, each a median of several runs with the
runs themselves, plus hardware, versions and settings) and prints a Markdown
table that can be pasted into BENCHMARKS.md. Corpora are generated on first
use and cached in ``DIR/corpus``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks.corpus import CORPORA, ensure_corpus
from benchmarks.measure import isolated, proc_kib

#: Targets on a CPU with bf16 matrix units (issue 6).
TARGETS = {
    "bf16_over_fp32": 2.5,          # model only
    "e2e_over_model": 0.90,         # whole extraction vs network alone, same precision
    "e2e_over_naive": 3.0,          # fastest extraction vs the naive script
    "min_cosine_bf16_fp32": 0.999,
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for bench.json and the corpora")
    parser.add_argument("--quick", action="store_true",
                        help="short corpora and 2 runs each (a few minutes on a CPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--decoder", default="decord",
                        help="decoder of the end-to-end runs (decode-only covers all)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    (out / "work").mkdir(parents=True, exist_ok=True)
    results = run(out, quick=args.quick, device=args.device, decoder=args.decoder)
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nwritten: {out / 'bench.json'}", file=sys.stderr)
    return 0


def run(out: Path, *, quick: bool, device: str, decoder: str) -> Dict[str, Any]:
    from c3d_extract.decoders import available_decoders
    from c3d_extract.extractor import default_batch_size
    from c3d_extract.runner import resolve_device
    from c3d_extract.workers import default_workers

    resolved = resolve_device(device)
    on_gpu = resolved.type == "cuda"
    repeats = 2 if quick else 3
    # Slow configurations on a CPU (fp32 over a whole corpus, the naive script) run once.
    slow_repeats = repeats if on_gpu else 1
    batch_size = default_batch_size(resolved.type)
    settings = {
        "mode": "quick" if quick else "full", "device": str(resolved), "decoder": decoder,
        "repeats": repeats, "slow_repeats": slow_repeats, "batch_size": batch_size,
        "workers": default_workers(resolved.type), "weights": "random (seed 0)",
        "layers": ["fc6"], "clip_len": 16, "stride": 8,
        "model_batches_per_repeat": 20 if on_gpu else 1,
    }
    started = time.perf_counter()
    results: Dict[str, Any] = {"settings": settings, "hardware": hardware(resolved),
                               "versions": versions(), "corpora": {}, "decode": [],
                               "model": [], "e2e": [], "naive": [], "agreement": {}}
    log = _Log()
    folders = {}
    for spec in CORPORA["quick" if quick else "full"]:
        log(f"corpus {spec.name}: {spec.n_videos} x {spec.n_frames} frames "
            f"{spec.width}x{spec.height}")
        folders[spec.name] = str(ensure_corpus(spec, out / "corpus"))
        results["corpora"][spec.name] = {
            "n_videos": spec.n_videos, "n_frames": spec.n_frames, "width": spec.width,
            "height": spec.height, "fps": spec.fps, "codecs": list(spec.codecs)}

    for name, folder in folders.items():
        for backend in available_decoders():
            log(f"decode-only {backend} on {name}")
            result = isolated({"task": "decode", "folder": folder, "decoder": backend,
                               "repeats": repeats})
            results["decode"].append({"corpus": name, "decoder": backend, **result})

    log("model-only fp32 and bf16, in turns")
    result = isolated({"task": "model", "device": str(resolved), "precisions": ["fp32", "bf16"],
                       "batch_size": batch_size, "repeats": repeats,
                       "batches_per_repeat": settings["model_batches_per_repeat"],
                       "warmup": 3 if on_gpu else 1})
    memory = {k: v for k, v in result.items() if k != "results"}
    results["model"] = [{**figures, **memory} for figures in result.pop("results")]

    work = out / "work"
    for name, folder in folders.items():
        for precision in ("fp32", "bf16"):
            log(f"end-to-end {precision} on {name}")
            n = repeats if precision == "bf16" else slow_repeats
            keep = str(work / f"e2e-{name}-{precision}.h5")
            result = isolated({"task": "e2e", "folder": folder, "device": str(resolved),
                               "precision": precision, "decoder": decoder,
                               "batch_size": batch_size, "workers": 0, "repeats": n,
                               "warmup": 3 if on_gpu else 1, "keep": keep})
            results["e2e"].append({"corpus": name, **result})
    first = next(iter(folders))
    log(f"naive baseline on {first}")
    keep = str(work / f"naive-{first}.npz")
    result = isolated({"task": "naive", "folder": folders[first], "device": str(resolved),
                       "repeats": slow_repeats, "keep": keep})
    results["naive"].append({"corpus": first, **result})

    results["agreement"] = agreement(work, list(folders), first)
    results["ratios"] = ratios(results, first)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def agreement(work: Path, corpora: List[str], naive_corpus: str) -> Dict[str, Any]:
    """Cosine similarity of bf16 and fp32 descriptors, video by video; and the pipeline's
    fp32 descriptors against the naive script's (the same computation, written apart)."""
    from c3d_extract.store import read_features

    cosines: Dict[str, float] = {}
    for name in corpora:
        ids32, fp32 = read_features(str(work / f"e2e-{name}-fp32.h5"))
        ids16, bf16 = read_features(str(work / f"e2e-{name}-bf16.h5"))
        rows16 = {video: row for video, row in zip(ids16, bf16)}
        for video, row in zip(ids32, fp32):
            other = rows16[video]
            cosines[f"{name}/{video}"] = float(
                row @ other / (np.linalg.norm(row) * np.linalg.norm(other)))
    ids, fp32 = read_features(str(work / f"e2e-{naive_corpus}-fp32.h5"))
    naive = np.load(work / f"naive-{naive_corpus}.npz")
    naive_diff = max(float(np.abs(naive[video] - row).max()) for video, row in zip(ids, fp32))
    return {"min_cosine_bf16_fp32": min(cosines.values()), "cosine_bf16_fp32": cosines,
            "max_abs_diff_fp32_vs_naive": naive_diff}


def ratios(results: Dict[str, Any], first: str) -> Dict[str, Any]:
    model = {r["precision"]: r["clips_per_s"]["median"] for r in results["model"]}
    e2e = {(r["corpus"], r["precision"]): r["clips_per_s"]["median"] for r in results["e2e"]}
    naive = results["naive"][0]["clips_per_s"]["median"]
    measured = {
        "bf16_over_fp32": model["bf16"] / model["fp32"],
        "e2e_over_model": e2e[(first, "bf16")] / model["bf16"],
        "e2e_fp32_over_model": e2e[(first, "fp32")] / model["fp32"],
        "e2e_over_naive": e2e[(first, "bf16")] / naive,
        "e2e_fp32_over_naive": e2e[(first, "fp32")] / naive,
        "min_cosine_bf16_fp32": results["agreement"]["min_cosine_bf16_fp32"],
    }
    met = {name: measured[name] >= target for name, target in TARGETS.items()}
    return {"measured": {k: round(v, 6) for k, v in measured.items()}, "targets": TARGETS,
            "met": met}


# ---------------------------------------------------------------- the table

def markdown(results: Dict[str, Any]) -> str:
    hw, settings = results["hardware"], results["settings"]
    gpu = f"{hw['gpu']} ({hw['gpu_memory_gib']} GiB)" if hw["gpu"] else "none"
    lines = [
        f"Hardware: {hw['cpu']}, {hw['cores']} cores ({hw['cpu_bf16']}), "
        f"{hw['memory_gib']} GiB; GPU: {gpu}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
        f"Settings: {settings['mode']} run on {settings['device']}, medians of "
        f"{settings['repeats']} runs ({settings['slow_repeats']} for fp32 end-to-end and "
        f"the naive script), batch {settings['batch_size']}, {settings['workers']} decode "
        f"worker(s), decoder {settings['decoder']}, {results['seconds']:.0f} s in all",
        "",
        "| measurement | corpus | precision | clips/s | video frames/s | peak RSS MiB "
        "| GPU peak MiB |",
        "|---|---|---|---:|---:|---:|---:|",
    ]

    def row(what, corpus, precision, clips, frames, memory) -> None:
        gpu_mib = memory.get("cuda_max_allocated_mib")
        lines.append(f"| {what} | {corpus} | {precision} | {_num(clips)} | {_num(frames)} "
                     f"| {_num(memory.get('peak_rss_total_mib'))} | {_num(gpu_mib)} |")

    for r in results["decode"]:
        row(f"decode only ({r['decoder']}, 1 core)", r["corpus"], "-", None,
            r["frames_per_s"]["median"], r)
    for r in results["model"]:
        clips = r["clips_per_s"]["median"]
        row("model only", "synthetic", r["precision"], clips, clips * settings["stride"], r)
    for r in results["e2e"]:
        row("end to end (`extract`)", r["corpus"], r["precision"], r["clips_per_s"]["median"],
            r["frames_per_s"]["median"], r)
    for r in results["naive"]:
        row("naive script", r["corpus"], "fp32", r["clips_per_s"]["median"],
            r["frames_per_s"]["median"], r)
    ratio = results["ratios"]
    names = {
        "bf16_over_fp32": "model only, bf16 / fp32",
        "e2e_over_model": "end to end / model only (bf16)",
        "e2e_fp32_over_model": "end to end / model only (fp32)",
        "e2e_over_naive": "end to end bf16 / naive script",
        "e2e_fp32_over_naive": "end to end fp32 / naive script",
        "min_cosine_bf16_fp32": "min cosine, bf16 vs fp32 descriptors",
    }
    lines += ["", "| ratio | measured | target | met |", "|---|---:|---:|---|"]
    for key, label in names.items():
        target = ratio["targets"].get(key)
        value = ratio["measured"][key]
        shown = f"{value:.5f}" if key.startswith("min_cosine") else f"{value:.2f}"
        met = "-" if target is None else ("yes" if ratio["met"][key] else "**no**")
        lines.append(f"| {label} | {shown} | {'-' if target is None else target} | {met} |")
    diff = results["agreement"]["max_abs_diff_fp32_vs_naive"]
    lines.append(f"\nPipeline fp32 vs the naive script's descriptors: max abs difference "
                 f"{diff:.2e}.")
    return "\n".join(lines)


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


# ---------------------------------------------------------------- what it ran on

def hardware(device) -> Dict[str, Any]:
    import torch

    flags = _cpuinfo("flags").split()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    info: Dict[str, Any] = {
        "cpu": _cpuinfo("model name") or platform.processor(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_bf16": "+".join(bf16) if bf16 else "no bf16 units",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "memory_gib": round(proc_kib("/proc/meminfo", "MemTotal") / 2**20, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "gpu": None, "gpu_memory_gib": None,
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["gpu"] = properties.name
        info["gpu_memory_gib"] = round(properties.total_memory / 2**30, 1)
    return info


def versions() -> Dict[str, Optional[str]]:
    import importlib

    import torch

    import c3d_extract

    found: Dict[str, Optional[str]] = {
        "python": platform.python_version(), "c3d_extract": c3d_extract.__version__,
        "torch": torch.__version__,
        "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
    }
    for module in ("decord", "av", "torchcodec", "cv2", "numpy", "h5py"):
        try:
            found[module] = getattr(importlib.import_module(module), "__version__", "?")
        except ImportError:
            found[module] = None
    return found


def _cpuinfo(key: str) -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.split(":")[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


class _Log:
    """Progress lines on stderr, with the time since the start."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.0f} s] {message}", file=sys.stderr,
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
