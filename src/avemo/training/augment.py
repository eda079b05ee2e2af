"""Sound and faces as real videos and phones carry them: lossy codecs, noise, rooms, narrow bands;
small, blurred, compressed, unevenly lit faces.

Why: the speech corpora are clean studio recordings (or 24 kbit/s Opus), while users'
videos carry AAC or MP3 at whatever rate the uploader chose, over rooms and music, and
speech recorded on phones passes an 8 kHz codec, automatic gain and a room. A voice model
that has only heard clean sound reads codec artefacts as emotion (a happy utterance as
24 kbit/s MP3 was judged angry). Training copies go through one random chain of these
(`real_world`, a phone call in two of five: `phone_call`), decided by a seeded generator
so that a cached copy can be made again. The face corpora are sharp, evenly lit photos;
a face in a video is often a few dozen pixels wide, blurred by motion, blocky from the
codec and lit from one side: `face_as_video` does that to a training crop.
"""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np

from ..faces import CROP_SIZE
from ..media import SAMPLE_RATE

#: (encoder, container format, bit rates in kbit/s) of the codecs a training copy may pass through.
CODECS = (("libmp3lame", "mp3", (16, 24, 32, 48, 64)), ("aac", "adts", (16, 24, 32, 48, 64)),
          ("libopus", "ogg", (16, 24, 32, 48, 64)))


def _encodes(codec: str) -> bool:
    """Whether the FFmpeg inside this PyAV can encode `codec` (builds differ: PyAV 18.1.0's wheels carry
    AMR-NB's encoder, 18.1.1's do not)."""
    try:
        av.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


#: (encoder, container format, bit rates in kbit/s) of a phone call's voice codec, all at 8 kHz but Opus:
#: AMR-NB (GSM/3G calls, voice messages; where this PyAV can encode it), G.711 mu-law (landlines, VoIP)
#: and Opus at VoIP rates.
PHONE_CODECS = tuple(c for c in (("libopencore_amrnb", "amr", (4.75, 5.9, 7.4, 10.2, 12.2)), ("pcm_mulaw", "wav", (64,)),
                                 ("libopus", "ogg", (8, 12, 16))) if _encodes(c[0]))


def through_codec(wave: np.ndarray, codec: str, fmt: str, kbps: float, rate: int | None = None) -> np.ndarray:
    """`wave` (16 kHz mono float32) encoded with `codec` at `kbps` (at `rate` Hz: default 48 kHz
    for Opus, which encodes at no other, 16 kHz for the rest) and decoded back, same length."""
    import io

    rate = rate or (48000 if codec == "libopus" else SAMPLE_RATE)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = round(kbps * 1000)
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


def _noise_like(x: np.ndarray, rng: np.random.Generator, noises: list[np.ndarray]) -> np.ndarray:
    """Noise as long as `x`: a stretch of one of `noises`, or white, or brown (a rumble, as of traffic or a fan)."""
    pick = int(rng.integers(0, len(noises) + 2))
    if pick < len(noises):
        start = int(rng.integers(0, max(1, len(noises[pick]) - len(x))))
        return noises[pick][start:start + len(x)]
    if pick == len(noises):
        return rng.standard_normal(len(x)).astype(np.float32)
    noise = np.cumsum(rng.standard_normal(len(x))).astype(np.float32)
    return noise - np.convolve(noise, np.ones(801) / 801, mode="same").astype(np.float32)


def in_room(wave: np.ndarray, rt60: float, rng: np.random.Generator, direct: float = 1.0) -> np.ndarray:
    """`wave` heard in a room whose echo dies away by 60 dB in `rt60` seconds: a synthetic impulse
    response (noise under an exponential decay, after the `direct` path), loudness kept."""
    n = max(1, int(rt60 * SAMPLE_RATE))
    tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    response = np.r_[direct, np.zeros(int(0.002 * SAMPLE_RATE)), 0.3 * tail / np.sqrt(np.sum(tail ** 2) + 1e-12)]
    wet = np.convolve(wave, response)[: len(wave)]
    return (wet * np.sqrt((np.mean(wave ** 2) + 1e-12) / (np.mean(wet ** 2) + 1e-12))).astype(np.float32)


