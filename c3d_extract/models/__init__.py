"""Network architectures and the registry that names them.

``c3d`` and ``r2plus1d`` define the networks, each with its ``Architecture``
(``architecture``); ``state_dicts`` compares a state dict with a network's. ``registry``
holds the table that maps an architecture name (``c3d``, ``r2plus1d_18``) to its builder,
its default input preset, its clip length and crop size, and the layers that can be
extracted from it. Extraction, prediction and training all build models through it.
"""
