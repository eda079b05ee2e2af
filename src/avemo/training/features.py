"""Training features, extracted once and cached: what `train.py` reads in place of the files.

Each speech file is one segment as `predict` sees it (its VAD speech span) turned into the
voice branch's input (for the whisper front-end: the frozen encoders' states, computed here
once, since they never change); each face photo the 48x48 crop `predict` would judge; each
paired clip both. Why a cache: decoding 10,000 utterances takes longer than an epoch; keyed
by the files' content and the feature settings, a changed file or setting misses it, while a
moved copy still hits it. Items are cached in shards, each written atomically, so an
interrupted extraction resumes at the last shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache, partial
from pathlib import Path

import cv2
import numpy as np
import torch

from ..audio import MelSettings, voice_features
from ..config import ModelConfig
from ..errors import AvemoError
from ..faces import CROP_SIZE, DETECTOR
from ..files import written_whole
from ..media import SAMPLE_RATE, load_audio
from .augment import PHONE_CODECS, real_world
from .datasets import Item
from .model import AudioEncoder, encoder_states
from .pretrained import voiceprint_state
from .whisper import LAYERS as WHISPER_LAYERS
from .whisper import pretrained_state as whisper_state

log = logging.getLogger("avemo")


def _whole_file(args: tuple[str, ModelConfig, int, tuple[str, ...], int]) -> tuple[np.ndarray, np.ndarray]:
    """A whole file as one segment, as `predict` sees it: the voice features of its speech
    span (0 frames if it has none; for the whisper front-end, the encoder's pooled states)
    and, with `max_faces` > 0, its main-face crops. Both empty for a file that cannot be
    decoded. `variant` > 0 gives a copy whose speech went through `augment.real_world`
    (with the sounds of `noise_files`), drawn from a generator seeded by the file's name
    and the variant, so that the same copy can be made again."""
    from ..faces import observe_faces
    from ..media import iter_frames, probe
    from ..predict import segment_inputs
    from ..segments import Segment, speech_regions

    path, cfg, variant, noise_files, max_faces = args
    front, voiceprint = cfg.audio_front, cfg.voiceprint
    torch.set_num_threads(1)
    no_mel, no_crops = np.zeros((0, cfg.state_width), np.float16), np.zeros((0, CROP_SIZE, CROP_SIZE), np.uint8)
    try:
        info = probe(path)
        wave = load_audio(path) if info.has_audio else None
        frames = observe_faces(_detector(), iter_frames(path, cfg.frame_rate), levels=info.levels) if info.has_video and max_faces else []
    except AvemoError as exc:
        log.warning("%s", exc)
        return no_mel, no_crops
    speech = speech_regions(wave) if wave is not None else []
    # a file with a picture is timed by its container, as `predict` does; a sound file by its samples
    length = info.duration if info.has_video or wave is None else len(wave) / SAMPLE_RATE
    settings = MelSettings(**cfg.mel)
    if variant:
        rng = np.random.default_rng([variant, int(hashlib.sha1(Path(path).name.encode()).hexdigest()[:8], 16)])

        def voice(w: np.ndarray) -> np.ndarray:
            return voice_features(real_world(w, rng, _noises(noise_files)), front, settings, voiceprint)
    else:
        voice = partial(voice_features, front=front, settings=settings, voiceprint=voiceprint)
    item = segment_inputs(Segment(0.0, length), wave, frames, speech, voice, max_faces)
    m = no_mel
    if item.mel is not None:
        m = _encoder_states(item.mel, cfg) if front == "whisper" else item.mel.astype(np.float16)
    return m, np.stack(item.crops) if item.crops else no_crops


@lru_cache(maxsize=1)
def _noises(paths: tuple[str, ...]) -> list[np.ndarray]:
    return [load_audio(p) for p in paths]


@lru_cache(maxsize=2)
def pretrained_front(voiceprint: bool, layers: int, stack: bool) -> torch.nn.Module:
    """The whisper front-end's frozen encoders, as their packages give them (Whisper's as far as
    block `layers`; with `stack`, the states of each of those blocks side by side)."""
    audio = AudioEncoder(ModelConfig(audio_front="whisper", voiceprint=voiceprint, whisper_layers=layers, whisper_stack=stack))
    audio.whisper.load_state_dict(whisper_state(layers))
    if voiceprint:
        audio.voiceprint.load_state_dict(voiceprint_state())
    return audio.eval()


def _encoder_states(mel: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Voice frames (`audio.voice_features`) to the states the whisper front-end reads (`model.encoder_states`)."""
    front = pretrained_front(cfg.voiceprint, cfg.whisper_layers, cfg.whisper_stack)
    states, _ = encoder_states(front, torch.from_numpy(mel)[None], torch.tensor([len(mel)]))
    return states[0].numpy().astype(np.float16)


