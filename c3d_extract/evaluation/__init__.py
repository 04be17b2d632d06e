"""Evaluating stored descriptors as the C3D paper did.

``labelled_features`` reads the rows of a feature file that the labels and split files
(``datasets.labels``) name, ``svm`` trains and scores linear SVMs,
``pca`` measures compactness and writes reduced (and ActivityNet-layout)
features, ``similarity`` runs the ASLAN-style same/not-same protocol,
``tsne`` embeds descriptors in 2-D; ``reports.plots`` draws the pictures.
"""
