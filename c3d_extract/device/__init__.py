"""Where a network runs: the CPU's features (``hardware``), the device, precision and autocast
(``precision``), out-of-memory messages (``memory``), launchers such as torchrun (``launch``)
and the share of the videos each process takes (``sharding``)."""
