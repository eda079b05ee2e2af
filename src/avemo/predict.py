"""The main job: a file in, per-segment emotion and sentiment out.

file → decoded streams (media) → segments (segments) → log-Mel + face crops (audio,
faces) → network (model) → SegmentResult list → writers. `load_model()` gives the
shipped default model; `Model.predict` takes a path, a list of paths, or a 16 kHz
signal, and returns results or, on request, a DataFrame indexed by (file, start, end).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .audio import MelSettings, log_mel
from .errors import AvemoError
from .faces import FaceDetector, FaceObservation, main_track, observe_faces
from .media import SAMPLE_RATE, iter_frames, load_audio, probe
from .model import AvemoNet, load_net
from .segments import Segment, fixed_windows, plan_segments, speech_regions, speech_span

log = logging.getLogger("avemo")

MODALITIES = ("audio", "face")
#: A file whose audio RMS is below this (-80 dBFS) is silent: the VAD is skipped and errors say "silent".
#: Low on purpose: quiet but real speech (RAVDESS at normal intensity) is for the VAD to judge.
SILENCE_RMS = 1e-4
#: Voice segments shorter than this carry too little prosody to judge.
MIN_VOICE_S = 0.3


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
    face_box: list[int] | None = None  # x, y, w, h (source pixels) of the face judged, its median box

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


def segment_inputs(seg: Segment, wave: np.ndarray | None, observations: list[FaceObservation],
                   speech: list[tuple[float, float]], mel: MelSettings, max_faces: int, is_image: bool = False
                   ) -> SegmentInputs:
    """Log-Mel of the speech span inside the segment (if the VAD heard enough speech there)
    and up to `max_faces` crops of its main face (`faces.main_track`) spread evenly over
    it. Shared by prediction and training on clips, so both see the same inputs."""
    item = SegmentInputs(seg)
    span = speech_span(seg.start, seg.end, speech, MIN_VOICE_S) if wave is not None else None
    if span is not None:
        item.mel = log_mel(wave[int(span[0] * SAMPLE_RATE): int(span[1] * SAMPLE_RATE)], mel)
    inside = [o for o in observations if is_image or seg.start <= o.time < seg.end]
    if inside:
        main = main_track(inside)
        pick = np.linspace(0, len(main) - 1, min(len(main), max_faces)).round().astype(int)
        item.crops = [main[i].crop for i in pick]
        item.faces = max(o.n_faces for o in inside)
        item.box = tuple(int(v) for v in np.median([o.box for o in main], axis=0).round())
    return item


def default_model_dir() -> Path:
    return Path(str(resources.files("avemo") / "assets" / "default"))


def load_model(path: str | Path | None = None, threads: int | None = None) -> Model:
    """The shipped default model, or the model folder at `path` (config.json + model.safetensors)."""
    net, meta = load_net(Path(path) if path else default_model_dir())
    if threads:
        torch.set_num_threads(threads)
    return Model(net, meta)


class Model:
    """A loaded avemo model and the pipeline that feeds it."""

    def __init__(self, net: AvemoNet, meta: dict) -> None:
        self.net = net.eval()
        self.meta = meta
        self.cfg = net.cfg
        self.mel = MelSettings(**self.cfg.mel)
        self._detector: FaceDetector | None = None

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
        segments: list[Segment] | None = None,
        every: float | None = None,
        modalities: Iterable[str] = MODALITIES,
        sampling_rate: int = SAMPLE_RATE,
    ) -> list[SegmentResult] | dict[str, list[SegmentResult]] | pd.DataFrame:
        """Analyse a file, a list of files, or a mono signal.

        One file (or signal) gives a list of SegmentResult and raises AvemoError when it
        cannot be analysed. A list gives {file: results}; files that fail are logged and
        left out, so one bad file does not cost the others. `as_frame=True` returns a
        DataFrame indexed by (file, start, end) instead. Segments follow the speech unless
        `segments` gives them or `every` asks for fixed windows of that many seconds.
        """
        modalities = _check_modalities(modalities)
        if isinstance(source, np.ndarray):
            wave = _resample(source, sampling_rate)
            results = self._analyse(wave, _speech(wave), None, len(wave) / SAMPLE_RATE, False, False, segments, every,
                                    modalities, "signal")
            return to_frame({"signal": results}) if as_frame else results
        if isinstance(source, (str, Path)):
            results = self.predict_file(source, segments=segments, every=every, modalities=modalities)
            return to_frame({str(source): results}) if as_frame else results
        by_file = {str(path): outcome for path, outcome in self.predict_files(source, every=every, modalities=modalities)
                   if not isinstance(outcome, AvemoError)}
        return to_frame(by_file) if as_frame else by_file

    def predict_files(self, paths: Iterable[str | Path], every: float | None = None,
                      modalities: Iterable[str] = MODALITIES) -> Iterator[tuple[Path, list[SegmentResult] | AvemoError]]:
        """Each file's results, or the AvemoError that stopped it (logged, not raised)."""
        for path in paths:
            try:
                yield Path(path), self.predict_file(path, every=every, modalities=modalities)
            except AvemoError as exc:
                log.error("%s", exc)
                yield Path(path), exc

    def predict_file(self, path: str | Path, *, segments: list[Segment] | None = None, every: float | None = None,
                     modalities: Iterable[str] = MODALITIES) -> list[SegmentResult]:
        """Results for one media file; AvemoError when nothing in it can be analysed."""
        modalities = _check_modalities(modalities)
        info = probe(path)
        if "audio" in modalities and not info.has_audio and not info.is_image:
            log.warning("%s: no audio track; judging by the face alone", path)
        see = (info.has_video or info.is_image) and "face" in modalities
        seen_until, box_scale = 0.0, 1.0  # box_scale: source pixels per pixel of the sampled frames

        def frames() -> Iterator[tuple[float, np.ndarray]]:
            nonlocal seen_until, box_scale
            for t, grey in iter_frames(path, self.cfg.frame_rate):
                seen_until = t + 1 / self.cfg.frame_rate
                box_scale = info.width / grey.shape[1]
                yield t, grey

        # the sound (decoding, VAD) is worked out on a second thread while the frames are read
        with ThreadPoolExecutor(1) as pool:
            hearing = pool.submit(_listen, path) if info.has_audio and "audio" in modalities else None
            observations = observe_faces(self.detector, frames(), info.is_image) if see else []
            wave, speech = hearing.result() if hearing else (None, [])
        decoded_until = max(seen_until, len(wave) / SAMPLE_RATE if wave is not None else 0.0)
        if (wave is not None or see) and decoded_until == 0.0:
            raise AvemoError(f"{path}: nothing in it decodes: damaged, or cut off near its start")
        # a cut-off file ends where its streams stopped decoding, not where its header says
        duration = min(info.duration, decoded_until) if info.duration else decoded_until
        results = self._analyse(wave, speech, observations, duration, see, info.is_image, segments, every, modalities,
                                str(path))
        for r in results:
            if r.face_box:
                r.face_box = [round(v * box_scale) for v in r.face_box]
        return results

    # ------------------------------------------------------------ stages

    def _analyse(self, wave: np.ndarray | None, speech: list[tuple[float, float]],
                 observations: list[FaceObservation] | None, duration: float, has_video: bool, is_image: bool,
                 segments: list[Segment] | None, every: float | None, modalities: tuple[str, ...], name: str
                 ) -> list[SegmentResult]:
        has_voice = wave is not None and _voiced(wave)
        if is_image:
            plan = [Segment(0.0, 0.0, False)]
        elif segments is not None:
            plan = segments
        elif every is not None:
            plan = fixed_windows(duration, every, speech)
        else:
            plan = plan_segments(duration, speech, with_video=has_video)
        pending = []
        for seg in plan:
            item = segment_inputs(seg, wave, observations or [], speech, self.mel, self.cfg.max_faces, is_image)
            if item.mel is not None or item.crops:
                pending.append(item)
        if not pending:
            raise AvemoError(f"{name}: {_nothing_found(wave is not None, has_voice, has_video or is_image, modalities)}")
        if observations is not None and (has_video or is_image) and not observations:
            log.warning("%s: no face found; judging by the voice alone", name)
        return self._infer(pending)

    @torch.no_grad()
    def _infer(self, pending: list[SegmentInputs], batch: int = 8) -> list[SegmentResult]:
        """One batched pass per `batch` segments; the context stage, if the model has one,
        then reads all of the file's segments in order. Eight segments of 16 face crops
        keep the face CNN's activations near 100 MB (32 took 0.4 GB more, for no speed)."""
        fused = torch.cat([self.net.embed(**_batch_inputs(pending[i:i + batch], self.cfg.crop_size, self.cfg.max_faces))
                           for i in range(0, len(pending), batch)])
        if self.net.context is not None:
            emo, sent = (logits[0] for logits in self.net.context(fused[None], torch.tensor([len(fused)])))
        else:
            emo, sent = self.net.heads(fused)
        results = []
        for item, e, s in zip(pending, emo.softmax(-1).tolist(), sent.softmax(-1).tolist()):
            used = [m for m, ok in (("audio", item.mel is not None), ("face", bool(item.crops))) if ok]
            results.append(SegmentResult(
                start=round(item.segment.start, 3),
                end=round(item.segment.end, 3),
                emotion=self.cfg.emotions[int(np.argmax(e))],
                emotion_probs={k: round(v, 4) for k, v in zip(self.cfg.emotions, e)},
                sentiment=self.cfg.sentiments[int(np.argmax(s))],
                sentiment_probs={k: round(v, 4) for k, v in zip(self.cfg.sentiments, s)},
                modalities=used,
                faces=item.faces,
                face_box=list(item.box) if item.box and item.crops else None,
            ))
        return results


