"""The main job on real media, through the public API."""

import shutil

import numpy as np
import pandas as pd
import pytest

import avemo
from avemo.errors import AvemoError
from avemo.labels import EMOTIONS, SENTIMENTS
from avemo.segments import Segment

from .conftest import ANGRY, DATA, FACE_VIDEO, HAPPY, MEDIA

KEYS = {"start", "end", "emotion", "emotion_probs", "sentiment", "sentiment_probs", "modalities", "faces", "face_box", "person", "link"}


@pytest.fixture(scope="module")
def model():
    return avemo.load_model()


def _check(result):
    d = result.to_dict()
    assert set(d) == KEYS
    assert list(d["emotion_probs"]) == list(EMOTIONS) and list(d["sentiment_probs"]) == list(SENTIMENTS)
    assert sum(d["emotion_probs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(d["sentiment_probs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert d["emotion"] == max(d["emotion_probs"], key=d["emotion_probs"].get)
    assert d["sentiment"] == max(d["sentiment_probs"], key=d["sentiment_probs"].get)
    assert d["end"] >= d["start"]
    assert (d["face_box"] is not None) == ("face" in d["modalities"])  # the face judged is named


def test_talking_face_uses_both_modalities(model, clips):
    (seg,) = model.predict(clips["talking_face"])
    _check(seg)
    assert seg.modalities == ["audio", "face"] and seg.faces == 1
    assert (seg.start, seg.end) == (0.0, pytest.approx(5.0, abs=0.1))


def test_longer_video_is_time_stamped_by_speech(model, clips):
    results = model.predict(clips["two_utterances"])
    for r in results:
        _check(r)
    voiced = [r for r in results if "audio" in r.modalities]
    assert len(voiced) == 2
    assert 1.0 <= voiced[0].start < 3.0 and 8.0 <= voiced[1].start < 10.0
    assert all(r.modalities == ["face"] for r in results if r not in voiced)
    assert results[0].start == 0.0 and results[-1].end == pytest.approx(14.0, abs=0.1)


def test_fixed_windows_give_a_curve_over_the_whole_video(model, clips):
    results = model.predict(clips["two_utterances"], every=3.0)  # utterances at 1 s and 8 s of 14 s
    assert [(r.start, r.end) for r in results][:4] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 12.0)]
    assert len(results) == 5 and results[-1].end == pytest.approx(14.0, abs=0.05)
    voiced = [r.start for r in results if "audio" in r.modalities]
    assert 0.0 in voiced and (6.0 in voiced or 9.0 in voiced) and 12.0 not in voiced
    assert all("face" in r.modalities for r in results)
    with pytest.raises(AvemoError, match="every must be a finite number of seconds, at least 0.5"):
        model.predict(clips["two_utterances"], every=0)


def test_speech_over_faceless_video_is_voice_only(model, clips, caplog):
    results = model.predict(clips["speech_no_face"])
    assert results and all(r.modalities == ["audio"] and r.faces == 0 for r in results)
    assert "no face found" in caplog.text


def test_silent_face_video_gets_face_only_segments_covering_it(model):
    results = model.predict(FACE_VIDEO)
    assert all(r.modalities == ["face"] and r.faces == 1 for r in results)
    assert results[0].start == 0.0 and results[-1].end == pytest.approx(19.69, abs=0.05)
    assert all(a.end == b.start for a, b in zip(results, results[1:]))


def test_photo_is_face_only(model):
    (r,) = model.predict(MEDIA / "single_face.jpg")
    _check(r)
    assert r.modalities == ["face"] and r.faces == 1
    (group,) = model.predict(MEDIA / "multi_face.jpg")
    assert group.faces >= 4


def test_audio_file_is_voice_only(model, clips):
    (r,) = model.predict(clips["speech_flac"])
    _check(r)
    assert r.modalities == ["audio"] and r.faces == 0


def test_video_without_audio_track_is_face_only(model, clips, caplog):
    results = model.predict(clips["face_no_audio_track"])
    assert results and all(r.modalities == ["face"] for r in results)
    assert "no audio track" in caplog.text


