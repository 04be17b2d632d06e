import numpy as np
import pytest

from c3d_extract.extraction.pooling import ClipAccumulator, l2_normalise, video_descriptor


def test_descriptor_is_l2_of_the_mean():
    clips = np.array([[3.0, 0.0, 1.0], [1.0, 4.0, 1.0]], np.float32)
    mean = np.array([2.0, 2.0, 1.0])
    descriptor, zero = video_descriptor(clips)
    assert not zero
    assert np.allclose(descriptor, mean / 3.0)  # ||(2, 2, 1)|| = 3


def test_zero_vector_stays_zero_and_is_flagged():
    descriptor, zero = l2_normalise(np.zeros(5))
    assert zero and np.all(descriptor == 0)


def test_accumulator_is_order_independent_and_keeps_clips_sorted():
    rng = np.random.default_rng(0)
    rows = {start: {"fc6": rng.random(4), "prob": rng.random(2)} for start in (0, 8, 16)}
    forward = ClipAccumulator(["fc6", "prob"], True)
    backward = ClipAccumulator(["fc6", "prob"], True)
    for start in (0, 8, 16):
        forward.add(start, rows[start])
    for start in (16, 0, 8):
        backward.add(start, rows[start])
    a, _ = forward.descriptors()
    b, _ = backward.descriptors()
    expected = np.mean([rows[s]["fc6"] for s in (0, 8, 16)], axis=0)
    assert np.allclose(a["fc6"], expected / np.linalg.norm(expected), atol=1e-6)
    assert np.allclose(a["fc6"], b["fc6"]) and np.allclose(a["prob"], b["prob"])
    starts, clips = backward.clip_rows()
    assert list(starts) == [0, 8, 16]
    assert np.allclose(clips["fc6"][1], rows[8]["fc6"])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_features_are_not_normalised_into_garbage(value):
    descriptor, zero = l2_normalise(np.array([1.0, value]))
    assert zero and np.all(descriptor == 0)
