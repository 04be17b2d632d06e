"""Build the README's prediction pictures from a generated video.

    python docs/predictions/make_figures.py [OUT_DIR]     (default: docs/predictions)

Writes a 96-frame video whose content changes halfway (a sweeping bar, then a
checkerboard), a C3D with seeded random convolutions and fc6/fc7 whose four-class fc8 is
fitted to tell the two halves apart (its fc7 directions), then runs
``c3d-predict --timeline --overlay`` on it and draws ``overlay_frame.png`` (one frame of
the overlay video) and ``timeline.png`` (the per-window probabilities from the CSV).
No trained network is involved: the pictures show what the outputs look like.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile

import numpy as np

CLASSES = ["sweeping bar", "checkerboard", "other 1", "other 2"]
WIDTH, HEIGHT, N_FRAMES, FPS = 320, 240, 96, 24


def frame(index: int) -> np.ndarray:
    """A bar sweeping right, then (from frame 48) a checkerboard scrolling down."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    picture = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    if index < N_FRAMES // 2:
        picture[...] = (40, 90, 140)
        left = (index * 6) % (WIDTH - 24)
        picture[:, left:left + 24] = (250, 220, 40)
    else:
        board = (((x // 20) + ((y + 4 * index) // 20)) % 2).astype(bool)
        picture[...] = (230, 230, 230)
        picture[board] = (160, 30, 30)
    return picture


def write_video(path: str) -> None:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(N_FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame(index), "rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_weights(path: str, video: str) -> None:
    """Seeded random convolutions and fc6/fc7; fc8 fitted to tell the two halves apart."""
    import torch
    from safetensors.torch import save_file

    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.extraction.stream import iter_records
    from c3d_extract.models.c3d import build_c3d
    from c3d_extract.weights.loading import LoadedWeights

    model = build_c3d(num_classes=len(CLASSES), seed=3)
    weights = LoadedWeights(state_dict=model.state_dict(), name="demo", sha256="demo",
                            source_format="safetensors")
    (record,) = iter_records([("demo", video)], weights,
                             ExtractOptions(layers=("fc7",), per_clip=True))
    fc7 = record.clip_features["fc7"].astype(np.float64)
    first = record.clip_starts + 16 <= N_FRAMES // 2
    second = record.clip_starts >= N_FRAMES // 2
    centre = fc7.mean(0)
    rows = []
    for group in (first, second):
        direction = fc7[group].mean(0) - centre
        rows.append(direction * 4.0 / float(direction @ direction))  # logit +4 at the group mean
    rng = np.random.default_rng(0)
    rows += [rng.normal(0, 1e-4, fc7.shape[1]) for _ in CLASSES[2:]]
    weight = np.stack(rows)
    with torch.no_grad():
        model.fc8.weight.copy_(torch.from_numpy(weight))
        model.fc8.bias.copy_(torch.from_numpy(-weight @ centre))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def overlay_frame(video: str, index: int, out: str) -> None:
    import av
    import cv2

    with av.open(video) as container:
        for number, decoded in enumerate(container.decode(video=0)):
            if number == index:
                cv2.imwrite(out, cv2.cvtColor(decoded.to_ndarray(format="rgb24"),
                                              cv2.COLOR_RGB2BGR))
                return
    raise SystemExit(f"{video} has fewer than {index + 1} frames")


def timeline_plot(timeline_csv: str, out: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from c3d_extract.predict.overlay import class_colour

    with open(timeline_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    centres = np.array([(float(r["start_s"]) + float(r["end_s"])) / 2 for r in rows])
    figure = Figure(figsize=(7, 2.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, name in enumerate(CLASSES):
        values = [next((float(r[f"probability_{k}"]) for k in range(1, len(CLASSES) + 1)
                        if r[f"label_{k}"] == name), 0.0) for r in rows]
        axes.plot(centres, values, marker="o", label=name,
                  color=np.array(class_colour(index)) / 255)
    axes.set_xlabel("window centre (s)")
    axes.set_ylabel("probability")
    axes.set_ylim(0, 1.02)
    axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    axes.set_title("c3d-predict --timeline (demo model, 16-frame windows at stride 8)")
    figure.savefig(out, format="png", bbox_inches="tight")


def main() -> None:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as work:
        video, weights = os.path.join(work, "demo.mp4"), os.path.join(work, "demo.safetensors")
        labels, timeline = os.path.join(work, "labels.txt"), os.path.join(work, "timeline.csv")
        overlay = os.path.join(work, "overlay.mp4")
        write_video(video)
        write_weights(weights, video)
        with open(labels, "w") as handle:
            handle.write("".join(f"{name}\n" for name in CLASSES))
        subprocess.run([sys.executable, "-m", "c3d_extract.cli.predict", video, "--weights",
                        weights, "--labels", labels, "-k", "4", "--timeline", timeline,
                        "--overlay", overlay], check=True)
        overlay_frame(overlay, 30, os.path.join(out_dir, "overlay_frame.png"))
        timeline_plot(timeline, os.path.join(out_dir, "timeline.png"))


if __name__ == "__main__":
    main()
