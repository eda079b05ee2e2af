"""Per person: a file's speech segments cut where the voice changes and given to the person
speaking, and what each person showed over the whole file.

    segments (a planner's) ─ wait until the voices are known (diarise.Voices) ─ cut at each
    change of voice ─ labelled "P1", "P2", ... ─ judged; results ─ one summary per person

People are anonymous ids, per file, numbered in order of first speech: avemo does not know who
anyone is, only that two stretches sound like one voice. What a person's voice or face shows is
an expression, not a felt emotion. So far people are told apart by voice alone: a face-only
stretch has no person, and a voice heard in very different states (a calm turn, a shouted one)
may be taken for two people.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .diarise import WARM_SPEECH_S, Voices
from .segments import Segment, SpeechSoFar

#: Segments wait at most this long (seconds of media) for the voices to be clustered: the bound
#: on what a long file with little speech holds before its first results.
WARM_SPAN_S = 180.0
#: A piece of a segment cut at a change of voice shorter than this joins the piece before it.
MIN_PIECE_S = 0.3


def person_id(voice: int) -> str:
    return f"P{voice + 1}"


class PeoplePlanner:
    """A planner (`segments.SpeechPlanner`, `WindowPlanner`, `GivenPlanner`) whose speech segments
    wait until the voices in them are known, then come cut at each change of voice (the speech
    planner's own; the user's stretches stay whole) and labelled with the person speaking.
    `sound()` gives the sound held now and the second it starts at."""

    def __init__(self, inner, voices: Voices, sound: Callable[[], tuple[np.ndarray, float]]) -> None:
        self.inner, self.voices, self.sound = inner, voices, sound
        self.asked = inner.asked
        self._waiting: list[Segment] = []

    @property
    def keep_from(self) -> float:
        """No later segment starts before this, and no unheard speech either."""
        return min([self.inner.keep_from, self.voices.heard_until] + [s.start for s in self._waiting])

    def advance(self, speech: SpeechSoFar) -> list[Segment]:
        self._waiting += self.inner.advance(speech)
        self._hear(speech.final)
        first = self._waiting[0].start if self._waiting else speech.known_until
        if self.voices.speech_s >= WARM_SPEECH_S or speech.known_until - first >= WARM_SPAN_S:
            self.voices.settle()
        if not self.voices.ready:
            return []
        out, self._waiting = self._labelled(self._waiting), []
        self.voices.forget(self.keep_from)
        return out

    def finish(self, speech: list[tuple[float, float]], duration: float) -> list[Segment]:
        self._waiting += self.inner.finish(speech, duration)
        self._hear(speech)
        self.voices.settle()
        out, self._waiting = self._labelled(self._waiting), []
        return out

    def _hear(self, regions: Sequence[tuple[float, float]]) -> None:
        if regions and regions[-1][1] > self.voices.heard_until:
            wave, start = self.sound()
            self.voices.hear(regions, wave, start)

    def _labelled(self, segments: list[Segment]) -> list[Segment]:
        out: list[Segment] = []
        for seg in segments:
            turns = self.voices.turns(seg.start, seg.end) if seg.speech or self.asked else []
            if not turns:
                out.append(seg)
            elif self.asked:  # the user's stretch, whole: the person who speaks most of it
                share: dict[int, float] = {}
                for t in turns:
                    share[t.speaker] = share.get(t.speaker, 0.0) + t.end - t.start
                out.append(Segment(seg.start, seg.end, seg.speech, person_id(max(share, key=share.get))))
            else:
                out += cut_at_turns(seg, turns)
        return out


def cut_at_turns(seg: Segment, turns: Sequence) -> list[Segment]:
    """`seg` cut at each change of voice inside it, each piece labelled with its voice; pieces
    shorter than `MIN_PIECE_S` join the one before (or after)."""
    pieces: list[list] = []
    for t in turns:
        a, b = max(seg.start, t.start), min(seg.end, t.end)
        if b <= a:
            continue
        if pieces and pieces[-1][2] == t.speaker:
            pieces[-1][1] = b
        else:
            pieces.append([a, b, t.speaker])
    if not pieces:
        return [seg]
    pieces[0][0], pieces[-1][1] = seg.start, seg.end  # the segment's padding stays with its ends
    for i in range(1, len(pieces)):  # gaps between turns (pauses) go to the piece before
        pieces[i][0] = pieces[i - 1][1]
    merged: list[list] = []
    for piece in pieces:
        if merged and (piece[1] - piece[0] < MIN_PIECE_S or merged[-1][1] - merged[-1][0] < MIN_PIECE_S):
            keep = merged[-1] if merged[-1][1] - merged[-1][0] >= piece[1] - piece[0] else piece
            merged[-1] = [merged[-1][0], piece[1], keep[2]]
        else:
            merged.append(piece)
    return [Segment(round(a, 3), round(b, 3), seg.speech, person_id(v)) for a, b, v in merged]


def people_summary(results: Sequence) -> list[dict]:
    """Per person of a file's results (`SegmentResult`s with a `person`): seconds speaking,
    seconds on screen (their segments with a face judged), the emotion and sentiment over their
    segments weighted by each one's length (with probabilities), and a face box with its time
    (the longest of their segments with one)."""
    people: dict[str, list] = {}
    for r in results:
        if r.person is not None:
            people.setdefault(r.person, []).append(r)
    out = []
    for who, rs in sorted(people.items(), key=lambda kv: int(kv[0][1:])):
        weights = np.array([max(r.end - r.start, 1e-3) for r in rs])
        emotion = _weighted([r.emotion_probs for r in rs], weights)
        sentiment = _weighted([r.sentiment_probs for r in rs], weights)
        faced = [r for r in rs if r.face_box is not None]
        shown = max(faced, key=lambda r: r.end - r.start, default=None)
        out.append({
            "person": who,
            "speaking_s": round(sum(r.end - r.start for r in rs if "audio" in r.modalities), 3),
            "on_screen_s": round(sum(r.end - r.start for r in faced), 3),
            "segments": len(rs),
            "emotion": max(emotion, key=emotion.get), "emotion_probs": emotion,
            "sentiment": max(sentiment, key=sentiment.get), "sentiment_probs": sentiment,
            "voice_face_linked": False, "link_confidence": None,
            "face_box": shown.face_box if shown else None,
            "face_time": round((shown.start + shown.end) / 2, 3) if shown else None,
        })
    return out


def _weighted(probs: list[dict[str, float]], weights: np.ndarray) -> dict[str, float]:
    keys = list(probs[0])
    mean = np.average(np.array([[p[k] for k in keys] for p in probs]), axis=0, weights=weights)
    return {k: round(float(v), 4) for k, v in zip(keys, mean)}
