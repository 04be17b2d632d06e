"""Predictions of a trained or published model on videos: class probabilities per video
(``classify``), per window (``timeline``), and drawn onto the video (``overlay``)."""