def _batch_inputs(chunk: list[SegmentInputs], crop_size: int, max_faces: int) -> dict[str, torch.Tensor]:
    """Pad a batch's mels and crops; rows lacking a modality are marked absent."""
    b = len(chunk)
    frames = max([len(p.mel) for p in chunk if p.mel is not None] + [1])
    n_mels = next((p.mel.shape[1] for p in chunk if p.mel is not None), 64)
    mel = torch.zeros(b, frames, n_mels)
    lengths = torch.ones(b, dtype=torch.long)
    crops = torch.zeros(b, max_faces, crop_size, crop_size, dtype=torch.uint8)
    mask = torch.zeros(b, max_faces, dtype=torch.bool)
    for i, p in enumerate(chunk):
        if p.mel is not None:
            mel[i, : len(p.mel)] = torch.from_numpy(p.mel)
            lengths[i] = len(p.mel)
        for j, crop in enumerate(p.crops):
            crops[i, j] = torch.from_numpy(crop)
            mask[i, j] = True
    has_audio = torch.tensor([p.mel is not None for p in chunk])
    return {"mel": mel, "mel_lengths": lengths, "crops": crops, "crop_mask": mask,
            "has_audio": has_audio, "has_face": mask.any(1)}


def frame_rows(file: str, results: list[SegmentResult]) -> list[dict]:
    """One flat row per segment, one column per probability (the DataFrame's and Parquet's)."""
    rows = []
    for r in results:
        row = {"file": file, "start": r.start, "end": r.end, "emotion": r.emotion, "sentiment": r.sentiment}
        row.update({f"emotion_{k}": v for k, v in r.emotion_probs.items()})
        row.update({f"sentiment_{k}": v for k, v in r.sentiment_probs.items()})
        row.update({"modalities": "+".join(r.modalities), "faces": r.faces})
        row.update(zip(("face_x", "face_y", "face_w", "face_h"), r.face_box or [None] * 4))
        rows.append(row)
    return rows


