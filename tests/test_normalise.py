"""Voice normalisation on real speech: statistics gathered in pieces are those of the whole,
and each mode standardises by the frames it says."""

import numpy as np
import pytest

from avemo.audio import log_mel
from avemo.media import load_audio
from avemo.normalise import STD_FLOOR, Normaliser, RunningStats, group_stats, paired, standardise

from .conftest import DATA


@pytest.fixture(scope="module")
def one_actor():
    """Log-Mel frames of five utterances of one RAVDESS actor (five emotions)."""
    files = sorted((DATA / "ravdess_speech" / "Actor_03").glob("03-01-0[1-5]-01-01-01-03.flac"))
    return [log_mel(load_audio(f)) for f in files]


def test_running_statistics_over_pieces_are_those_of_all_frames(one_actor):
    running = RunningStats()
    for frames in one_actor:
        running.add(frames)
    mean, std = running.stats()
    frames = np.concatenate(one_actor)
    whole_mean, whole_std = frames.mean(0), np.maximum(frames.std(0), STD_FLOOR)
    assert running.frames == sum(len(f) for f in one_actor)
    assert np.abs(mean - whole_mean).max() < 1e-4 and np.abs(std - whole_std).max() < 1e-4


def test_a_group_standardised_by_its_own_statistics_has_zero_mean_and_unit_spread(one_actor):
    stats = group_stats(one_actor)
    out = np.concatenate([standardise(f, stats) for f in one_actor])
    assert np.abs(out.mean(0)).max() < 1e-3
    assert np.abs(out.std(0) - 1).max() < 1e-2


def test_by_file_uses_everything_heard_so_far_by_segment_each_alone(one_actor):
    """Each normalised row is the frames as they are beside them standardised (`paired`)."""
    first, rest = one_actor[:2], one_actor[2:]
    by_file = Normaliser("file")
    early = by_file(first)  # only the first two heard yet
    assert np.allclose(early[0], paired(first[0], group_stats(first)), atol=1e-5)
    later = by_file(rest)  # now all five
    assert np.allclose(later[0], paired(rest[0], group_stats(one_actor)), atol=1e-4)
    bands = first[0].shape[1]
    assert np.array_equal(later[0][:, :bands], rest[0])  # the raw half untouched
    alone = Normaliser("segment")(one_actor)
    assert all(np.abs(a[:, bands:].mean(0)).max() < 1e-3 for a in alone)
    collected = RunningStats()
    Normaliser("segment", collect=collected)(one_actor)
    assert collected.frames == sum(len(f) for f in one_actor)
    speaker = Normaliser.fixed(collected.stats())
    assert np.allclose(speaker(first)[0], paired(first[0], group_stats(one_actor)), atol=1e-4)
