"""Figures written beside results: training curves, confusion matrices, compactness, ROC and
t-SNE plots, each replaced atomically."""
