"""Features from videos: the options of a run (``options``), its network and runner
(``network``, ``backends``, ``torch_runner``, ``openvino_runner``, behind the ``Runner``
protocol of ``runners``), clip batches across videos (``batching``), the streaming core
(``stream``), per-video pooling (``pooling``), and the resumable run into a feature file
(``run``), on one machine or with Ray (``ray_job``)."""
