"""Training video models: datasets and their splits, clip sampling, and (in later modules) the
training loop, checkpoints and metrics.

``datasets`` reads UCF101, HMDB51, Kinetics and plain class folders into train / validation /
test lists of ``Sample`` and refuses lists that leak between training and test; ``clips`` turns
a sample into uint8 clips (random in training, centred and windowed for evaluation) with the
same resize as extraction.
"""
