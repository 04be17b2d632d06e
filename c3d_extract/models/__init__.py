"""Network architectures and the registry that names them.

``registry`` maps an architecture name (``c3d``, ``r2plus1d_18``) to its builder,
its default input preset, its clip length and crop size, and the layers that can be
extracted from it. Extraction, prediction and training all build models through it.
"""
