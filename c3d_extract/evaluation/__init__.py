"""Evaluating stored descriptors as the C3D paper did.

``labels`` reads labels and split files and matches them to a feature file,
``dataset`` reads the labelled rows, ``svm`` trains and scores linear SVMs,
``pca`` measures compactness and writes reduced (and ActivityNet-layout)
features, ``similarity`` runs the ASLAN-style same/not-same protocol,
``tsne`` embeds descriptors in 2-D and ``plots`` draws the pictures.
"""
