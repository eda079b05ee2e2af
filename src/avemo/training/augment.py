"""Sound as real videos carry it: lossy codecs, noise, gain, a narrow band.

Why: the speech corpora are clean studio recordings (or 24 kbit/s Opus), while users'
videos carry AAC or MP3 at whatever rate the uploader chose, over rooms and music. A
voice model that has only heard clean sound reads codec artefacts as emotion (a happy
utterance as 24 kbit/s MP3 was judged angry). Training copies go through one random
chain of these, decided by a seeded generator so that a cached copy can be made again.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from ..media import SAMPLE_RATE

#: (encoder, container format, bit rates in kbit/s) of the codecs a training copy may pass through.
CODECS = (("libmp3lame", "mp3", (16, 24, 32, 48, 64)), ("aac", "adts", (16, 24, 32, 48, 64)),
          ("libopus", "ogg", (16, 24, 32, 48, 64)))


def through_codec(wave: np.ndarray, codec: str, fmt: str, kbps: int) -> np.ndarray:
    """`wave` (16 kHz mono float32) encoded with `codec` at `kbps` and decoded back, same length."""
    import io

    rate = 48000 if codec == "libopus" else SAMPLE_RATE  # Opus encodes at 48 kHz only
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = kbps * 1000
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(np.clip(wave, -1, 1).astype(np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, 0, Fraction(1, SAMPLE_RATE)
        for piece in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    back = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    with av.open(buf, "r", format=fmt) as src:
        parts = [f.to_ndarray().reshape(-1) for frame in src.decode(audio=0) for f in back.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in back.resample(None)]
    decoded = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    # encoders delay the sound by their priming samples: align by the best lag within 100 ms
    lag = _delay(wave, decoded, int(0.1 * SAMPLE_RATE))
    decoded = decoded[lag:lag + len(wave)]
    return np.pad(decoded, (0, len(wave) - len(decoded))).astype(np.float32)


def _delay(ref: np.ndarray, x: np.ndarray, most: int) -> int:
    n = min(len(ref), len(x) - most, 4 * SAMPLE_RATE)
    if n <= 0:
        return 0
    scores = [float(np.dot(ref[:n], x[lag:lag + n])) for lag in range(0, most + 1, 8)]
    coarse = int(np.argmax(scores)) * 8
    fine = range(max(0, coarse - 8), min(most, coarse + 8) + 1)
    return max(fine, key=lambda lag: float(np.dot(ref[:n], x[lag:lag + n])))


def with_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`noise` (looped or cut to length) added at `snr_db` below the speech's power."""
    if len(noise) == 0 or not np.any(noise):
        return wave
    reps = int(np.ceil(len(wave) / len(noise)))
    noise = np.tile(noise, reps)[: len(wave)]
    speech_power = float(np.mean(np.square(wave))) + 1e-12
    noise_power = float(np.mean(np.square(noise))) + 1e-12
    return (wave + noise * np.sqrt(speech_power / noise_power / 10 ** (snr_db / 10))).astype(np.float32)


def band_limited(wave: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """Only `low_hz`..`high_hz` kept (a phone line, a laptop speaker), by zeroing the spectrum outside."""
    spectrum = np.fft.rfft(wave)
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spectrum, len(wave)).astype(np.float32)


def real_world(wave: np.ndarray, rng: np.random.Generator, noises: list[np.ndarray]) -> np.ndarray:
    """One random chain: gain (-12..+6 dB), noise from `noises` or generated (half the time, 5-30 dB
    SNR), a narrow band (a fifth of the time), then a lossy codec at 16-64 kbit/s (nine times in ten)."""
    x = wave * np.float32(10 ** (rng.uniform(-12, 6) / 20))
    if rng.random() < 0.5:
        pick = int(rng.integers(0, len(noises) + 2))
        if pick < len(noises):
            noise = noises[pick]
            start = int(rng.integers(0, max(1, len(noise) - len(x))))
            noise = noise[start:start + len(x)]
        elif pick == len(noises):  # white
            noise = rng.standard_normal(len(x)).astype(np.float32)
        else:  # brown: a rumble, as of traffic or a fan
            noise = np.cumsum(rng.standard_normal(len(x))).astype(np.float32)
            noise -= np.convolve(noise, np.ones(801) / 801, mode="same").astype(np.float32)
        x = with_noise(x, noise, rng.uniform(5, 30))
    if rng.random() < 0.2:
        x = band_limited(x, rng.uniform(100, 400), rng.uniform(3000, 4000))
    x = np.clip(x, -1, 1)
    if rng.random() < 0.9:
        codec, fmt, rates = CODECS[int(rng.integers(0, len(CODECS)))]
        x = through_codec(x, codec, fmt, int(rng.choice(rates)))
    return x.astype(np.float32)
