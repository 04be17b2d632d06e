"""Two-dimensional t-SNE embedding of video descriptors, for looking at class structure."""

from __future__ import annotations

from typing import Optional

import numpy as np

from c3d_extract.errors import UsageError


def default_perplexity(n_samples: int) -> float:
    """sklearn's default of 30, lowered for small sets (perplexity must stay below n)."""
    return float(min(30.0, max(2.0, (n_samples - 1) / 3.0)))


def embed(features: np.ndarray, *, perplexity: Optional[float] = None, seed: int = 0,
          pca_dims: int = 50) -> np.ndarray:
    """``(n, 2)`` t-SNE coordinates; wide descriptors are first reduced to ``pca_dims`` by PCA."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    n = len(features)
    if n < 4:
        raise UsageError(f"t-SNE needs at least 4 videos, not {n}")
    perplexity = default_perplexity(n) if perplexity is None else perplexity
    if not 0 < perplexity < n:
        raise UsageError(f"perplexity must be between 0 and the number of videos ({n}), "
                         f"not {perplexity}")
    data = np.asarray(features, np.float32)
    if data.shape[1] > pca_dims and n > pca_dims:
        data = PCA(n_components=pca_dims, random_state=seed).fit_transform(data)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                learning_rate="auto").fit_transform(data)
