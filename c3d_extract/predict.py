"""Class predictions per video (Sports-1M C3D or any model file): the mean of ``prob`` over
its clips, top k.

The video-level ``prob`` is the plain average of the clips' softmax outputs (as the
paper's video top-5 was computed), not the L2-normalised descriptor the extractor
stores, so the probabilities sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from c3d_extract.errors import LabelsError, UsageError
from c3d_extract.weights.loading import LoadedWeights

if TYPE_CHECKING:
    from c3d_extract.extractor import ExtractOptions
    from c3d_extract.weights.networks import LoadedModel

#: A C3D state dict or a network of any architecture (``networks.load_model``).
Network = Union[LoadedWeights, "LoadedModel"]


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


def class_names_for(weights: Network,
                    labels: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
    """Names from a labels file (if given) or embedded in the weights; their count must match
    the network's classes. Empty when neither has any."""
    names = tuple(labels) if labels is not None else weights.class_names
    if names and len(names) != weights.num_classes:
        raise LabelsError(f"{len(names)} class names for a network with "
                          f"{weights.num_classes} classes")
    return names


def predict(videos: Sequence[Tuple[str, str]], weights: Network, *, top_k: int = 5,
            class_names: Sequence[str] = (), options: Optional["ExtractOptions"] = None,
            mean: Optional[str] = None) -> Iterator[Prediction]:
    """Yield each video's top-k prediction as it finishes (completion order).

    ``videos`` are ``(video_id, path)`` pairs; ``options`` an ``ExtractOptions`` whose
    layers and per-clip setting are replaced by ``prob`` and per-clip rows; ``mean`` a
    mean file replacing the weights' preset mean.
    """
    from c3d_extract.extractor import ExtractOptions, iter_records, prepare_network

    if top_k < 1:
        raise UsageError("top-k must be at least 1")
    if not weights.num_classes:
        raise UsageError(f"{weights.name} has no fc8 (no classifier), so it cannot predict "
                         "classes; use weights with fc8, e.g. sports1m-caffe")
    options = replace(options or ExtractOptions(), layers=("prob",), per_clip=True)
    network = prepare_network(weights, options, mean=mean)
    for record in iter_records(list(videos), network, options):
        clips = record.clip_features.get("prob")
        if clips is None or len(clips) == 0:
            yield Prediction(record.id, record.status, record.error or "no clips")
            continue
        mean = np.asarray(clips, np.float64).mean(axis=0)
        yield Prediction(record.id, record.status, record.error, int(len(clips)),
                         top_classes(mean, top_k, class_names))


def predict_in_order(videos: Sequence[Tuple[str, str]], weights: Network, *,
                     top_k: int = 5, class_names: Sequence[str] = (),
                     options: Optional["ExtractOptions"] = None,
                     mean: Optional[str] = None) -> List[Prediction]:
    """``predict`` collected in the order of ``videos``."""
    position = {video_id: n for n, (video_id, _) in enumerate(videos)}
    found = list(predict(videos, weights, top_k=top_k, class_names=class_names,
                         options=options, mean=mean))
    return sorted(found, key=lambda p: position.get(p.video_id, len(position)))
