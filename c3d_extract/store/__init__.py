"""The HDF5 feature file: its layout (``layout``), reading (``read``), the crash-safe writer
(``write``: journal, locks, commit in place), what a rerun must match (``rerun_checks``),
the records of one video and one run (``records``), and merging shard files (``merge``)."""
