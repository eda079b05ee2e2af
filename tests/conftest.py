"""Real media for the tests: the shared corpora, and composite clips built from them.

Composite clips mux a real face video's picture with real RAVDESS / TESS utterances
(see avemo.training.composite): no real labelled clip with both a face and speech can be had
here. RAVDESS is CC BY-NC-SA 4.0; the clips live only in pytest's temp folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from avemo.training.composite import mux_clip

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data"))
MEDIA = DATA / "media"
RAVDESS = DATA / "ravdess_speech"
# Actor 16 is held out of the shipped model's training (see its config.json).
ANGRY = RAVDESS / "Actor_16" / "03-01-05-02-01-01-16.flac"
HAPPY = RAVDESS / "Actor_16" / "03-01-03-02-02-01-16.flac"
FACE_VIDEO = MEDIA / "WolfgangLanger_Pexels.mp4"
NO_FACE_VIDEO = MEDIA / "no_face.mp4"


def pytest_collection_modifyitems(config, items):
    if not DATA.is_dir():
        skip = pytest.mark.skip(reason=f"shared data not found at {DATA} (set AVEMO_SHARED_DATA)")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _avemo_warnings_seen(caplog):
    """Each test sees avemo's warnings, whatever level an earlier CLI call (-q) left set."""
    caplog.set_level(logging.INFO, logger="avemo")


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Real and composite media, plus the broken files a user can hand us."""
    d = tmp_path_factory.mktemp("clips")
    out = {
        "talking_face": mux_clip(FACE_VIDEO, [(0.5, ANGRY)], d / "talking_face.mp4", duration=5.0),
        "two_utterances": mux_clip(FACE_VIDEO, [(1.0, ANGRY), (8.0, HAPPY)], d / "two_utterances.mp4", duration=14.0),
        "speech_no_face": mux_clip(NO_FACE_VIDEO, [(0.2, HAPPY)], d / "speech_no_face.mp4"),
        "face_no_audio_track": mux_clip(FACE_VIDEO, None, d / "face_no_audio_track.mp4", duration=4.0),
    }
    (d / "empty.mp4").write_bytes(b"")
    out["empty"] = d / "empty.mp4"
    (d / "notes.mp4").write_text("these are meeting notes, not a video\n" * 20)
    out["text_as_mp4"] = d / "notes.mp4"
    whole = out["two_utterances"].read_bytes()
    (d / "truncated.mp4").write_bytes(whole[: int(len(whole) * 0.6)])
    out["truncated"] = d / "truncated.mp4"
    out["music_wav"] = _audio_only(NO_FACE_VIDEO, d / "music.wav")
    out["silence_wav"] = _audio_only(FACE_VIDEO, d / "silence.wav")
    out["speech_flac"] = Path(shutil.copy(HAPPY, d / "speech.flac"))
    out["speech_cut_short"] = _audio_only(HAPPY, d / "speech_cut_short.wav", 1.5, 0.2)
    return out


def _audio_only(media: Path, out: Path, start: float = 0.0, seconds: float | None = None) -> Path:
    """The real sound of `media` (music, digital silence, speech) as a 16 kHz WAV: all of it, or
    `seconds` of it from `start`."""
    from avemo.media import load_audio

    end = None if seconds is None else int((start + seconds) * 16000)
    return write_wav(out, load_audio(media)[int(start * 16000):end])


def write_wav(out: Path, samples: np.ndarray, rate: int = 16000, floats: bool = False) -> Path:
    """`samples` (mono, -1..1) as a WAV: 16-bit, or 32-bit float with `floats` (which keeps NaN and inf)."""
    with av.open(str(out), "w", format="wav") as dst:
        stream = dst.add_stream("pcm_f32le" if floats else "pcm_s16le", rate=rate, layout="mono")
        if len(samples):
            data = np.asarray(samples, np.float32) if floats else (np.clip(samples, -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data[None, :], format="flt" if floats else "s16", layout="mono")
            frame.sample_rate = rate
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))
    return out


RAVDESS_CODE = {"neutral": "01", "joy": "03", "sadness": "04", "anger": "05", "fear": "06", "disgust": "07", "surprise": "08"}


@pytest.fixture(scope="session")
def meld_fixture(tmp_path_factory) -> Path:
    """A small MELD-layout folder: the first rows of MELD's real CSVs (unchanged columns),
    each row's clip a composite of a real face video and a real RAVDESS utterance with the
    row's emotion (actors 1-12, rotating). As in the release, one listed clip is missing;
    one more is unreadable (the last training clip holds text)."""
    import csv

    root = tmp_path_factory.mktemp("meld")
    counts = {"train": 30, "val": 8, "test": 10}
    from avemo.training.datasets import MELD_SPLITS

    n = 0
    for split, (csv_name, folder) in MELD_SPLITS.items():
        with open(DATA / "meld_annotations" / csv_name, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [r for _, r in zip(range(counts[split]), reader)]
            fields = reader.fieldnames
        with open(root / csv_name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        for i, row in enumerate(rows):
            if split == "val" and i == len(rows) - 1:
                continue  # listed in the CSV, missing on disk
            n += 1
            actor = n % 12 + 1
            utt = sorted((RAVDESS / f"Actor_{actor:02d}").glob(f"03-01-{RAVDESS_CODE[row['Emotion']]}-*.flac"))[n % 4]
            clip = root / folder / f"dia{row['Dialogue_ID']}_utt{row['Utterance_ID']}.mp4"
            if split == "train" and i == len(rows) - 1:
                clip.write_text("not a video\n")
                continue
            mux_clip(FACE_VIDEO, [(0.0, utt)], clip, start=float(n % 10), duration=2.5)
    return root
