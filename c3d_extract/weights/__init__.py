"""Weights: where they come from, how they are read, and the preset that travels with them."""

from c3d_extract.weights.loading import (  # noqa: F401
    DEFAULT_WEIGHTS_FILE, LoadedWeights, cache_dir, default_weights_path, file_sha256,
    load_network, load_state_dict, random_weights,
)
