"""The intervals of the comparison (evaluate/intervals.py) against known answers: a stratified
bootstrap over videos keeps every class's video count, its 95 % interval of a proportion matches the
normal approximation's width, replicates are the same draws for every model, and the interval over
seeds holds the spread between seeds."""

from __future__ import annotations

import math

import numpy as np

from s2i_model.evaluate import intervals


def _sounds(videos_per_class: dict[int, int], sounds_per_video: int = 3):
    video, cls = [], []
    for c, n in videos_per_class.items():
        for v in range(n):
            video += [f"c{c}v{v}"] * sounds_per_video
            cls += [c] * sounds_per_video
    return np.array(video), np.array(cls)


def test_draws_keep_each_class_video_count_and_whole_videos():
    video, cls = _sounds({0: 4, 1: 7, 2: 2})
    for d in intervals.video_draws(video, cls, replicates=50):
        for c, n in {0: 4, 1: 7, 2: 2}.items():
            taken = d[cls[d] == c]
            assert len(taken) == 3 * n  # n videos of the class, each with all three of its sounds
            # a video is drawn whole: its sounds come in runs of three consecutive indices
            assert all(video[taken[i]] == video[taken[i + 1]] == video[taken[i + 2]] for i in range(0, len(taken), 3))
    again = intervals.video_draws(video, cls, replicates=50)
    assert all((a == b).all() for a, b in zip(intervals.video_draws(video, cls, replicates=50), again))


def test_interval_of_a_proportion_has_the_normal_width():
    # one class, 400 videos of one sound each, half of them hits: the 95 % interval of the mean is
    # about p ± 1.96 √(p(1−p)/n) = 0.5 ± 0.049
    video, cls = _sounds({0: 400}, sounds_per_video=1)
    values = np.array([1.0, 0.0] * 200)
    reps = intervals.replicate(values, cls, intervals.video_draws(video, cls, replicates=1000))
    lo, hi = intervals.interval(reps)
    half = 1.96 * math.sqrt(0.25 / 400)
    assert abs((hi - lo) / 2 - half) < 0.2 * half, (lo, hi)
    assert lo < 0.5 < hi


def test_class_mean_weighs_classes_alike_and_skips_unmeasured_sounds():
    cls = np.array([0, 0, 0, 1])
    assert intervals.class_mean(np.array([1.0, 1.0, 1.0, 0.0]), cls) == 0.5  # not 0.75
    assert intervals.class_mean(np.array([1.0, np.nan, 0.0, np.nan]), cls) == 0.5  # class 1 has no value
    assert intervals.class_mean(np.array([np.nan, np.nan]), np.array([0, 1])) is None


def test_a_class_that_always_agrees_has_no_spread():
    video, cls = _sounds({0: 5, 1: 5})
    values = np.where(cls == 0, 1.0, 0.0)
    reps = intervals.replicate(values, cls, intervals.video_draws(video, cls, replicates=100))
    assert intervals.interval(reps) == [0.5, 0.5]


def test_over_seeds_holds_the_spread_between_seeds():
    tight = lambda v: [v] * 200  # noqa: E731 - a seed whose videos agree perfectly
    value, ci = intervals.over_seeds([0.2, 0.8], [tight(0.2), tight(0.8)])
    assert value == 0.5
    # the mean of two seeds drawn with replacement is 0.2, 0.5 or 0.8: the interval spans them
    assert ci[0] == 0.2 and ci[1] == 0.8
    value, ci = intervals.over_seeds([0.4], [list(np.linspace(0.3, 0.5, 200))])
    assert value == 0.4 and 0.3 <= ci[0] < 0.31 and 0.49 < ci[1] <= 0.5  # one seed: its own interval


def test_separable_only_without_overlap():
    assert intervals.separable([0.6, 0.7], [0.4, 0.59])
    assert not intervals.separable([0.6, 0.7], [0.4, 0.6])
    assert not intervals.separable([0.6, 0.7], None)
