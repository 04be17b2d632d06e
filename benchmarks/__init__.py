"""Throughput benchmark of the extraction pipeline: ``python -m benchmarks.run --out DIR``.

Generates its own videos (``corpus``), measures decoding, the network alone,
the whole extraction and a naive baseline (``measure``), and writes
``DIR/bench.json`` plus a Markdown table (``run``).
"""