@pytest.mark.parametrize("name,message", [
    ("music_wav", "no speech"),
    ("silence_wav", "no speech \\(silent audio\\)"),
    ("speech_cut_short", "no speech \\(under 0.3 s of sound\\)"),
    ("empty", "empty file"),
    ("text_as_mp4", "not a readable media file"),
])
def test_nothing_to_analyse_is_a_clear_error(model, clips, name, message):
    with pytest.raises(AvemoError, match=message):
        model.predict(clips[name])


def test_file_cut_off_near_its_start_says_so(model, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(FACE_VIDEO.read_bytes()[:40_000])  # the header, and no decodable frame or sound
    with pytest.raises(AvemoError, match="nothing in it decodes: damaged, or cut off near its start"):
        model.predict(cut)


def test_neither_face_nor_speech(model):
    with pytest.raises(AvemoError, match="no speech and no face"):
        model.predict(MEDIA / "no_face.mp4")


def test_truncated_video_gives_its_first_part(model, clips, caplog):
    results = model.predict(clips["truncated"])
    full = model.predict(clips["two_utterances"])
    assert results and results[-1].end < full[-1].end - 2.0  # ends where decoding stopped, not at the header's 14 s
    assert "stops early" in caplog.text


def test_frame_indexed_by_file_start_end(model, clips):
    frame = model.predict(clips["two_utterances"], as_frame=True)
    assert frame.index.names == ["file", "start", "end"]
    assert {"emotion", "sentiment", "emotion_joy", "sentiment_negative", "modalities", "faces", "face_x", "face_w"} <= set(frame.columns)
    assert frame.filter(like="emotion_").sum(axis=1).round(2).eq(1.0).all()


def test_list_of_files_reports_the_bad_one_and_finishes_the_rest(model, clips):
    files = [clips["speech_flac"], clips["text_as_mp4"], MEDIA / "single_face.jpg"]
    out = model.predict(files)
    assert len(out) == 3  # in order, none dropped unseen
    assert isinstance(out[1], AvemoError) and "not a readable media file" in str(out[1])
    assert out[0][0].modalities == ["audio"] and out[2][0].faces == 1
    twice = model.predict([files[0], files[0]])  # a file listed twice is there twice
    assert len(twice) == 2 and twice[0] == twice[1] == out[0]
    frame = model.predict(files, as_frame=True)
    assert frame.index.get_level_values("file").nunique() == 3
    failed = frame[frame["error"].notna()]
    assert list(failed.index.get_level_values("file")) == [str(clips["text_as_mp4"])]
    assert frame[frame["error"].isna()]["emotion"].notna().all()


def test_signal_in_memory_matches_the_file(model):
    from avemo.media import load_audio

    from_file = model.predict(HAPPY)
    from_signal = model.predict(load_audio(HAPPY))
    assert from_signal[0].emotion_probs == pytest.approx(from_file[0].emotion_probs, abs=1e-4)
    wave48k = np.interp(np.linspace(0, 1, 3 * len(load_audio(HAPPY))), np.linspace(0, 1, len(load_audio(HAPPY))), load_audio(HAPPY))
    assert model.predict(wave48k, sampling_rate=48000)[0].modalities == ["audio"]


def test_user_segments_and_modality_choice(model, clips):
    results = model.predict(clips["two_utterances"], segments=[Segment(1.0, 5.0), Segment(8.0, 12.0)])
    assert [(r.start, r.end) for r in results] == [(1.0, 5.0), (8.0, 12.0)]
    assert all(r.modalities == ["audio", "face"] for r in results)
    face_only = model.predict(clips["talking_face"], modalities=["face"])
    assert all(r.modalities == ["face"] for r in face_only)
    with pytest.raises(AvemoError, match="modalities"):
        model.predict(clips["talking_face"], modalities=["smell"])


def test_each_modality_changes_the_answer(model, clips):
    both = model.predict(clips["talking_face"])[0].emotion_probs
    voice = model.predict(clips["talking_face"], modalities=["audio"])[0].emotion_probs
    face = model.predict(clips["talking_face"], modalities=["face"])[0].emotion_probs
    assert both != voice and both != face


def test_voice_input_is_the_speech_span_however_the_segment_is_drawn(model):
    """Silence around an utterance must not change the voice's answer: the branch sees the
    speech span inside the segment, as it did in training."""
    auto = model.predict(HAPPY)[0]
    wider = model.predict(HAPPY, segments=[Segment(0.2, auto.end)])[0]
    assert wider.emotion_probs == auto.emotion_probs


@pytest.fixture(scope="module")
def long_clip(clips, tmp_path_factory):
    """Two minutes of real video and speech: the two-utterance clip, looped."""
    from avemo.training.composite import looped

    return looped(clips["two_utterances"], 2.0, tmp_path_factory.mktemp("long") / "long.mp4")


def _watched(monkeypatch) -> tuple[list[float], dict[str, float]]:
    """How far the frames have been decoded ([t]), and the most sound (s) and faces held between
    segments, as a stream runs."""
    import avemo.predict as predict

    decoded, held = [0.0], {"sound_s": 0.0, "faces": 0}
    frames, let_go = predict.iter_frames, predict._Held.let_go

    def watched_frames(*args, **kwargs):
        for t, grey in frames(*args, **kwargs):
            decoded[0] = t
            yield t, grey

    def watched_let_go(self, before):
        let_go(self, before)
        held["sound_s"] = max(held["sound_s"], len(self.sound) / 16000)
        held["faces"] = max(held["faces"], len(self.observations))

    monkeypatch.setattr(predict, "iter_frames", watched_frames)
    monkeypatch.setattr(predict._Held, "let_go", watched_let_go)
    return decoded, held


def test_a_long_video_streams_its_results_in_bounded_memory(model, long_clip, monkeypatch):
    import avemo.predict as predict
    from avemo.media import probe

    decoded, held = _watched(monkeypatch)
    stream = model.stream(long_clip, people=False)  # one stream: people wait for the voices first (test_diarise.py)
    first = next(stream)
    # the first answer came while the rest decoded: the frames had run no further ahead of its
    # batch of segments than the read-ahead allows (the queue's frames and the one its thread holds
    # while the queue is full), and not to the end
    duration = probe(long_clip).duration
    ahead_s = (predict.FRAMES_AHEAD + 1) / model.cfg.frame_rate + predict.INFER_BATCH * predict.SOUND_BLOCK / 16000
    assert first.start == 0.0 and decoded[0] <= first.end + ahead_s and decoded[0] < duration - 10
    results = [first, *stream]
    assert results[-1].end == pytest.approx(duration, abs=0.2)
    assert all(a.end <= b.start + 1e-3 for a, b in zip(results, results[1:]))
    assert sum("audio" in r.modalities for r in results) == 18  # 2 utterances in each of the 9 loops
    # what was held for later segments stayed a fraction of the file: sound and faces were let go
    assert held["sound_s"] < 80.0 and held["faces"] < 80.0 * 5
    # without the sound (face only), the frames alone pace the stream
    decoded[0] = 0.0
    faces_only = model.stream(long_clip, modalities=["face"], people=False)
    first = next(faces_only)
    assert first.start == 0.0 and decoded[0] <= first.end + ahead_s and decoded[0] < duration - 10
    assert [*faces_only][-1].end == pytest.approx(results[-1].end, abs=0.5)  # the picture ends 0.4 s before the sound


def test_a_stream_left_early_stops_its_network_thread_and_results_come_in_order(model, long_clip):
    """The network judges batches on a thread of its own (`predict._Judging`) while the frames go on:
    its results still come in the file's order, and a stream its reader leaves early (closed) leaves
    no thread behind."""
    import threading

    def judging() -> int:
        return sum(t.name.startswith(("avemo-judge", "avemo-embed")) and t.is_alive() for t in threading.enumerate())

    stream = model.stream(long_clip, people=False)
    first = [next(stream) for _ in range(12)]
    assert judging() >= 2 and all(a.end <= b.start + 1e-3 for a, b in zip(first, first[1:]))
    stream.close()
    assert judging() == 0
    from avemo.media import load_audio

    live_results = list(model.live(iter([load_audio(ANGRY)]), people=False))  # live: no thread, each result at once
    assert live_results and judging() == 0


def test_people_in_a_long_video_where_no_one_speaks_stream_and_are_let_go(model, tmp_path, monkeypatch):
    """A face video with a silent sound track, looped to 2.5 minutes, people told apart (the default):
    no voice to wait for, so its face-only segments come out as the frames go, with their person,
    and what they held is let go (it once waited for voices that never came, holding every frame)."""
    import avemo.predict as predict
    from avemo.media import probe
    from avemo.training.composite import looped

    clip = looped(FACE_VIDEO, 2.5, tmp_path / "silent.mp4")
    decoded, held = _watched(monkeypatch)
    stream = model.stream(clip)
    first = next(stream)
    assert first.person == "P1" and first.modalities == ["face"]
    assert decoded[0] < predict.WARM_SPAN_S + 30 < probe(clip).duration - 30
    rest = list(stream)
    assert {r.person for r in rest} <= {"P1", "P2"} and held["faces"] < (predict.WARM_SPAN_S + 30) * model.cfg.frame_rate


def test_of_two_faces_the_one_moving_its_mouth_while_someone_speaks_is_judged(model, tmp_path):
    from avemo.faces import FaceDetector, _overlap, mouth_motion, observe_faces
    from avemo.media import iter_frames
    from avemo.training.composite import beside

    # a real face video (left, smaller) beside a real still photo (right, the larger face), with a real voice
    clip = beside(FACE_VIDEO, MEDIA / "single_face.jpg", HAPPY, tmp_path / "two_people.mp4")
    tracks = {}
    for o in observe_faces(FaceDetector(), iter_frames(clip, 5.0)):
        tracks.setdefault(o.track, []).append(o)
    moving, still = sorted(tracks.values(), key=lambda t: t[0].box[0])  # left, right
    assert mouth_motion(still) < 1.0 < 2.0 < mouth_motion(moving)
    assert moving[0].box[2] < still[0].box[2]

    def judged(result):  # which of the two faces a result names (boxes in the 720x360 video)
        scale = 720 / 640
        return min((moving, still), key=lambda t: -_overlap(tuple(result.face_box),
                                                             tuple(round(v * scale) for v in t[0].box)))

    (speaking,) = model.predict(clip)
    assert speaking.faces == 2 and judged(speaking) is moving
    (silent,) = model.predict(clip, modalities=["face"])  # nobody heard: the largest face
    assert judged(silent) is still


def test_files_batched_together_give_the_results_of_one_at_a_time(tmp_path, capsys):
    """--batch-files: several files analysed at once, their network calls merged (the GPU
    path, run here on the CPU); a broken file among them is reported once and skipped."""
    from avemo.cli import main

    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("1001_DFA_ANG_XX.flv", "1001_DFA_HAP_XX.flv", "1001_DFA_SAD_XX.flv", "01-01-01-01-01-01-01.mp4"):
        shutil.copyfile(DATA / "av_clips" / name, folder / name)
    (folder / "broken.mp4").write_bytes(b"\x00" * 4096)
    tables = {}
    for n in (1, 3):
        out = tmp_path / f"batch{n}.csv"
        assert main(["predict", str(folder), "--batch-files", str(n), "--out", str(out), "-q"]) == 1
        assert capsys.readouterr().err.count("broken.mp4") == 1
        tables[n] = pd.read_csv(out)
    assert len(tables[1]) >= 4 and list(tables[1]["file"]) == list(tables[3]["file"])
    probabilities = [c for c in tables[1].columns if c.startswith(("emotion_", "sentiment_"))]
    assert np.abs(tables[1][probabilities].to_numpy() - tables[3][probabilities].to_numpy()).max() <= 1e-4
