"""The network's pooling written as maxima of neighbouring slices, against ``max_pool3d``
and against Caffe's pool5 windows worked out by hand."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from c3d_extract.models.c3d import POOL_AFTER, max_pool_pairs


def test_pool5_windows_are_caffes():
    # 7 -> 4 with windows [0,1] [2,3] [4,5] [6] on each spatial axis; T 2 -> 1.
    x = torch.arange(2 * 7 * 7, dtype=torch.float32).reshape(1, 1, 2, 7, 7)
    pooled = max_pool_pairs(x, (2, 2, 2), ceil=True)
    rows = [[1, 3, 5, 6]] * 4
    expected = np.array([[49 + 7 * r + c for c in cols]
                         for r, cols in zip((1, 3, 5, 6), rows)], np.float32)
    assert pooled.shape == (1, 1, 1, 4, 4)
    assert np.array_equal(pooled[0, 0, 0].numpy(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("shape", [(2, 3, 16, 14, 14), (1, 4, 5, 7, 9), (1, 2, 1, 3, 2)])
def test_equals_max_pool3d(dtype, layout, shape):
    x = torch.randn(shape).to(dtype).contiguous(memory_format=layout)
    for kernel, ceil in set(POOL_AFTER.values()) | {((2, 2, 2), False)}:
        if not ceil and any(k > n for k, n in zip(kernel, shape[2:])):
            continue  # no output at all; max_pool3d refuses
        expected = F.max_pool3d(x, kernel, kernel, ceil_mode=ceil)
        assert torch.equal(max_pool_pairs(x, kernel, ceil), expected), (kernel, ceil)
