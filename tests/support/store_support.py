"""Run parameters, records and whole feature files for tests that use the store directly."""

import numpy as np

from c3d_extract.store.records import RunParameters, VideoRecord
from c3d_extract.store.write import FeatureStore

#: The layers of the records below and their sizes.
DIMS = {"fc6": 6, "prob": 3}


def run_parameters(**changes) -> RunParameters:
    """fc6 + prob, the paper's clip protocol, per-clip rows; ``changes`` override fields."""
    base = dict(layers=("fc6", "prob"), clip_len=16, stride=8, short_policy="pad",
                weights="w.safetensors", weights_sha256="abc", preprocessing="{}",
                precision="fp32", per_clip=True)
    base.update(changes)
    return RunParameters(**base)


def record(video_id, status="ok", seed=0, n_clips=2):
    """A video of ``n_clips`` seeded clips of ``DIMS``, or a failed one for status "error"."""
    if status == "error":
        return VideoRecord(id=video_id, status="error", error="broken")
    rng = np.random.default_rng(seed)
    clip_fc6 = rng.random((n_clips, 6)).astype(np.float32)
    clip_prob = rng.random((n_clips, 3)).astype(np.float32)
    return VideoRecord(
        id=video_id, status=status, n_frames=8 * n_clips + 8, n_clips=n_clips, fps=25.0,
        width=64, height=48,
        features={"fc6": clip_fc6.mean(0) / np.linalg.norm(clip_fc6.mean(0)),
                  "prob": clip_prob.mean(0) / np.linalg.norm(clip_prob.mean(0))},
        clip_features={"fc6": clip_fc6, "prob": clip_prob},
        clip_starts=np.arange(n_clips, dtype=np.int64) * 8)


def write(path, records, p=None, commit=True, **kwargs):
    """Adds ``records`` to the feature file ``path`` (parameters ``p``, by default
    ``run_parameters()``), commits unless told not to, and returns what the file holds."""
    with FeatureStore(str(path), p or run_parameters(), DIMS, **kwargs) as store:
        for r in records:
            store.add(r)
        store.sync()
        if commit:
            store.commit(complete=True, n_inputs=len(records))
        return dict(store.done)
