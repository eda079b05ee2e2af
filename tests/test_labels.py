import pytest

from avemo.labels import EMOTIONS, UNKNOWN, derived_sentiment, emotion_index, sentiment_index


def test_corpus_labels_map_to_meld():
    assert [EMOTIONS[emotion_index(x)] for x in ("calm", "happy", "sad", "angry", "fearful", "ps", "Disgust")] == \
        ["neutral", "joy", "sadness", "anger", "fear", "surprise", "disgust"]
    with pytest.raises(ValueError):
        emotion_index("bored")


def test_sentiment_follows_emotion_except_surprise():
    assert derived_sentiment(emotion_index("joy")) == sentiment_index("positive")
    assert derived_sentiment(emotion_index("fear")) == sentiment_index("negative")
    assert derived_sentiment(emotion_index("surprise")) == UNKNOWN
    assert sentiment_index("") == UNKNOWN
