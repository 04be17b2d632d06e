"""Excerpts of ekosman/AnomalyDetectionCVPR2018-Pytorch, verbatim, for tests of our export.

Source: https://github.com/ekosman/AnomalyDetectionCVPR2018-Pytorch
Commit: cc75759fcd544c69cf38eee8c8d228ce48d620f3
Files:  feature_extractor.py (to_segments, FeaturesWriter, read_features, lines 82-233)
        features_loader.py (FeaturesLoader._get_features_list, lines 96-129, as a function)
Licence: MIT, Copyright (c) 2025 eitan kosman; the full text is in LICENSE beside this file.
Only the imports and this docstring were added.
"""

from __future__ import annotations

import logging
import os
from os import path

import numpy as np
import torch
from torch import Tensor


# ---- feature_extractor.py
def to_segments(data: Tensor | np.ndarray, n_segments: int = 32) -> list[np.ndarray]:
    """These code is taken from:

        # https://github.com/rajanjitenpatel/C3D_feature_extraction/blob/b5894fa06d43aa62b3b64e85b07feb0853e7011a/extract_C3D_feature.py#L805

    Args:
        data (Union[Tensor, np.ndarray]): List of features of a certain video
        n_segments (int, optional): Number of segments

    Returns:
        List[np.ndarray]: List of `num` segments
    """
    data = np.array(data)
    Segments_Features = []
    thirty2_shots = np.round(np.linspace(0, len(data) - 1, num=n_segments + 1)).astype(
        int
    )
    for ss, ee in zip(thirty2_shots[:-1], thirty2_shots[1:]):
        if ss == ee:
            temp_vect = data[min(ss, data.shape[0] - 1), :]
        else:
            temp_vect = data[ss:ee, :].mean(axis=0)

        temp_vect = temp_vect / np.linalg.norm(temp_vect)

        if np.linalg.norm(temp_vect) != 0:
            Segments_Features.append(temp_vect.tolist())

    return Segments_Features


class FeaturesWriter:
    """Accumulates and saves extracted features."""

    def __init__(self, num_videos: int, chunk_size: int = 16) -> None:
        self.path = ""
        self.dir = ""
        self.data = {}
        self.chunk_size = chunk_size
        self.num_videos = num_videos
        self.dump_count = 0

    def _init_video(self, video_name: str, dir: str) -> None:
        """Initialize the state of the writer for a new video.

        Args:
            video_name (str): Name of the video to initialize for.
            dir (str): Directory where the video is stored.
        """
        self.path = path.join(dir, f"{video_name}.txt")
        self.dir = dir
        self.data = {}

    def has_video(self) -> bool:
        """Checks whether the writer is initialized with a video.

        Returns:
            bool
        """
        return self.data is not None

    def dump(self, dir: str) -> None:
        """Saves the accumulated features to disk.

        The features will be segmented and normalized.
        """
        logging.info(f"{self.dump_count} / {self.num_videos}:	Dumping {self.path}")
        self.dump_count += 1
        self.dir = dir
        if not path.exists(self.dir):
            os.makedirs(self.dir, exist_ok=True)
        #####################################################
        # Check if data is empty before attempting to process it
        if len(self.data) == 0:
            logging.warning("No data to dump, skipping.")
            return  # If data is empty, skip this dump.
        #####################################################
        features = to_segments(np.array([self.data[key] for key in sorted(self.data)]))
        with open(self.path, "w") as fp:
            for d in features:
                d_str = [str(x) for x in d]
                fp.write(" ".join(d_str) + "\n")

    def _is_new_video(self, video_name: str, dir: str) -> bool:
        """Checks whether the given video is new or the writer is already
        initialized with it.

        Args:
            video_name (str): Name of the possibly new video.
            dir (str): Directory where the video is stored.

        Returns:
            bool
        """
        new_path = path.join(dir, f"{video_name}.txt")
        if self.path != new_path and self.path is not None:
            return True

        return False

    def store(self, feature: Tensor | np.ndarray, idx: int) -> None:
        """Accumulate features.

        Args:
            feature (Union[Tensor, np.ndarray]): Features to be accumulated.
            idx (int): Indices of features in the video.
        """
        self.data[idx] = list(feature)

    def write(
        self, feature: Tensor | np.ndarray, video_name: str, idx: int, dir: str
    ) -> None:
        if not self.has_video():
            self._init_video(video_name, dir)
        if self._is_new_video(video_name, dir):
            self.dump(dir)
            self._init_video(video_name, dir)

        self.store(feature, idx)


def read_features(file_path, cache: dict[str, Tensor] | None = None) -> Tensor:
    """Reads features from file.

    Args:
        file_path (_type_): Path to a text file containing features. Each line should contain a feature
            for a single video segment.
        cache (Dict, optional): A cache that stores features that were already loaded.
            If `None`, caching is disabled.Defaults to None.

    Raises:
        FileNotFoundError: The provided path does not exist.

    Returns:
        Tensor
    """
    if cache is not None and file_path in cache:
        return cache[file_path]

    if not path.exists(file_path):
        raise FileNotFoundError(f"Feature doesn't exist: `{file_path}`")

    features = None
    with open(file_path) as fp:
        data = fp.read().splitlines(keepends=False)
        features = torch.tensor(
            np.stack([line.split(" ") for line in data]).astype(np.float32)
        )

    if cache is not None:
        cache[file_path] = features
    return features


# ---- features_loader.py: FeaturesLoader._get_features_list (a staticmethod there)
def _get_features_list(
    features_path: str, annotation_path: str
) -> tuple[list[str], list[str]]:
    """Retrieves the paths of all feature files contained within the
    annotation file.

    Args:
        features_path: Path to the directory that contains feature text files
        annotation_path: Path to the annotation file

    Returns:
        Tuple[List[str], List[str]]: Two list that contain the corresponding paths of normal and abnormal
            feature files.
    """
    if not os.path.exists(features_path):
        raise FileNotFoundError(
            f"FeaturesLoader:: failed to locate features path: `{features_path}'"
        )
    features_list_normal = []
    features_list_anomaly = []
    with open(annotation_path) as f:
        lines = f.read().splitlines(keepends=False)
        for line in lines:
            items = line.split()
            file = items[0].split(".")[0]
            file = file.replace("/", os.sep)
            feature_path = os.path.join(features_path, file)
            if "Normal" in feature_path:
                features_list_normal.append(feature_path)
            else:
                features_list_anomaly.append(feature_path)

    return features_list_normal, features_list_anomaly
