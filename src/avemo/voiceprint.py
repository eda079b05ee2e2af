"""A pretrained speaker encoder beside Whisper: Resemblyzer's GE2E voiceprint of each utterance.

Why: Whisper's states say what is being said and how, in the words of the few hundred
voices avemo trains on; a speaker encoder trained on thousands of voices to tell people
apart describes the voice itself (its pitch, timbre, effort), and emotion moves it too.
Standardised by its speaker's statistics it was the largest cross-corpus gain the probes
found (`../shared/notes/pretrained-probes.md`: UAR on TESS 0.37 -> 0.46, on SAVEE 0.25 ->
0.36 beside Whisper). A model with `voiceprint` reads each utterance's voiceprint beside
every one of its Whisper states, so the voice normalisation (`normalise.py`) and the
recurrent branch treat both alike.

    16 kHz speech ─ level raised to -30 dBFS if quieter ─ 40-band Mel power (25 ms, 10 ms)
    ─ 1.6 s windows, 1.3 a second ─ LSTM ×3 (256) ─ linear, ReLU, L2 norm ─ mean, L2 norm

The weights (Apache-2.0, `NOTICE_RESEMBLYZER`) are read once, at build time, from the PyPI
package `Resemblyzer` (`pip install --no-deps resemblyzer==0.1.4`: only its weights file is
read, so its dependencies are not needed); avemo ships them inside its own safetensors. The
windowing and pooling here are numpy, shared by the ONNX and the torch runtimes; the
network over the windows is `model.VoiceprintLSTM` (graph `voiceprint.onnx`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .audio import PRINT_MELS, WHISPER_MELS

#: Frames (10 ms) per window, as the encoder was trained; windows start every `WINDOW_STEP` frames (1.3 a second).
WINDOW = 160
WINDOW_STEP = 77
#: A last window shorter than this share of `WINDOW` is dropped (unless it is the only one).
MIN_COVERAGE = 0.75

NOTICE_RESEMBLYZER = ("Voiceprint encoder weights: Resemblyzer 0.1.4 (Apache License 2.0, Copyright 2019 Resemble.AI; "
                      "the licence is assets/default/LICENSE-resemblyzer), a GE2E speaker encoder, read from the "
                      "PyPI package's pretrained.pt.")


def windows(mel: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded 40-band frames (B, T, 40) to the encoder's windows (N, 160, 40), zero past each
    row's end, and the row each window belongs to (N,): as Resemblyzer cuts an utterance."""
    out, owners = [], []
    for row, n in enumerate(np.asarray(lengths).tolist()):
        n = max(int(n), 1)
        starts = list(range(0, max(1, n - WINDOW + WINDOW_STEP + 1), WINDOW_STEP))
        if len(starts) > 1 and (n - starts[-1]) / WINDOW < MIN_COVERAGE:
            starts.pop()
        take = min(n, mel.shape[1], starts[-1] + WINDOW)
        frames = np.zeros((starts[-1] + WINDOW, mel.shape[2]), np.float32)
        frames[:take] = mel[row, :take]
        out += [frames[s:s + WINDOW] for s in starts]
        owners += [row] * len(starts)
    return np.stack(out), np.array(owners)


def pooled(partials: np.ndarray, owners: np.ndarray, rows: int) -> np.ndarray:
    """Window embeddings (N, 256) to each row's voiceprint (rows, 256): their L2-normed mean."""
    sums = np.zeros((rows, partials.shape[1]), np.float64)
    np.add.at(sums, owners, partials)
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def with_voiceprints(states: np.ndarray, steps: np.ndarray, mel: np.ndarray, lengths: np.ndarray,
                     embed: Callable[[np.ndarray], np.ndarray], given: np.ndarray | None = None) -> np.ndarray:
    """Whisper's padded states (B, T', 384) with each row's voiceprint beside every one of its
    states (B, T', 384 + 256; zero past the row's steps). `mel` holds the voice frames as
    `audio.voice_features` gives them (Whisper's 80 bands, then the voiceprint's 40), `embed`
    runs the encoder on windows. `given` (B, 256): voiceprints already known (where people are
    told apart, the diariser's windows pooled), NaN rows for those to compute here."""
    prints = None if given is None else np.array(given, np.float32)
    need = np.arange(len(states)) if prints is None else np.flatnonzero(np.isnan(prints).any(axis=1))
    if len(need):
        bands = mel[need, :, WHISPER_MELS:WHISPER_MELS + PRINT_MELS]
        cut, owners = windows(bands, np.asarray(lengths)[need])
        computed = pooled(embed(cut), owners, len(need))
        if prints is None:
            prints = computed
        else:
            prints[need] = computed
    beside = np.repeat(prints[:, None, :], states.shape[1], axis=1)
    beside[np.arange(states.shape[1])[None, :] >= np.asarray(steps)[:, None]] = 0.0
    return np.concatenate([np.asarray(states, np.float32), beside], axis=2)