def with_gain_control(wave: np.ndarray, target_db: float = -20.0) -> np.ndarray:
    """A phone's automatic gain: each 0.2 s brought towards `target_db` RMS (at most +20 dB), smoothly."""
    block = SAMPLE_RATE // 5
    blocks = [wave[i:i + block] for i in range(0, len(wave), block)]
    levels = np.array([np.sqrt(np.mean(b ** 2) + 1e-10) for b in blocks])
    gains = np.minimum(10 ** (target_db / 20) / levels, 10.0)
    gains = np.convolve(np.pad(gains, 1, mode="edge"), np.ones(3) / 3, mode="valid")  # no jumps between blocks
    per_sample = np.interp(np.arange(len(wave)), np.arange(len(blocks)) * block + block / 2, gains)
    return np.tanh(wave * per_sample).astype(np.float32)  # and a soft limiter, as phones clip


def phone_call(wave: np.ndarray, rng: np.random.Generator, noises: list[np.ndarray]) -> np.ndarray:
    """Speech as a phone records or carries it: a room (half the time), background noise (7-25 dB
    SNR, two times in three), automatic gain, the 300-3400 Hz band, and an 8 kHz voice codec
    (AMR-NB at 4.75-12.2 kbit/s, G.711 mu-law or Opus at 8-16 kbit/s)."""
    x = wave
    if rng.random() < 0.5:
        x = in_room(x, rng.uniform(0.2, 0.7), rng)
    if rng.random() < 2 / 3:
        x = with_noise(x, _noise_like(x, rng, noises), rng.uniform(7, 25))
    x = band_limited(with_gain_control(x, rng.uniform(-26, -14)), rng.uniform(200, 350), rng.uniform(3300, 3500))
    codec, fmt, rates = PHONE_CODECS[int(rng.integers(0, len(PHONE_CODECS)))]
    return through_codec(x, codec, fmt, float(rng.choice(rates)), rate=48000 if codec == "libopus" else 8000)


def real_world(wave: np.ndarray, rng: np.random.Generator, noises: list[np.ndarray]) -> np.ndarray:
    """One random chain: a phone call two times in five (`phone_call`); else gain (-12..+6 dB),
    noise from `noises` or generated (half the time, 5-30 dB SNR), a narrow band (a fifth of the
    time), then a lossy codec at 16-64 kbit/s (nine times in ten)."""
    if rng.random() < 0.4:
        return phone_call(wave, rng, noises)
    x = wave * np.float32(10 ** (rng.uniform(-12, 6) / 20))
    if rng.random() < 0.5:
        x = with_noise(x, _noise_like(x, rng, noises), rng.uniform(5, 30))
    if rng.random() < 0.2:
        x = band_limited(x, rng.uniform(100, 400), rng.uniform(3000, 4000))
    x = np.clip(x, -1, 1)
    if rng.random() < 0.9:
        codec, fmt, rates = CODECS[int(rng.integers(0, len(CODECS)))]
        x = through_codec(x, codec, fmt, int(rng.choice(rates)))
    return x.astype(np.float32)


def face_as_video(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 48x48 grey face crop as a video frame may show it: cut from a face 12-36 px wide (scaled
    down and back up), blurred (out of focus or by motion), lit from one side, grainy and
    compressed as a JPEG at quality 15-60; each of these a half of the time or less."""
    out = np.ascontiguousarray(crop)
    if rng.random() < 0.5:
        side = int(rng.integers(12, 37))
        small = cv2.resize(out, (side, side), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:
        if rng.random() < 0.5:
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.6, 1.6))
        else:
            length = int(rng.integers(3, 8))
            kernel = np.zeros((length, length), np.float32)
            kernel[length // 2] = 1.0 / length
            kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2),
                                                                     rng.uniform(0, 180), 1.0), (length, length))
            out = cv2.filter2D(out, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.3:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * np.linspace(-1, 1, CROP_SIZE)[None, :] + np.sin(angle) * np.linspace(-1, 1, CROP_SIZE)[:, None]
        out = np.clip(out * (1 + rng.uniform(0.2, 0.6) * ramp), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = np.clip(out + rng.normal(0, rng.uniform(2, 8), out.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, code = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 61))])
        out = cv2.imdecode(code, cv2.IMREAD_GRAYSCALE)
    return out
