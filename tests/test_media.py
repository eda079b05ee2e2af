import numpy as np
import pytest

from avemo.errors import AvemoError
from avemo.media import iter_frames, load_audio, probe

from .conftest import DATA, FACE_VIDEO, HAPPY, MEDIA


def test_probe_real_video():
    info = probe(FACE_VIDEO)
    assert info.has_audio and info.has_video and not info.is_image
    assert info.duration == pytest.approx(19.7, abs=0.1)


def test_probe_image_and_audio():
    assert probe(MEDIA / "single_face.jpg").is_image
    info = probe(HAPPY)
    assert info.has_audio and not info.has_video


def test_audio_is_16k_mono_float():
    wave = load_audio(HAPPY)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert 3.0 < len(wave) / 16000 < 5.0
    assert np.abs(wave).max() > 0.05  # a real voice, not silence


def test_frames_sampled_at_requested_rate():
    frames = list(iter_frames(FACE_VIDEO, fps=2.0))
    assert len(frames) == pytest.approx(19.7 * 2, abs=2)
    times = [t for t, _ in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert frames[0][1].dtype == np.uint8 and frames[0][1].shape == (360, 640)


def test_grey_frames_mapped_by_their_levels_are_what_a_full_conversion_gives():
    import av
    import cv2

    # the luma plane read directly, its studio range stretched by the levels `probe` gives, equals
    # FFmpeg's conversion to grey (of the frame decoded as iter_frames decodes it: without deblocking)
    (t, grey), *_ = iter_frames(FACE_VIDEO, fps=5.0)
    with av.open(str(FACE_VIDEO)) as c:
        c.streams.video[0].codec_context.options = {"skip_loop_filter": "all"}
        first = next(c.decode(video=0))
    info = probe(FACE_VIDEO)
    converted = first.reformat(format="gray").to_ndarray()
    assert info.studio_range and not np.array_equal(grey, converted)  # as stored: studio range
    assert t == 0.0 and np.array_equal(cv2.LUT(grey, info.levels), converted)
    assert (info.width, info.height) == (640, 360)
    assert probe(MEDIA / "single_face.jpg").levels is None  # a JPEG's levels are full range already


@pytest.mark.parametrize("name,message", [
    ("empty", "empty file"),
    ("text_as_mp4", "not a readable media file"),
])
def test_unusable_files_raise_one_line(clips, name, message):
    with pytest.raises(AvemoError, match=message) as exc:
        probe(clips[name])
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(AvemoError, match="no such file"):
        probe(tmp_path / "nope.mp4")


def test_truncated_file_decodes_its_first_part(clips):
    wave = load_audio(clips["truncated"])
    frames = list(iter_frames(clips["truncated"], fps=5))
    assert 0 < len(wave) / 16000 < 14.0
    assert 0 < len(frames) < 14 * 5


def test_frames_decoded_with_frames_skipped_are_the_full_decodes_frames():
    """At 5 fps on 24 fps H.264 the decoder skips the frames nothing refers to: the frames
    sampled are still ~0.2 s apart, and each is the frame a full decode gives at that time
    but for the deblocking left out (on average a grey level off, a few pixels in a hundred
    by more than 8). Skipping every B-frame fails this (x264's B-pyramid refers to some:
    frames a few grey levels off on average, with blocks of garbage a hundred off)."""
    import av
    import cv2

    levels = probe(FACE_VIDEO).levels
    sampled = {t: cv2.LUT(grey, levels) for t, grey in iter_frames(FACE_VIDEO, fps=5.0)}
    times = sorted(sampled)
    assert len(times) == pytest.approx(19.7 * 5, abs=3)
    assert max(np.diff(times)) <= 2 * 0.2 and np.mean(np.diff(times)) == pytest.approx(0.2, abs=0.01)
    with av.open(str(FACE_VIDEO)) as c:
        full = {float(f.time): f.reformat(format="gray").to_ndarray() for f in c.decode(video=0)}
    off = [np.abs(sampled[t].astype(np.int16) - full[t]) for t in times]
    assert np.mean([d.mean() for d in off]) < 1.0
    assert max(d.mean() for d in off) < 2.0 and max(np.percentile(d, 99) for d in off) <= 12


@pytest.mark.parametrize("path", [HAPPY, DATA / "tess" / "OAF_Fear" / "OAF_back_fear.opus", FACE_VIDEO],
                         ids=["flac-s16", "opus-fltp", "aac-fltp"])
@pytest.mark.parametrize("listed", [True, False], ids=["planes", "to_ndarray"])
def test_audio_frames_are_joined_sample_for_sample(path, listed, monkeypatch):
    """`_joined` reads each decoded frame's planes itself: what it joins must be exactly what
    PyAV's own `to_ndarray` gives, for planar float (Opus, AAC) and packed integer (FLAC) sound,
    and for a sample format it does not list (PyAV's copy used instead)."""
    import av

    import avemo.media
    from avemo.media import _joined

    if not listed:
        monkeypatch.setattr(avemo.media, "_SAMPLE_TYPES", {})
    with av.open(str(path)) as container:
        own = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    with av.open(str(path)) as container:
        broken = [0]
        joined = list(_joined(container.decode(audio=0), broken))
    assert len(joined) >= 2 and broken == [0]  # about a second each
    assert np.array_equal(np.concatenate([f.to_ndarray() for f in joined], axis=1), own)
