"""Run parameters for tests that write feature files with the store directly."""

from c3d_extract.store.records import RunParameters


def run_parameters(**changes) -> RunParameters:
    """fc6 + prob, the paper's clip protocol, per-clip rows; ``changes`` override fields."""
    base = dict(layers=("fc6", "prob"), clip_len=16, stride=8, short_policy="pad",
                weights="w.safetensors", weights_sha256="abc", preprocessing="{}",
                precision="fp32", per_clip=True)
    base.update(changes)
    return RunParameters(**base)
