"""The main job: a file in, per-segment emotion and sentiment out.

file → decoded streams (media) → segments (segments) → log-Mel + face crops (audio,
faces) → network (runtime: ONNX Runtime or torch) → SegmentResult list → writers. `load_model()` gives the
shipped default model; `Model.predict` takes a path, a list of paths, or a 16 kHz
signal, and returns results or, on request, a DataFrame indexed by (file, start, end).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio import PRINT_WIDTH, MelSettings, voice_features
from .config import ModelConfig
from .diarise import WARM_SPEECH_S, Voices
from .errors import AvemoError
from .faces import FaceDetector, FaceObservation, FaceTracker, clearest, inside_frame, main_track
from .identity import load_in_background
from .media import SAMPLE_RATE, iter_audio, iter_frames, probe, read_ahead, steady_heap
from .normalise import Normaliser
from .people import LIVE_WARM, WARM_SPAN_S, PeoplePlanner
from .runtime import Runtime, SharedRuntime, open_runtime, padded, softmax
from .segments import (
    GivenPlanner,
    Segment,
    SpeechPlanner,
    SpeechSoFar,
    SpeechTracker,
    VoiceActivity,
    WindowPlanner,
    fit_segments,
    given_segments,
    speech_span,
    window_length,
)
from .shipped import default_model_dir

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("avemo")

MODALITIES = ("audio", "face")
#: How voices are standardised, for a model trained on standardised voices (`normalise.py`):
#: by the file's speech, by each segment alone; "auto": by file for such a model, else "none".
NORMALISE = ("auto", "file", "segment", "none")
#: Sound whose RMS is below this (-80 dBFS) is silent: the VAD skips such a block, and a file this
#: quiet throughout has "silent audio". Low on purpose: quiet but real speech (RAVDESS at normal
#: intensity) is for the VAD to judge.
SILENCE_RMS = 1e-4
#: Voice segments shorter than this carry too little prosody to judge.
MIN_VOICE_S = 0.3
#: Sound is read, heard and let go in blocks of this many samples (5 s): the step of the pipeline.
SOUND_BLOCK = 5 * SAMPLE_RATE
#: Segments judged in one batched pass.
INFER_BATCH = 8
#: How far the sound and the frames are decoded ahead of the faces and the model: blocks of sound
#: (32: 160 s, 10 MB) and sampled frames (256: 51 s at 5 fps; grey, at most 640 px a side, so 59 MB
#: for 16:9 video). While the model judges a batch (~0.35 s of one core), the decoders go on
#: instead of waiting: 1.16x decode-only became 1.09x (median of 7 pairs each, interleaved)
#: against 4 blocks and 64 frames.
SOUND_AHEAD = 32
FRAMES_AHEAD = 256
#: Batches handed to the network's threads that may wait there (`_Judging`).
JUDGE_AHEAD = 3


@dataclass
class SegmentResult:
    """What avemo tells about one stretch of a file."""

    start: float
    end: float
    emotion: str
    emotion_probs: dict[str, float]
    sentiment: str
    sentiment_probs: dict[str, float]
    modalities: list[str]  # which of "audio", "face" the answer used
    faces: int  # most faces seen at once in the segment's sampled frames
    face_box: list[int] | None = None  # x, y, w, h (source pixels) of the face judged: its median box, inside the picture
    person: str | None = None  # whose voice: "P1", "P2", ... per file (people=True); None where no one is told apart
    link: float | None = None  # where the face judged is the person's own (their voice linked to it): how sure, 0-1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SegmentInputs:
    """A segment's model inputs, gathered before one batched forward pass."""

    segment: Segment
    mel: np.ndarray | None = None
    crops: list[np.ndarray] = field(default_factory=list)
    faces: int = 0
    box: tuple[int, int, int, int] | None = None  # the judged face's median box, in the sampled frames
    link: float | None = None  # the face judged is the segment's person's own, this sure
    voiceprint: np.ndarray | None = None  # of the speech judged, where the diariser has heard it already


def segment_inputs(seg: Segment, wave: np.ndarray | None, observations: Sequence[FaceObservation],
                   speech: Sequence[tuple[float, float]], voice: Callable[[np.ndarray], np.ndarray], max_faces: int,
                   is_image: bool = False, wave_start: float = 0.0, asked: bool = False,
                   voiceprint: Callable[[float, float], np.ndarray | None] | None = None) -> SegmentInputs:
    """The voice features (`voice`: wave to frames) of the speech span inside the segment (if the VAD heard enough speech there)
    and up to `max_faces` crops of its main face (`faces.main_track`), spread over it, each the
    sharpest of a few frames (`faces.clearest`). `wave` may be the part of a file's sound from `wave_start` seconds on. Shared by
    prediction and training on clips, so both see the same inputs. A segment the user `asked`
    for (their times, or fixed windows) is judged by the voice wherever it holds sound, even
    where the VAD heard no speech in it: screams and shouts are what it misses. `voiceprint`:
    the voiceprint of a span of speech, where one is known (`diarise.Voices.voiceprint`)."""
    item = SegmentInputs(seg)
    span = speech_span(seg.start, seg.end, speech, MIN_VOICE_S) if wave is not None else None
    if span is None and asked and wave is not None:
        span = _sounding(seg, wave, wave_start)
    if span is not None:
        first = round(wave_start * SAMPLE_RATE)
        item.mel = voice(wave[int(span[0] * SAMPLE_RATE) - first: int(span[1] * SAMPLE_RATE) - first])
        item.voiceprint = voiceprint(*span) if voiceprint is not None else None
    inside = [o for o in observations if is_image or seg.start <= o.time < seg.end]
    own = [o for o in inside if seg.face is not None and o.track == seg.face[0]]  # the person's own face, where linked
    if own:
        item.link = seg.face[1]
    if inside:
        main = own or main_track(inside, [span] if span else ())
        item.crops = [o.crop for o in clearest(main, max_faces)]
        item.faces = max(o.n_faces for o in inside)
        item.box = inside_frame(tuple(int(v) for v in np.median([o.box for o in main], axis=0).round()), main[0].frame.shape)
    return item


