import numpy as np
import pytest

from c3d_extract.video.clip_plan import clip_starts, plan_clips


@pytest.mark.parametrize("n, expected", [
    (1, []), (15, []), (16, [0]), (17, [0]), (23, [0]), (24, [0, 8]),
    (100, [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80]),
])
def test_clip_starts_follow_the_paper(n, expected):
    assert clip_starts(n, 16, 8) == expected


def test_number_of_clips_formula():
    for n in range(16, 300):
        assert len(clip_starts(n)) == (n - 16) // 8 + 1


def test_full_clips_are_consecutive_frames():
    plan = plan_clips(24)
    assert plan.status == "ok"
    assert plan.frames.tolist() == [list(range(0, 16)), list(range(8, 24))]


def test_pad_repeats_the_last_frame():
    plan = plan_clips(5, short_policy="pad")
    assert plan.status == "padded"
    assert plan.starts.tolist() == [0]
    assert plan.frames.tolist() == [[0, 1, 2, 3, 4] + [4] * 11]


def test_loop_repeats_the_video():
    plan = plan_clips(5, short_policy="loop")
    assert plan.status == "looped"
    assert plan.frames.tolist() == [[0, 1, 2, 3, 4] * 3 + [0]]


def test_skip_gives_no_clip():
    plan = plan_clips(15, short_policy="skip")
    assert plan.status == "skipped"
    assert plan.frames.shape == (0, 16)


def test_one_frame_video():
    assert plan_clips(1, short_policy="pad").frames.tolist() == [[0] * 16]
    assert plan_clips(1, short_policy="loop").frames.tolist() == [[0] * 16]


def test_long_enough_video_ignores_the_policy():
    for policy in ("pad", "loop", "skip"):
        assert plan_clips(16, short_policy=policy).status == "ok"


def test_invalid_arguments():
    with pytest.raises(ValueError):
        plan_clips(0)
    with pytest.raises(ValueError):
        plan_clips(10, short_policy="wrap")
    with pytest.raises(ValueError):
        clip_starts(10, 0, 8)
    assert isinstance(plan_clips(40).starts, np.ndarray)
