"""Class predictions per video, for any loaded network: the mean of ``prob`` over its clips,
top k, and per window.

The video-level ``prob`` is the plain average of the clips' softmax outputs (as the
paper's video top-5 was computed), not the L2-normalised descriptor the extractor
stores, so the probabilities sum to 1. The windows are the clips themselves
(``timeline``): the model's clip length, half of it apart unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from c3d_extract.errors import LabelsError, UsageError
from c3d_extract.predict.timeline import Timeline, build_timeline
from c3d_extract.weights.convert import LoadedWeights
from c3d_extract.weights.networks import LoadedModel, load_model

if TYPE_CHECKING:
    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.extraction.run import Progress

#: A C3D state dict or a network of any architecture (``networks.load_model``).
Network = Union[LoadedWeights, LoadedModel]


@dataclass(frozen=True)
class ClassScore:
    index: int       # 0-based class index
    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """One video's top classes, or why it has none."""

    video_id: str
    status: str                      # as in VideoRecord: ok, padded, looped, skipped, error
    error: str = ""
    n_clips: int = 0
    top: Tuple[ClassScore, ...] = ()
    timeline: Optional[Timeline] = None  # per window, when asked for
    warnings: Tuple[str, ...] = ()       # decoded, but something looked wrong

    def to_dict(self) -> Dict[str, object]:
        return {"id": self.video_id, "status": self.status, "error": self.error,
                "n_clips": self.n_clips,
                "top": [{"index": s.index, "name": s.name, "probability": s.probability}
                        for s in self.top]}


def top_classes(probabilities: np.ndarray, k: int,
                class_names: Sequence[str] = ()) -> Tuple[ClassScore, ...]:
    """The ``k`` most probable classes, highest first (ties: lower index first)."""
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    order = sorted(range(probabilities.size), key=lambda i: (-probabilities[i], i))[:k]
    return tuple(ClassScore(i, class_names[i] if class_names else f"class {i}",
                            float(probabilities[i])) for i in order)


def class_names_for(model: Network,
                    labels: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
    """Names from a labels file (if given) or embedded in the weights; their count must match
    the network's classes. Empty when neither has any."""
    names = tuple(labels) if labels is not None else model.class_names
    if names and len(names) != model.num_classes:
        raise LabelsError(f"{len(names)} class names for a network with "
                          f"{model.num_classes} classes")
    return names


def predict(videos: Sequence[Tuple[str, str]], model: Network, *,
            top_k: int = 5, class_names: Sequence[str] = (),
            options: Optional["ExtractOptions"] = None, mean: Optional[str] = None,
            stride: Optional[int] = None, smooth: int = 1,
            timeline: bool = False,
            progress: Optional["Progress"] = None) -> Iterator[Prediction]:
    """Yield each video's top-k prediction as it finishes (completion order).

    ``videos`` are ``(video_id, path)`` pairs; ``options`` an ``ExtractOptions`` whose
    layers, clip length and per-clip setting are replaced by the model's; ``stride``
    (default half the clip length) spaces the windows; ``mean`` a mean file replacing the
    preset mean. With ``timeline``, each prediction carries its windows' top-k, after a
    moving average over ``smooth`` windows. ``progress`` (``extraction.run.Progress``) hears of
    each batch of windows and each video, once the network is ready.
    """
    from c3d_extract.extraction.network import prepare_network
    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.extraction.run import Progress
    from c3d_extract.extraction.stream import iter_records

    if top_k < 1:
        raise UsageError("top-k must be at least 1")
    if smooth < 1:
        raise UsageError("smoothing needs at least 1 window")
    if stride is not None and stride < 1:
        raise UsageError("stride must be at least 1")
    loaded = load_model(model)
    if loaded.probability_layer is None:
        raise UsageError(f"{loaded.name} has no fc8 (no classifier), so it cannot predict "
                         "classes; use weights with fc8, e.g. sports1m-caffe")
    layer = loaded.probability_layer
    options = replace(options or ExtractOptions(), layers=(layer,), per_clip=True,
                      clip_len=loaded.clip_len, stride=stride or max(1, loaded.clip_len // 2))
    progress = progress or Progress()
    network = prepare_network(loaded, options, mean=mean, notify=progress.notice)
    progress.start(len(videos), 0)
    for record in iter_records(list(videos), network, options, progress.clips_done,
                               progress.frames_decoded):
        progress.video_done(record)
        clips = record.clip_features.get(layer)
        if clips is None or len(clips) == 0:
            yield Prediction(record.id, record.status, record.error or "no clips",
                             warnings=record.warnings)
            continue
        average = np.asarray(clips, np.float64).mean(axis=0)
        windows = None
        if timeline:
            windows = build_timeline(record.id, record.clip_starts, clips,
                                     clip_len=options.clip_len, n_frames=record.n_frames,
                                     fps=record.fps, top_k=top_k, smooth=smooth,
                                     class_names=class_names)
        yield Prediction(record.id, record.status, record.error, int(len(clips)),
                         top_classes(average, top_k, class_names), timeline=windows,
                         warnings=record.warnings)


def predict_in_order(videos: Sequence[Tuple[str, str]],
                     model: Network, **settings) -> List[Prediction]:
    """``predict`` (same keyword settings) collected in the order of ``videos``."""
    position = {video_id: n for n, (video_id, _) in enumerate(videos)}
    found = list(predict(videos, model, **settings))
    return sorted(found, key=lambda p: position.get(p.video_id, len(position)))