def load_model(path: str | Path | None = None, threads: int | None = None, runtime: str = "auto",
               device: str = "cpu") -> Model:
    """The shipped default model, or the model folder at `path` (config.json beside ONNX graphs
    from `avemo export --onnx`, and/or model.safetensors). `runtime`: "onnx", "torch", or
    "auto" (ONNX Runtime where the folder has graphs, else torch); `device`: "cpu" or "cuda".
    Loading sets numpy's BLAS to one thread for the whole process (`runtime.one_blas_thread`:
    its spinning second thread took a core from the pipeline)."""
    network, cfg, meta = open_runtime(Path(path) if path else default_model_dir(), runtime, threads, device)
    return Model(network, cfg, meta)


class Model:
    """A loaded avemo model and the pipeline that feeds it."""

    def __init__(self, runtime: Runtime, cfg: ModelConfig, meta: dict) -> None:
        self.runtime = runtime
        self.meta = meta
        self.cfg = cfg
        self.mel = MelSettings(**self.cfg.mel)
        self.voice_features = partial(voice_features, front=self.cfg.audio_front, settings=self.mel,
                                      voiceprint=self.cfg.voiceprint)
        self._detector: FaceDetector | None = None

    def normaliser(self, normalise: str | Normaliser) -> Normaliser | None:
        """A fresh normaliser for one run (one file, signal or live session), or None for a
        model whose voices are read as they are; AvemoError for a mode the model was not
        trained for."""
        if isinstance(normalise, Normaliser):
            chosen = normalise.mode
        elif normalise in NORMALISE:
            chosen = normalise if normalise != "auto" else "file" if self.cfg.voice_norm == "group" else "none"
        else:
            raise AvemoError(f"normalise must be one of {', '.join(NORMALISE)}, not {normalise!r}")
        if (chosen == "none") != (self.cfg.voice_norm == "none"):
            trained = "beside their speaker's statistics" if self.cfg.voice_norm == "group" else "as they are"
            raise AvemoError(f"this model reads voices {trained}: normalise "
                             f"{'by file or segment (evaluate: or speaker)' if self.cfg.voice_norm == 'group' else 'none'}, not {chosen}")
        if chosen == "none":
            return None
        return normalise if isinstance(normalise, Normaliser) else Normaliser(chosen)

    def tells_people(self, people: bool | None) -> bool:
        """Whether a run tells people apart: as asked, or (None) wherever the model reads a
        voiceprint, the encoder that tells voices apart (the shipped model does)."""
        if people is not None and not isinstance(people, bool):
            raise AvemoError(f"people is True, False or None (where the model can), not {people!r}")
        return self.cfg.voiceprint if people is None else people

    def voices(self, people: bool | None, speakers: int | None = None) -> Voices | None:
        """A fresh diariser for one run where people are told apart (`tells_people`; None
        otherwise); AvemoError for a bad `speakers` hint, or people asked of a model without the
        voiceprint encoder that tells voices apart."""
        if not self.tells_people(people):
            if speakers is not None:
                raise AvemoError("speakers is a hint for telling people apart, not for people=False (--people off)")
            return None
        if not self.cfg.voiceprint:
            raise AvemoError("this model reads no voiceprint, which tells voices apart: people needs one that does "
                             "(avemo train --voiceprint), such as the shipped model")
        return Voices(self.runtime.voiceprints, speakers)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector()
        return self._detector

    # ------------------------------------------------------------ public API

    def predict(
        self,
        source: str | Path | Sequence[str | Path] | np.ndarray,
        *,
        as_frame: bool = False,
        segments: Sequence[Segment | tuple[float, float]] | str | Path | None = None,
        every: float | None = None,
        modalities: Iterable[str] = MODALITIES,
        sampling_rate: int = SAMPLE_RATE,
        batch_files: int = 1,
        normalise: str | Normaliser = "auto",
        people: bool | None = None,
        speakers: int | None = None,
    ) -> list[SegmentResult] | list[list[SegmentResult] | AvemoError] | pd.DataFrame:
        """Analyse a file, a list of files, or a mono signal.

        One file (or signal) gives a list of SegmentResult and raises AvemoError when it
        cannot be analysed. A list of files gives one entry per file, in its order (a file
        listed twice is analysed twice): its results, or the AvemoError that stopped it (also
        logged): one bad file does not cost the others, and none is dropped unseen, as in the
        CLI's batch. `as_frame=True` returns a DataFrame indexed by (file, start, end) instead;
        for a list it has an `error` column (a failed file is one row with its message), like
        the Ray engine's table. Segments follow the speech unless `segments` gives them
        (Segments or (start, end) pairs in seconds, or the path of a CSV or SRT of them; the
        same times for every file of a list) or `every` asks for fixed windows of that many
        seconds; such stretches are judged by the voice wherever they hold sound.
        `modalities`: a list of "audio" and/or "face", the modalities to judge by.
        `batch_files`: for a list, how many files to analyse at once (`predict_files`).
        `normalise`: how a model trained on normalised voices (`normalise.py`) standardises
        them: "file" (by all of the file's speech; "auto" picks it for such models, "none" for
        the others), "segment" (each segment alone), or a `Normaliser`. A signal is a 1-D
        numpy array of floats from -1 to 1, or of integer PCM (scaled by its type's range).
        `people`: tell the people apart (`people.py`; None, the default: wherever the model can,
        as the shipped model can): each speech segment is cut where the voice changes and says
        whose voice it is (`person`: "P1", ... per file), and each voice is standardised by that
        person's own speech; False gives one stream. `speakers`: how many people speak, if known.
        Bad arguments raise AvemoError, saying what is wrong with them.
        """
        modalities = _check_modalities(modalities)
        segments, every = _asked_times(segments, every)
        self.normaliser(normalise)  # a mode this model was not trained for: one error, not one per file
        voices = self.voices(people, speakers)  # people asked of a model that cannot tell voices apart, a bad hint: said once
        if isinstance(source, np.ndarray):
            wave = _signal(source, sampling_rate)
            if segments is not None:
                segments = fit_segments(segments, len(wave) / SAMPLE_RATE, "signal")
            sound = (wave[i:i + SOUND_BLOCK] for i in range(0, len(wave), SOUND_BLOCK))
            results = list(self._run("signal", _heard(sound), None, _planner(segments, every, False, False), False,
                                     modalities, len(wave) / SAMPLE_RATE, norm=self.normaliser(normalise), voices=voices))
            return to_frame([("signal", results)]) if as_frame else results
        if not isinstance(source, (list, tuple)):
            path = media_path(source)
            results = self.predict_file(path, segments=segments, every=every, modalities=modalities,
                                        normalise=normalise, people=people, speakers=speakers)
            return to_frame([(str(path), results)]) if as_frame else results
        paths = [media_path(p, f"item {n} of the list") for n, p in enumerate(source, 1)]
        outcomes = []
        for _, outcome in self.predict_files(paths, segments=segments, every=every, modalities=modalities,
                                             batch_files=batch_files, normalise=normalise, people=people,
                                             speakers=speakers):
            if isinstance(outcome, AvemoError):
                log.error("%s", outcome)
            outcomes.append(outcome)
        return to_frame([(str(p), o) for p, o in zip(paths, outcomes)], errors=True) if as_frame else outcomes

    def predict_files(self, paths: Iterable[str | Path], segments: list[Segment] | None = None, every: float | None = None,
                      modalities: Iterable[str] = MODALITIES, batch_files: int = 1,
                      normalise: str | Normaliser = "auto", people: bool | None = None, speakers: int | None = None
                      ) -> Iterator[tuple[Path, list[SegmentResult] | AvemoError]]:
        """Each file's results in the order given, or the AvemoError that stopped it (not
        raised: one bad file does not stop the others). `batch_files` > 1 analyses that many files at once, one thread each,
        their network calls merged into shared batches (`runtime.SharedRuntime`): what a GPU
        needs to be busy; the results are those of one file at a time."""
        def one(model: Model, path: str | Path) -> list[SegmentResult] | AvemoError:
            try:
                return model.predict_file(path, segments=segments, every=every, modalities=modalities,
                                          normalise=normalise, people=people, speakers=speakers)
            except AvemoError as exc:
                return exc

        if batch_files <= 1:
            for path in paths:
                yield Path(path), one(self, path)
            return
        shared = SharedRuntime(self.runtime)

        def in_batch(path: str | Path) -> list[SegmentResult] | AvemoError:
            shared.enter()
            try:  # a model of its own per file (its face detector), the runtime shared
                return one(Model(shared, self.cfg, self.meta), path)
            finally:
                shared.leave()

        paths = list(paths)
        with ThreadPoolExecutor(batch_files, thread_name_prefix="avemo-file") as pool:
            for path, outcome in zip(paths, pool.map(in_batch, paths)):
                yield Path(path), outcome

    def predict_file(self, path: str | Path, *, segments: list[Segment] | None = None, every: float | None = None,
                     modalities: Iterable[str] = MODALITIES, normalise: str | Normaliser = "auto",
                     people: bool | None = None, speakers: int | None = None) -> list[SegmentResult]:
        """Results for one media file; AvemoError when nothing in it can be analysed."""
        return list(self.stream(path, segments=segments, every=every, modalities=modalities, normalise=normalise,
                                people=people, speakers=speakers))

    def stream(self, path: str | Path, *, segments: list[Segment] | None = None, every: float | None = None,
               modalities: Iterable[str] = MODALITIES, progress: Callable[[float, float], None] | None = None,
               normalise: str | Normaliser = "auto", people: bool | None = None, speakers: int | None = None
               ) -> Iterator[SegmentResult]:
        """One media file's results, each as soon as its segment is analysed: a long video is
        read in bounded pieces, its first results come while the rest decodes, and memory
        stays the same however long it is. AvemoError when nothing in it can be analysed
        (raised once the file has been read). `progress(seconds, duration)` is called as the
        file is read: how far the pipeline has got, of the media's duration; an exception it
        raises stops the run (a cancelled job). `people`, `speakers`: as `predict` takes them; with
        people, the first results wait until the voices are known (the first minute of speech,
        or a minute and a half of media, or the whole of a shorter file)."""
        modalities = _check_modalities(modalities)
        segments, every = _asked_times(segments, every)
        norm = self.normaliser(normalise)
        voices = self.voices(people, speakers)
        path = media_path(path)
        info = probe(path)
        if "audio" not in modalities and not (info.has_video or info.is_image):
            raise AvemoError(f"{path}: has no picture (sound only), and only the face was asked for (modalities: face)")
        if "face" not in modalities and not info.has_audio:
            raise AvemoError(f"{path}: has no audio track{' (a photo)' if info.is_image else ''}, and only the voice "
                             "was asked for (modalities: audio)")
        if "audio" in modalities and not info.has_audio and not info.is_image:
            log.warning("%s: no audio track; judging by the face alone", path)
        if segments is not None and not info.is_image:
            segments = fit_segments(segments, info.duration, str(path))
        see = (info.has_video or info.is_image) and "face" in modalities
        steady_heap()
        # three threads: the sound (decoding, VAD), the frames (decoding), and the faces and the model here
        sound = read_ahead(_heard(iter_audio(path, block_s=SOUND_BLOCK / SAMPLE_RATE, track=info.audio_track)), SOUND_AHEAD) \
            if info.has_audio and "audio" in modalities else None
        frames = read_ahead(iter_frames(path, self.cfg.frame_rate), FRAMES_AHEAD) if see else None
        yield from self._run(str(path), sound, frames, _planner(segments, every, see, info.is_image), info.is_image,
                             modalities, info.duration, info.width, progress=progress, norm=norm, levels=info.levels,
                             voices=voices if "audio" in modalities and info.has_audio else None)

    def live(self, sound: Iterable[np.ndarray], frames: Iterable[tuple[float, np.ndarray]] | None = None, *,
             modalities: Iterable[str] = MODALITIES, width: int = 0, normalise: str | Normaliser = "auto",
             people: bool = False, speakers: int | None = None) -> Iterator[SegmentResult]:
        """Results for sound and frames as they arrive (a microphone and a camera): `sound`
        yields blocks of 16 kHz mono float32 (a quarter of a second is a good size), `frames`
        (time in s on the sound's clock, grey uint8 picture) as they are taken; either
        iterable may wait for more. Each segment is judged on its own as soon as it settles
        (speech a pause after it ends; a face-only window once it is over), not in batches.
        `width`: the camera picture's, to give face boxes in its pixels. `people`, `speakers`: as
        `predict` takes them, but off unless asked: the voices are clustered after the first 20 s
        of speech (or 30 s), so the first results wait that long, and later voices join them or
        are new people."""
        modalities = _check_modalities(modalities)
        voices = self.voices(people, speakers)
        sound = _heard(sound) if "audio" in modalities else None
        frames = iter(frames) if frames is not None and "face" in modalities else None
        return self._run("live", sound, frames, SpeechPlanner(frames is not None), False, modalities, 0.0, width, batch=1,
                         norm=self.normaliser(normalise), voices=voices if sound is not None else None, warm=LIVE_WARM)

    # ------------------------------------------------------------ stages

    def _run(self, name: str, sound: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]] | None,
             frames: Iterator[tuple[float, np.ndarray]] | None, planner: Planner, is_image: bool,
             modalities: tuple[str, ...], declared: float, width: int = 0, batch: int = INFER_BATCH,
             progress: Callable[[float, float], None] | None = None, norm: Normaliser | None = None,
             levels: np.ndarray | None = None, voices: Voices | None = None,
             warm: tuple[float, float] = (WARM_SPEECH_S, WARM_SPAN_S)) -> Iterator[SegmentResult]:
        """The pipeline over a file's sound (blocks, with their VAD probabilities) and its
        frames, a block at a time: the segments each step settles are analysed and given
        out, and what no later segment needs (sound, faces) is let go. `width`: the
        picture's, to give face boxes in its pixels; `levels`: its frames' grey levels to full range
        (`MediaInfo.levels`). Segments are judged `batch` at a time, their
        voices standardised by `norm` where the model asks for it; with `voices`, speech segments
        wait until the voices are known, then come cut and labelled by person (`people.py`)."""
        judging = _Judging(self, ahead=JUDGE_AHEAD if batch > 1 else 0)  # live: each result at once
        try:
            yield from self._pipeline(name, sound, frames, planner, is_image, modalities, declared, width, batch,
                                      progress, norm, levels, voices, warm, judging)
        finally:
            judging.close()

    def _pipeline(self, name: str, sound: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]] | None,
                  frames: Iterator[tuple[float, np.ndarray]] | None, planner: Planner, is_image: bool,
                  modalities: tuple[str, ...], declared: float, width: int, batch: int,
                  progress: Callable[[float, float], None] | None, norm: Normaliser | None,
                  levels: np.ndarray | None, voices: Voices | None, warm: tuple[float, float],
                  judging: _Judging) -> Iterator[SegmentResult]:
        """`_run`'s loop, its batches handed to `judging`."""
        hearing, held = SpeechTracker(), _Held()
        faces = FaceTracker(self.detector, is_image, levels=levels, cuts=voices is not None)  # people: a track ends at a cut
        if voices is not None:
            if frames is not None:
                load_in_background()  # faces to tell apart: dlib's models read beside the first frames
            planner = PeoplePlanner(planner, voices, lambda: (held.sound, held.sound_start), lambda: held.observations, warm)
        known: SpeechSoFar | None = None if sound is not None else SpeechSoFar((), None, float("inf"))
        heard, energy, seen_until, frame_width, any_face = 0, 0.0, 0.0, 0, False
        has_picture, pending, later = frames is not None, [], []
        while known is None or frames is not None:
            if known is None:  # the sound goes on: one more block of it
                block = next(sound, None)
                if block is None:
                    known = SpeechSoFar(tuple(hearing.finish(heard / SAMPLE_RATE)), None, float("inf"))
                else:
                    held.add_sound(block[0])
                    hearing.add(block[1], block[2])
                    heard += len(block[0])
                    energy += float(np.square(block[0], dtype=np.float64).sum())
            until = heard / SAMPLE_RATE if known is None else seen_until + SOUND_BLOCK / SAMPLE_RATE
            while frames is not None and seen_until < until:  # the frames up to where the sound has got
                frame = next(frames, None)
                if frame is None:
                    frames = None
                    break
                t, grey = frame
                seen_until, frame_width = t + 1 / self.cfg.frame_rate, grey.shape[1]
                found = faces.step(t, grey)
                any_face |= bool(found)
                held.observations += found
            if known is None or frames is not None:
                # the sound is read ahead of the frames: what is known of speech lies within them;
                # once the sound is over (or absent), it is known as far as the frames go
                speech = hearing.so_far() if known is None else replace(known, known_until=seen_until)
                pending += held.inputs(planner.advance(speech), speech, self, is_image, planner.asked, voices)
                held.let_go(planner.keep_from)
                while len(pending) >= batch:
                    yield from judging.submit(pending[:batch], later, _scale(width, frame_width), norm)
                    pending = pending[batch:]
                yield from judging.ready()  # each result out as soon as it is judged, not at the next batch
                if progress is not None:
                    reached = max(seen_until, heard / SAMPLE_RATE)
                    progress(min(reached, declared) if declared else reached, declared)
        decoded_until = max(seen_until, heard / SAMPLE_RATE)
        if decoded_until == 0.0:
            raise AvemoError(f"{name}: nothing in it decodes: damaged, or cut off near its start")
        # a cut-off file ends where its streams stopped decoding, not where its header says
        duration = min(declared, decoded_until) if declared else decoded_until
        pending += held.inputs(planner.finish(list(known.final), duration), known, self, is_image, planner.asked, voices)
        if not held.judged:
            unheard = (f"under {MIN_VOICE_S:g} s of sound" if heard < MIN_VOICE_S * SAMPLE_RATE
                       else "silent audio" if energy / max(heard, 1) < SILENCE_RMS ** 2 else None)
            raise AvemoError(f"{name}: {_nothing_found(sound is not None, unheard, has_picture, modalities, is_image)}")
        if has_picture and not any_face:
            log.warning("%s: no face found; judging by the voice alone", name)
        yield from judging.submit(pending, later, _scale(width, frame_width), norm)
        yield from judging.finish()
        if self.runtime.has_context:
            items, fused = zip(*later)
            emo, sent = self.runtime.context(np.stack(fused)[None], np.array([len(items)], np.int64))
            yield from self._results(list(items), emo[0], sent[0], _scale(width, frame_width))

    def _judge(self, chunk: list[SegmentInputs], later: list, box_scale: float, norm: Normaliser | None = None
               ) -> list[SegmentResult]:
        """Results for a chunk of segments in one batched pass; with a context stage, their
        fused vectors wait in `later` for the file's whole sequence. Chunks of eight segments
        of up to 16 face crops kept the face CNN's activations near 100 MB (32 took 0.4 GB more,
        for no speed)."""
        return self._decided(chunk, self.embed_inputs(chunk) if chunk else None, later, box_scale, norm)

    def _decided(self, chunk: list[SegmentInputs], embedded: tuple | None, later: list, box_scale: float,
                 norm: Normaliser | None = None) -> list[SegmentResult]:
        """`_judge` from the chunk's `embed_inputs`: the part that must come in the file's order."""
        if not chunk:
            return []
        fused, emo, sent = self.decide(chunk, embedded, norm)
        if self.runtime.has_context:
            for item, vector in zip(chunk, fused):
                later.append((_judged(item), vector))
            return []
        return self._results(chunk, emo, sent, box_scale)

    def embed_inputs(self, chunk: list[SegmentInputs]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
        """What a batch's rows give on their own, in any order beside other batches: the voice
        encoders' states and lengths of the rows with speech (None where none has), and each row's
        face embedding (the mean of its crops'; zero where it has none)."""
        heard = [i for i, p in enumerate(chunk) if p.mel is not None]
        states = steps = None
        if heard:
            known = [chunk[i].voiceprint for i in heard]
            prints = None if all(p is None for p in known) else \
                np.stack([np.full(PRINT_WIDTH, np.nan, np.float32) if p is None else p for p in known])
            states, steps = self.runtime.states(*padded([chunk[i].mel for i in heard]), prints)
        face = np.zeros((len(chunk), self.cfg.embed_dim), np.float32)
        seen = [i for i, p in enumerate(chunk) if p.crops]
        if seen:
            crops = np.stack([c for i in seen for c in chunk[i].crops])
            embedded = self.runtime.faces(crops)
            counts = np.array([len(chunk[i].crops) for i in seen])
            face[seen] = np.add.reduceat(embedded, np.r_[0, np.cumsum(counts)[:-1]], axis=0) / counts[:, None]
        return states, steps, face

    def decide(self, chunk: list[SegmentInputs], embedded: tuple[np.ndarray | None, np.ndarray | None, np.ndarray],
               norm: Normaliser | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`embed_inputs`'s output to the fused embeddings and logits: the voice states standardised
        by `norm` (whose statistics are of the speech heard so far: batches must come in order),
        the voice branch, the fusion."""
        states, steps, face = embedded
        voice = np.zeros((len(chunk), self.cfg.voice_out_width), np.float32)
        heard = [i for i, p in enumerate(chunk) if p.mel is not None]
        if heard:
            if norm is not None:
                states = normalised(states, steps, norm, [chunk[i].segment.person for i in heard])
            voice[heard] = self.runtime.voice(states, steps)
        present = np.zeros((len(chunk), 2), bool)
        present[heard, 0] = True
        present[[i for i, p in enumerate(chunk) if p.crops], 1] = True
        return self.runtime.fusion(voice, face, present)

    def _results(self, items: list[SegmentInputs], emo: np.ndarray, sent: np.ndarray, box_scale: float
                 ) -> list[SegmentResult]:
        results = []
        for item, e, s in zip(items, softmax(emo).tolist(), softmax(sent).tolist()):
            results.append(SegmentResult(
                start=round(item.segment.start, 3),
                end=round(item.segment.end, 3),
                emotion=self.cfg.emotions[int(np.argmax(e))],
                emotion_probs={k: round(v, 4) for k, v in zip(self.cfg.emotions, e)},
                sentiment=self.cfg.sentiments[int(np.argmax(s))],
                sentiment_probs={k: round(v, 4) for k, v in zip(self.cfg.sentiments, s)},
                modalities=[m for m, ok in (("audio", item.mel is not None), ("face", bool(item.crops))) if ok],
                faces=item.faces,
                face_box=[round(v * box_scale) for v in item.box] if item.box and item.crops else None,
                person=item.segment.person,
                link=item.link if item.crops else None,
            ))
        return results


def _sounding(seg: Segment, wave: np.ndarray, wave_start: float) -> tuple[float, float] | None:
    """The segment's extent within `wave` (which starts `wave_start` seconds in), where it is
    at least `MIN_VOICE_S` long and not silent (`SILENCE_RMS`)."""
    start, end = max(seg.start, wave_start), min(seg.end, wave_start + len(wave) / SAMPLE_RATE)
    first = round(wave_start * SAMPLE_RATE)
    piece = wave[int(start * SAMPLE_RATE) - first:int(end * SAMPLE_RATE) - first]
    if end - start < MIN_VOICE_S or np.sqrt(np.mean(np.square(piece, dtype=np.float64))) < SILENCE_RMS:
        return None
    return start, end


def normalised(states: np.ndarray, steps: np.ndarray, norm: Normaliser, people: Sequence[str | None] | None = None
               ) -> np.ndarray:
    """Padded voice states (B, T', D) with each row's frames as `norm` gives them to the voice
    branch (by each row's person's speech where `people` says whose they are)."""
    return padded(norm([row[:n] for row, n in zip(states, steps)], people))[0]


Planner = SpeechPlanner | WindowPlanner | GivenPlanner


def _planner(segments: list[Segment] | None, every: float | None, with_video: bool, is_image: bool) -> Planner:
    """How the file is cut: one still, the user's segments, fixed windows, or its speech."""
    if is_image:
        return GivenPlanner([Segment(0.0, 0.0, False)])
    if segments is not None:
        return GivenPlanner(segments)
    if every is not None:
        return WindowPlanner(every)
    return SpeechPlanner(with_video)


def _scale(width: int, frame_width: int) -> float:
    """Source pixels per sampled-frame pixel (1 where the source's width is not known: live frames)."""
    return width / frame_width if width and frame_width else 1.0


def _heard(blocks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Blocks of sound with the VAD's speech probabilities and loudness (a silent block is not run through it)."""
    vad = VoiceActivity(quiet_rms=SILENCE_RMS)
    for block in blocks:
        yield block, *vad.hear(block)


def _judged(item: SegmentInputs) -> SegmentInputs:
    """What the results need of a segment's inputs (which modalities, its face) once it has been through the network."""
    return replace(item, mel=None if item.mel is None else item.mel[:0], crops=item.crops[:1])


class _Judging:
    """Batches of segments judged beside the pipeline's own thread, their results given back in
    order. Why: the network (Whisper's encoder, the face CNN) then runs while the pipeline's
    thread goes on finding and following faces in the next frames, and two batches' encoders at
    once where a core is free (once the frames are decoded, or while people wait to be told
    apart), so that two cores are both busy where one waited on the other. What must come in
    order (the voice standardised by the speech heard so far, the voice branch, the fusion) is
    one thread's, batch after batch. At most `ahead` batches wait (their inputs held); with
    `ahead` 0 each batch is judged at once, on the caller's thread (live: no result waits)."""

    def __init__(self, model: Model, ahead: int, encoders: int = 2) -> None:
        self._model = model
        self._ahead = ahead
        self._encoders = ThreadPoolExecutor(encoders, thread_name_prefix="avemo-embed") if ahead else None
        self._decider = ThreadPoolExecutor(1, thread_name_prefix="avemo-judge") if ahead else None
        self._waiting: deque[Future] = deque()

    def submit(self, chunk: list[SegmentInputs], *rest) -> Iterator[SegmentResult]:
        """Hand over a batch (with `Model._judge`'s other arguments); yields the results of earlier
        batches as they are done, waiting only while more than `ahead` are."""
        if self._decider is None:
            yield from self._model._judge(chunk, *rest)
            return
        embedded = self._encoders.submit(self._model.embed_inputs, chunk) if chunk else None
        self._waiting.append(self._decider.submit(
            lambda: self._model._decided(chunk, embedded.result() if embedded else None, *rest)))
        while len(self._waiting) > self._ahead:
            yield from self._waiting.popleft().result()
        yield from self.ready()

    def ready(self) -> Iterator[SegmentResult]:
        """The results of the batches done so far, in order (none waited for)."""
        while self._waiting and self._waiting[0].done():
            yield from self._waiting.popleft().result()

    def finish(self) -> Iterator[SegmentResult]:
        """The results of every batch still waiting, in order."""
        while self._waiting:
            yield from self._waiting.popleft().result()

    def close(self) -> None:
        """Stop: batches not begun are dropped (a run stopped early, an error), those running end."""
        if self._decider is not None:
            for future in self._waiting:
                future.cancel()
            self._decider.shutdown(wait=True)  # a decision under way waits for its batch's encoders, still running
            self._encoders.shutdown(wait=True, cancel_futures=True)


class _Held:
    """What a file's later segments may still need: its sound from `sound_start` seconds on,
    and the faces seen from then on."""

    def __init__(self) -> None:
        self._blocks: deque[np.ndarray] = deque()  # the sound, as it came
        self._first = 0  # the sample the first block starts at
        self._joined: np.ndarray | None = None  # the blocks joined, until they change (people ask often)
        self.observations: list[FaceObservation] = []
        self.judged = 0  # segments with something to judge, so far

    @property
    def sound_start(self) -> float:
        return self._first / SAMPLE_RATE

    @property
    def sound(self) -> np.ndarray:
        """The sound held, joined into one signal (only when a segment with speech needs it)."""
        if self._joined is None:
            self._joined = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.float32)
        return self._joined

    def add_sound(self, block: np.ndarray) -> None:
        self._blocks.append(block)
        self._joined = None

    def inputs(self, segments: list[Segment], speech: SpeechSoFar, model: Model, is_image: bool,
               asked: bool = False, voices: Voices | None = None) -> list[SegmentInputs]:
        """The model's inputs for `segments`, those with anything to judge; `asked`: the user's
        own stretches, judged by the voice wherever they hold sound (`segment_inputs`); `voices`:
        the diariser, whose windows give the voiceprints (not computed twice)."""
        regions = speech.regions
        wave = self.sound if asked or any(seg.speech for seg in segments) else None  # no voice to read in the others
        items = [segment_inputs(seg, wave if seg.speech or asked else None, self.observations, regions,
                                model.voice_features, model.cfg.max_faces, is_image, self.sound_start, asked,
                                voices.voiceprint if voices is not None else None)
                 for seg in segments]
        items = [item for item in items if item.mel is not None or item.crops]
        self.judged += len(items)
        return items

    def let_go(self, before: float) -> None:
        """Drop what comes before `before` seconds (sound a block at a time)."""
        while self._blocks and (self._first + len(self._blocks[0])) / SAMPLE_RATE <= before:
            self._first += len(self._blocks.popleft())
            self._joined = None
        if self.observations and self.observations[0].time < before:
            self.observations = [o for o in self.observations if o.time >= before]


def frame_rows(file: str, results: list[SegmentResult]) -> list[dict]:
    """One flat row per segment, one column per probability (the DataFrame's and Parquet's)."""
    rows = []
    for r in results:
        row = {"file": file, "start": r.start, "end": r.end, "person": r.person, "emotion": r.emotion,
               "sentiment": r.sentiment}
        row.update({f"emotion_{k}": v for k, v in r.emotion_probs.items()})
        row.update({f"sentiment_{k}": v for k, v in r.sentiment_probs.items()})
        row.update({"modalities": "+".join(r.modalities), "faces": r.faces})
        row.update(zip(("face_x", "face_y", "face_w", "face_h"), r.face_box or [None] * 4))
        rows.append(row)
    return rows


def to_frame(by_file: Iterable[tuple[str, list[SegmentResult] | AvemoError]], errors: bool = False) -> pd.DataFrame:
    """Results, (file, its results) in order, as a DataFrame indexed by (file, start, end), one column
    per probability. With `errors`, an `error` column: None on results, the message on a failed file's one row."""
    rows = []
    for file, outcome in by_file:
        if isinstance(outcome, AvemoError):
            rows.append({"file": file, "start": float("nan"), "end": float("nan"), "error": str(outcome)})
        else:
            rows += [{**row, "error": None} if errors else row for row in frame_rows(file, outcome)]
    import pandas as pd  # here: a second of start-up that only tables need

    frame = pd.DataFrame(rows, columns=None if rows else ["file", "start", "end", "emotion", "sentiment"])
    return frame.set_index(["file", "start", "end"])


def media_path(source: object, what: str = "source") -> Path:
    """A file to analyse, as a path: str, os.PathLike or bytes (a file name that is not UTF-8);
    AvemoError for anything else (a list of numbers is a signal only as a numpy array)."""
    if isinstance(source, (str, bytes, os.PathLike)):
        return Path(os.fsdecode(source))
    if isinstance(source, (int, float)) and not isinstance(source, bool):
        hint = ": a signal is a numpy array (np.asarray(samples, np.float32))" if what != "source" else ""
        raise AvemoError(f"{what} is the number {source!r}, not a file path{hint}")
    raise AvemoError(f"{what} is a {type(source).__name__}: give a file path (str or Path), a list of them, "
                     "or a signal as a numpy array")


def _asked_times(segments: object, every: object) -> tuple[list[Segment] | None, float | None]:
    """The user's own segments and window length, checked (`given_segments`, `window_length`): one or the other."""
    segments, every = given_segments(segments), window_length(every)
    if segments is not None and every is not None:
        raise AvemoError("give segments or every, not both")
    return segments, every


def _check_modalities(modalities: Iterable[str]) -> tuple[str, ...]:
    if isinstance(modalities, str):
        raise AvemoError(f"modalities is a list, such as ['audio', 'face'] or ['{modalities}'], not the string {modalities!r}")
    chosen = tuple(modalities)
    unknown = set(chosen) - set(MODALITIES)
    if unknown or not chosen:
        raise AvemoError(f"modalities must be audio and/or face, not {','.join(chosen) or 'nothing'}")
    return chosen


#: The loudest float sample taken as it is; louder ones (up to `FLOAT_PEAK_MAX`) are clipped.
FLOAT_PEAK_MAX = 2.0


def _signal(signal: np.ndarray, rate: int) -> np.ndarray:
    """A mono signal checked, scaled to -1..1 and brought to 16 kHz (linear interpolation; decoded
    files are resampled by FFmpeg). Integer PCM is scaled by its type's range; floats far outside
    -1..1 are refused: read as they are they gave plausible wrong answers (int16 read as floats:
    surprise for anger)."""
    dtype = np.asarray(signal).dtype
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise AvemoError(f"a signal is an array of real numbers, not of {dtype}")
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        half = (int(info.max) + 1 - int(info.min)) / 2
        signal = (np.asarray(signal, np.float64) - (int(info.min) + half)) / half
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim != 1:
        raise AvemoError(f"a signal must be mono (1-D), not shape {x.shape}")
    if not isinstance(rate, (int, float, np.integer, np.floating)) or not np.isfinite(rate) or rate <= 0:
        raise AvemoError(f"sampling_rate must be a positive number of samples a second, not {rate!r}")
    if len(x) == 0:
        raise AvemoError("the signal is empty (0 samples)")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise AvemoError(f"the signal has {bad} samples that are not numbers (NaN or infinite)")
    peak = float(np.abs(x).max())
    if peak > FLOAT_PEAK_MAX:
        raise AvemoError(f"a float signal runs from -1 to 1, but this one reaches {peak:g}: integer PCM given as floats? "
                         "pass the integer array itself, or divide it by its range (32768 for 16-bit)")
    if peak > 1.0:
        log.warning("signal: samples beyond -1..1 (peak %.3g) were clipped", peak)
        x = np.clip(x, -1.0, 1.0)
    if rate == SAMPLE_RATE:
        return x
    n = int(round(len(x) * SAMPLE_RATE / rate))
    return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)


def _nothing_found(has_audio: bool, unheard: str | None, has_picture: bool, modalities: tuple[str, ...],
                   is_image: bool = False) -> str:
    """Why a file gave nothing to judge; `unheard`: why its sound could hold no speech (too short,
    silent), None where it could and the VAD found none."""
    if is_image:
        return "nothing to analyse: no face in the photo"
    heard = (f"no speech ({unheard})" if has_audio and unheard else "no speech" if has_audio
             else "no audio track") if "audio" in modalities else None
    seen = ("no face in any frame" if has_picture else "no video") if "face" in modalities else None
    return "nothing to analyse: " + " and ".join(x for x in (heard, seen) if x)
