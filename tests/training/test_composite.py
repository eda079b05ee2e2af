"""Composite clips are ordinary media files: every stage reads them like any video."""

import avemo
from avemo.media import load_audio, probe
from avemo.training.composite import still_clip

from ..conftest import ANGRY, DATA


def test_a_still_face_with_an_utterance_is_judged_by_voice_and_face(tmp_path):
    face = sorted((DATA / "fer2013" / "val" / "angry").glob("*.jpg"))[0]
    clip = still_clip(face, ANGRY, tmp_path / "clip.mp4")
    info = probe(clip)
    assert info.has_video and info.has_audio
    assert abs(info.duration - len(load_audio(ANGRY)) / 16000) < 0.15  # as long as the utterance
    (r,) = avemo.load_model().predict(clip)
    assert r.modalities == ["audio", "face"] and r.faces > 0  # the detector finds the enlarged photo's face
