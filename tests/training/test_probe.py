"""The voice probe's fitting weights (`probe._even`); the fit itself on real corpora is in test_train.py."""

import pytest

from avemo.labels import EMOTIONS, SENTIMENTS, UNKNOWN, derived_sentiment

torch = pytest.importorskip("torch")  # the [train] extra

from avemo.training.probe import _even  # noqa: E402  (needs torch)


def test_rows_balanced_by_emotion_weigh_every_sentiment_alike():
    # rows balanced by emotion (one each, surprise's unknown sentiment left out): 4 of 6 are negative
    sentiment = torch.tensor([s for s in map(derived_sentiment, range(len(EMOTIONS))) if s != UNKNOWN])
    weight = torch.linspace(0.5, 1.5, len(sentiment))
    even = _even(weight, sentiment)
    totals = torch.zeros(len(SENTIMENTS)).index_add_(0, sentiment, even)
    assert torch.allclose(totals, torch.full((len(SENTIMENTS),), float(weight.sum()) / len(SENTIMENTS)))
    negative = sentiment == SENTIMENTS.index("negative")
    assert int(negative.sum()) == 4
    # within a class the rows keep their proportions
    assert torch.allclose(even[negative] / even[negative][0], weight[negative] / weight[negative][0])
