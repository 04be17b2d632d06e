"""Training video models: datasets and their splits, clip sampling, the training loop,
crash-safe checkpoints, distributed data-parallel runs, metrics and export.

``datasets`` reads UCF101, HMDB51, Kinetics and plain class folders into train / validation /
test lists of ``Sample`` and refuses lists that leak between training and test; ``clip_sampling``
turns a sample into uint8 clips (random in training, centred and windowed for evaluation) with the
same resize as extraction; ``run`` drives a run folder (``loop``, ``checkpoint``,
``distributed``, ``metrics``, ``optim``, ``model_init``; the precision is
``device.precision``'s).
"""