@lru_cache(maxsize=1)
def _detector():
    from ..faces import FaceDetector

    return FaceDetector()


def _crop_of(path: str) -> np.ndarray:
    """A face image as the 48x48 crop `predict` would judge: a tight crop (FER2013) taken
    whole, a larger photo (JAFFE, the Taiwanese set) cut around the face the detector finds.
    Empty for an unreadable image or one without a face found."""
    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if grey is None:
        log.warning("%s: unreadable image", path)
        return np.zeros((0, CROP_SIZE), np.uint8)
    found = _detector().observe(0.0, grey, is_still=True)
    return found.crop if found else np.zeros((0, CROP_SIZE), np.uint8)


def _cache_key(items: list[Item], settings: dict) -> str:
    """Hash of the files' bytes (not their names or dates) and the feature settings."""
    h = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    for item in items:
        h.update(hashlib.sha1(item.path.read_bytes()).digest())
    return h.hexdigest()[:16]


def _ragged(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate(parts), np.cumsum([0] + [len(p) for p in parts])


def _unragged(data: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [data[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def cached_features(items: list[Item], modality: str, cfg: ModelConfig, cache_dir: Path, workers: int,
                    shard: int = 1000, variant: int = 0, noise_files: tuple[str, ...] = ()) -> list:
    """Voice frames (audio: log-Mel, or the whisper front-end's states), 48x48 crops (face) or
    (voice, crops) pairs (video) of `items`, from the cache or computed once, `shard` at a time."""
    feats: list = []
    for start in range(0, len(items), shard):
        feats += _cached_shard(items[start:start + shard], modality, cfg, cache_dir, workers, variant, noise_files)
    return feats


def _cached_shard(items: list[Item], modality: str, cfg: ModelConfig, cache_dir: Path, workers: int, variant: int,
                  noise_files: tuple[str, ...]) -> list:
    settings = {"modality": modality, "mel": cfg.mel, "crop": CROP_SIZE, "voice": "vad-speech-span"}
    if modality == "face":
        settings["faces"] = "detected in photos"
    if modality != "audio":  # crops another detector cut are other crops
        settings["detector"] = DETECTOR
    if cfg.audio_front != "logmel":
        settings["front"] = cfg.audio_front
    if cfg.voiceprint:
        settings["voiceprint"] = "resemblyzer-0.1.4"
    if cfg.audio_front == "whisper" and cfg.whisper_layers != WHISPER_LAYERS:  # caches made before it was a setting hold all
        settings["whisper_layers"] = cfg.whisper_layers
    if cfg.whisper_stack:
        settings["whisper_stack"] = True
    if variant:  # an augmented copy: which one (chain 2: a phone call in two of five copies, through the phone
        # codecs this PyAV can encode), and the noises it may have mixed in (by content)
        settings.update(variant=variant, augment="real_world-2", phone_codecs=[c for c, _, _ in PHONE_CODECS],
                        noises=[hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in noise_files])
    if modality == "video":
        settings.update(frame_rate=cfg.frame_rate, max_faces=cfg.max_faces, faces="main track", deblocked=False)
    path = cache_dir / f"{modality}-{_cache_key(items, settings)}.npz"
    if path.exists():
        with np.load(path) as z:
            if modality != "video":
                return _unragged(z["data"], z["offsets"])
            return list(zip(_unragged(z["mel"], z["mel_offsets"]), _unragged(z["crops"], z["crop_offsets"])))
    log.info("extracting %s features of %d files (cached in %s)", modality, len(items), path)
    if modality == "face":
        feats = [_crop_of(str(i.path)) for i in items]
        arrays = dict(zip(("data", "offsets"), _ragged(feats)))
    else:
        faces = cfg.max_faces if modality == "video" else 0  # speech corpora: the voice alone
        # spawned, not forked: a fork of a process whose threads (ONNX Runtime's, FFmpeg's) hold locks can hang
        # for ever (seen with PyAV 18.1.1 in the test suite)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            args = [(str(i.path), cfg, variant, noise_files, faces) for i in items]
            feats = list(pool.map(_whole_file, args, chunksize=8))
        if modality == "audio":
            feats = [m for m, _ in feats]
            arrays = dict(zip(("data", "offsets"), _ragged(feats)))
        else:
            arrays = dict(zip(("mel", "mel_offsets"), _ragged([m for m, _ in feats])))
            arrays.update(zip(("crops", "crop_offsets"), _ragged([c for _, c in feats])))
    with written_whole(path) as tmp:
        np.savez(tmp, **arrays)
    return feats
