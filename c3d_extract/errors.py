"""Typed errors raised by the library; the CLI turns them into messages and exit codes."""

from typing import Sequence


class C3DError(Exception):
    """Base class of every error the library raises on purpose."""


class UsageError(C3DError):
    """A parameter or option value the user gave cannot be used (exit code 2)."""


class InputNotFoundError(UsageError):
    """An input path, list file or other file named by the user does not exist."""


class DatasetError(UsageError):
    """A training dataset or its split files are malformed, or list videos that are not there."""


class SplitOverlapError(UsageError):
    """The training list shares videos or UCF101 groups with the test list.

    ``groups`` and ``videos`` hold every overlapping group and video.
    """

    def __init__(self, message: str, groups: Sequence[str] = (),
                 videos: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.groups = list(groups)
        self.videos = list(videos)


class WeightsError(C3DError):
    """A weights file is missing, unreadable, of unknown format or does not fit the network."""


class WeightsNotFoundError(WeightsError):
    """No weights were given and none were found in the default places."""


class ModelFileError(WeightsError):
    """A model file (``model.safetensors``) has missing or wrong metadata or tensors."""


class ChecksumError(WeightsError):
    """A file's sha256 differs from the one recorded for it."""


class DownloadError(WeightsError):
    """A download failed or could not be started."""


class VideoReadError(C3DError):
    """A video could not be decoded; recorded per video, never fatal for a run."""


class DeviceMemoryError(C3DError):
    """The GPU ran out of memory running the network; the message names a smaller batch.

    ``batch_size`` is the batch that did not fit, ``suggested`` the one to try (0: none).
    """

    def __init__(self, message: str, batch_size: int = 0, suggested: int = 0) -> None:
        super().__init__(message)
        self.batch_size = batch_size
        self.suggested = suggested


class StoreError(C3DError):
    """The feature file cannot be read, written or resumed."""


class OutputLockedError(StoreError):
    """Another run is writing the same output."""


class ParameterMismatchError(StoreError):
    """A rerun's parameters differ from those recorded in the existing output."""


class LabelsError(C3DError):
    """A labels or split file is malformed or does not match the features."""


class MergeError(C3DError):
    """Shard files cannot be merged: some are missing, unfinished or do not belong together.

    ``problems`` lists each reason, one line each.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class ClusterError(C3DError):
    """The Ray cluster cannot be reached or started."""


class TrainingError(C3DError):
    """Training cannot go on (e.g. the loss is no longer finite)."""


class ExportError(C3DError):
    """Features cannot be exported in the requested format (the store lacks what the format
    needs, or a video's segments cannot be normalised)."""
