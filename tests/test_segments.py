import numpy as np
import pytest

from avemo.errors import AvemoError
from avemo.media import load_audio
from avemo.segments import Segment, plan_segments, read_segments, speech_regions

from .conftest import ANGRY


def test_vad_finds_the_utterances_where_they_were_placed(clips):
    regions = speech_regions(load_audio(clips["two_utterances"]))
    assert len(regions) == 2
    (s1, e1), (s2, e2) = regions
    assert 1.0 <= s1 < 3.0 and e1 < 6.0  # angry utterance placed at 1.0 s (RAVDESS has ~1 s lead-in)
    assert 8.0 <= s2 < 10.0 and e2 <= 14.0


def test_no_speech_in_music_or_silence(clips):
    assert speech_regions(load_audio(clips["music_wav"])) == []
    assert speech_regions(load_audio(clips["silence_wav"])) == []


def test_short_clip_is_one_segment():
    assert plan_segments(4.0, [(1.0, 3.0)], with_video=True) == [Segment(0.0, 4.0, True)]


def test_silent_video_gets_face_windows_covering_it():
    segs = plan_segments(19.7, [], with_video=True)
    assert segs[0].start == 0.0 and segs[-1].end == pytest.approx(19.7)
    assert all(not s.speech and s.duration <= 5.0 for s in segs)
    assert all(a.end == b.start for a, b in zip(segs, segs[1:]))


def test_long_speech_is_split_and_gaps_filled():
    segs = plan_segments(60.0, [(2.0, 27.0), (40.0, 41.0)], with_video=True)
    speech = [s for s in segs if s.speech]
    assert [round(s.duration, 2) for s in speech[:3]] == [8.33, 8.33, 8.33]
    assert all(s.duration <= 10.0 for s in segs)
    assert segs[-1].end == 60.0


def test_audio_only_gets_speech_segments_only():
    assert plan_segments(30.0, [(12.0, 14.0)], with_video=False) == [Segment(12.0, 14.0, True)]


def test_user_segments_from_csv_and_srt(tmp_path):
    (tmp_path / "s.csv").write_text("start,end\n0.5,2.0\n3,4.25\n")
    (tmp_path / "s.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nhello\n\n2\n00:01:03,000 --> 00:01:04,250\nbye\n")
    assert read_segments(tmp_path / "s.csv") == [Segment(0.5, 2.0), Segment(3.0, 4.25)]
    assert read_segments(tmp_path / "s.srt") == [Segment(0.5, 2.0), Segment(63.0, 64.25)]
    (tmp_path / "bad.csv").write_text("from,to\n1,2\n")
    with pytest.raises(AvemoError, match="start"):
        read_segments(tmp_path / "bad.csv")


def test_vad_on_a_real_utterance():
    regions = speech_regions(load_audio(ANGRY))
    assert len(regions) == 1 and regions[0][1] - regions[0][0] > 1.0


def test_batched_vad_gives_silero_s_own_probabilities_chunk_by_chunk(clips):
    """The shipped batched graph (scripts/make_vad_graph.py) against silero-vad's own graph run as
    silero runs it, one chunk a call, its state and 64-sample context carried; the sound fed in
    uneven pieces, as a file's blocks and a microphone's come."""
    from importlib import resources

    from avemo.runtime import one_thread_session
    from avemo.segments import VAD_CHUNK, VAD_CONTEXT, VoiceActivity

    wave = load_audio(clips["two_utterances"])
    own = one_thread_session(resources.files("avemo") / "assets" / "vad" / "silero_vad.onnx")
    state, context, expected = np.zeros((2, 1, 128), np.float32), np.zeros(VAD_CONTEXT, np.float32), []
    for i in range(len(wave) // VAD_CHUNK):
        chunk = wave[i * VAD_CHUNK:(i + 1) * VAD_CHUNK]
        out, state = own.run(None, {"input": np.concatenate([context, chunk])[None], "state": state,
                                    "sr": np.array(16000, np.int64)})
        expected.append(out[0, 0])
        context = chunk[-VAD_CONTEXT:]
    vad = VoiceActivity()
    got = np.concatenate([vad.feed(wave[a:b]) for a, b in zip([0, 700, 4_000, 90_511], [700, 4_000, 90_511, len(wave)])])
    assert len(got) == len(expected)
    assert np.abs(got - np.array(expected)).max() < 1e-4
    assert (np.array(expected) > 0.5).sum() > 50  # the clip's speech was heard: the comparison is not of silence


def test_speech_span_is_first_to_last_speech_inside_the_segment():
    from avemo.segments import speech_span

    speech = [(1.0, 2.0), (3.0, 4.5), (8.0, 9.0)]
    assert speech_span(0.0, 6.0, speech, 0.3) == (1.0, 4.5)
    assert speech_span(1.5, 3.2, speech, 0.3) == (1.5, 3.2)
    assert speech_span(4.4, 8.1, speech, 0.3) is None  # 0.2 s of speech is too little
    assert speech_span(5.0, 7.0, speech, 0.3) is None


def test_speech_heard_piece_by_piece_settles_as_heard_whole(clips):
    from avemo.segments import SpeechTracker

    wave = load_audio(clips["two_utterances"])
    tracker, settled = SpeechTracker(), []
    for a, b in zip([0, 7_001, 40_000, 90_511, 150_000], [7_001, 40_000, 90_511, 150_000, len(wave)]):
        tracker.feed(wave[a:b])
        known = tracker.so_far()
        assert list(known.final[:len(settled)]) == settled  # what was settled stays settled
        settled = list(known.final)
        if known.open:  # the region still going on is never claimed past what was heard
            assert known.open[1] <= tracker.heard
    assert tracker.finish(len(wave) / 16000) == speech_regions(wave)


def test_long_silence_is_cut_while_it_goes_on_and_covered_without_gaps():
    from avemo.segments import SpeechPlanner, SpeechSoFar

    planner, segs = SpeechPlanner(with_video=True), []
    for known in np.arange(5.0, 61.0, 5.0):  # 60 s of silent video, 5 s at a time
        segs += planner.advance(SpeechSoFar((), None, float(known)))
    assert len(segs) == 11 and segs[-1].end == 55.0  # cut while going on, twice a window behind what is known
    segs += planner.finish([], 61.0)
    assert segs[0].start == 0.0 and segs[-1].end == 61.0
    assert all(a.end == b.start for a, b in zip(segs, segs[1:]))
    assert all(not s.speech and 1.0 <= s.duration <= 5.0 for s in segs)