def to_frame(by_file: dict[str, list[SegmentResult]]) -> pd.DataFrame:
    """Results as a DataFrame indexed by (file, start, end), one column per probability."""
    rows = [row for file, results in by_file.items() for row in frame_rows(file, results)]
    frame = pd.DataFrame(rows, columns=None if rows else ["file", "start", "end", "emotion", "sentiment"])
    return frame.set_index(["file", "start", "end"])


def _check_modalities(modalities: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(modalities)
    unknown = set(chosen) - set(MODALITIES)
    if unknown or not chosen:
        raise AvemoError(f"modalities must be audio and/or face, not {','.join(chosen) or 'nothing'}")
    return chosen


def _listen(path: str | Path) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A file's sound and where its speech is."""
    wave = load_audio(path)
    return wave, _speech(wave)


def _speech(wave: np.ndarray) -> list[tuple[float, float]]:
    """Speech regions; none (and no VAD run) in sound too short or too quiet to hold a voice."""
    return speech_regions(wave) if _voiced(wave) else []


def _voiced(wave: np.ndarray) -> bool:
    return len(wave) >= MIN_VOICE_S * SAMPLE_RATE and _rms(wave) >= SILENCE_RMS


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _resample(signal: np.ndarray, rate: int) -> np.ndarray:
    """A mono signal at 16 kHz (linear interpolation; decoded files are resampled by FFmpeg)."""
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim != 1:
        raise AvemoError(f"a signal must be mono (1-D), not shape {x.shape}")
    if rate == SAMPLE_RATE or len(x) == 0:
        return x
    n = int(round(len(x) * SAMPLE_RATE / rate))
    return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)


def _nothing_found(has_audio: bool, has_voice: bool, has_picture: bool, modalities: tuple[str, ...]) -> str:
    heard = ("no speech (silent audio)" if has_audio and not has_voice else "no speech" if has_audio
             else "no audio track") if "audio" in modalities else None
    seen = ("no face in any frame" if has_picture else "no video") if "face" in modalities else None
    return "nothing to analyse: " + " and ".join(x for x in (heard, seen) if x)
