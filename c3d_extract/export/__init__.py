"""Per-clip features in the files other pipelines read.

Formats (one module each): ``npy`` (per-video arrays, video_features style), ``sultani``
(UCF-Crime ``*_C.txt``, Sultani et al. CVPR 2018), ``ekosman``
(ekosman/AnomalyDetectionCVPR2018-Pytorch text features and ``Train_Annotation.txt``),
``rtfm`` (tianyu0207/RTFM ``[snippets, crops, dims]`` arrays and list file). ``segments``
holds each pipeline's segmenting rule, ``crops`` the crop order, ``files`` the atomic
writes and ``index.csv``.
"""

from c3d_extract.export.base import FORMATS, ExportOptions
from c3d_extract.export.run import ExportSummary, export_features

__all__ = ["FORMATS", "ExportOptions", "ExportSummary", "export_features"]
