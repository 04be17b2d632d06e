"""Training and fine-tuning video models: datasets and splits, clip sampling, the training
loop, crash-safe checkpoints, distributed data-parallel runs, metrics and export."""
