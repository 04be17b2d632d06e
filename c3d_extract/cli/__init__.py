"""Command-line entry points: thin click layers over the library (the only place that prints)."""
