"""Labels and split files of action datasets (UCF101, HMDB51, labels CSV), read the same way
by evaluation and by training."""
