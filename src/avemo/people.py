"""Per person: a file's speech segments cut where the voice changes and given to the person
speaking, and what each person showed over the whole file.

    segments (a planner's) ─ wait until the voices are known (diarise.Voices) ─ cut at each
    change of voice ─ labelled "P1", "P2", ... ─ judged; results ─ one summary per person

People are anonymous ids, per file, numbered in order of first appearance: avemo does not know
who anyone is, only that two stretches sound like one voice or show one face. What a person's voice
or face shows is an expression, not a felt emotion. Where no face links them, a voice heard in very
different states (a calm turn, a shouted one) may be taken for two people.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from .diarise import WARM_SPEECH_S, Voices
from .faces import MIN_MOUTH_MOTION, SPEAKING_MARGIN, FaceObservation, main_track, mouth_motion
from .identity import Identities
from .segments import Segment, SpeechSoFar

#: Segments wait at most this long (seconds of media) for the voices to be clustered: the bound
#: on what a long file with little speech holds before its first results.
WARM_SPAN_S = 90.0
#: A piece of a segment cut at a change of voice shorter than this joins the piece before it.
MIN_PIECE_S = 0.3
#: Live, the voices are clustered after this much speech (or this much time): the first results wait for it.
LIVE_WARM = (20.0, 30.0)
#: Speech still going on is embedded once this much of it is new (a few of the encoder's 1.6 s windows).
HEAR_AHEAD_S = 4.0


def person_id(index: int) -> str:
    return f"P{index + 1}"


class PeoplePlanner:
    """A planner (`segments.SpeechPlanner`, `WindowPlanner`, `GivenPlanner`) whose speech segments
    wait until the voices in them are known, then come cut at each change of voice (the speech
    planner's own; the user's stretches stay whole) and labelled with the person speaking.
    `sound()` gives the sound held now and the second it starts at, `faces()` the faces seen since
    then: each new voice is linked to the face whose mouth moves while it speaks (`speaking_tracks`),
    and voices linked to one face are one person (an acted voice in two states, one face); a face is
    known again after a cut or an absence by its identity (`identity.Identities`)."""

    def __init__(self, inner, voices: Voices, sound: Callable[[], tuple[np.ndarray, float]],
                 faces: Callable[[], list[FaceObservation]] = list, warm: tuple[float, float] = (WARM_SPEECH_S, WARM_SPAN_S)
                 ) -> None:
        self.inner, self.voices, self.sound, self.faces = inner, voices, sound, faces
        self.warm_speech_s, self.warm_span_s = warm  # how much speech, or media, is clustered before results come
        self.asked = inner.asked
        self._waiting: list[Segment] = []
        self._person: dict[int, str] = {}  # voice -> person
        self.identities = Identities()  # face tracks -> who they show
        self._by_face: dict[int, str] = {}  # face identity -> person
        self._face: dict[str, int] = {}  # person -> face identity
        self._link: dict[str, float] = {}  # person -> how sure their voice is linked to their face

    @property
    def keep_from(self) -> float:
        """No later segment starts before this. (Speech not yet embedded lies after the inner planner's own
        `keep_from`: it keeps every region that has not settled, and settled ones are embedded at once.)"""
        return min([self.inner.keep_from] + [s.start for s in self._waiting])

    def advance(self, speech: SpeechSoFar) -> list[Segment]:
        self._waiting += self.inner.advance(speech)
        going_on = [speech.open] if speech.open and speech.open[1] - self.voices.heard_until >= HEAR_AHEAD_S else []
        self._hear([*speech.final, *going_on], bool(going_on))  # a long region is heard as it goes on
        first = self._waiting[0].start if self._waiting else speech.known_until
        if self.voices.speech_s >= self.warm_speech_s or speech.known_until - first >= self.warm_span_s:
            self.voices.settle()
        if not self.voices.ready:
            return []
        embedded = self.voices.embedded_until  # later speech is still being embedded: its segments wait for it
        keep_from = self.keep_from  # the windows of the segments given now are kept: their voiceprints are asked for next
        ready = [s for s in self._waiting if s.end <= embedded]
        self._waiting = [s for s in self._waiting if s.end > embedded]
        out = self._labelled(ready)
        self.voices.forget(keep_from)
        return out

    def finish(self, speech: list[tuple[float, float]], duration: float) -> list[Segment]:
        self._waiting += self.inner.finish(speech, duration)
        self._hear(speech)
        self.voices.settle()
        self.voices.close()
        out, self._waiting = self._labelled(self._waiting), []
        return out

    def _hear(self, regions: Sequence[tuple[float, float]], going_on: bool = False) -> None:
        if regions and regions[-1][1] > self.voices.heard_until:
            wave, start = self.sound()
            self.voices.hear(regions, wave, start, going_on)

    def _people_of(self, voices: dict[int, list[tuple[float, float]]]) -> None:
        """Give each voice not seen before a person: the person of the face it is linked to, else a new one."""
        new = {v: spans for v, spans in voices.items() if v not in self._person}
        seen = self.faces()
        links = speaking_tracks(new, seen, lambda track: self.identities.of(track, seen)) if new else {}
        for voice in sorted(new, key=lambda v: new[v][0][0]):
            track, confidence = links.get(voice, (None, 0.0))
            face = self.identities.of(track, self.faces()) if track is not None else None
            person = self._by_face.get(face) if face is not None else None
            if person is None:
                person = self._new_person()
                if face is not None:
                    self._by_face[face], self._face[person] = person, face
            if face is not None:
                self._link[person] = max(self._link.get(person, 0.0), confidence)
            self._person[voice] = person

    def _new_person(self) -> str:
        return person_id(len(set(self._person.values()) | set(self._by_face.values())))

    def _labelled(self, segments: list[Segment]) -> list[Segment]:
        spoken: dict[int, list[tuple[float, float]]] = {}
        for seg in segments:
            for t in self.voices.turns(seg.start, seg.end) if seg.speech or self.asked else []:
                spoken.setdefault(t.speaker, []).append((t.start, t.end))
        self._people_of(spoken)
        out: list[Segment] = []
        for seg in segments:
            turns = self.voices.turns(seg.start, seg.end) if seg.speech or self.asked else []
            if not turns:
                out.append(self._face_only(seg))
            elif self.asked:  # the user's stretch, whole: the person who speaks most of it
                share: dict[int, float] = {}
                for t in turns:
                    share[t.speaker] = share.get(t.speaker, 0.0) + t.end - t.start
                out.append(Segment(seg.start, seg.end, seg.speech, self._person[max(share, key=share.get)]))
            else:
                out += cut_at_turns(seg, turns, self._person)
        return [self._own_face(seg) for seg in out]

    def _own_face(self, seg: Segment) -> Segment:
        """`seg` with its person's own face track in it, where one is seen (and how sure the link of
        their voice to it is; None for a face-only person)."""
        if seg.person not in self._face or seg.face is not None:
            return seg
        tracks = {o.track for o in self.faces() if seg.start <= o.time < seg.end}
        own = [t for t in sorted(tracks) if self.identities.of(t, self.faces()) == self._face[seg.person]]
        return replace(seg, face=(own[0], self._link.get(seg.person))) if own else seg

    def _face_only(self, seg: Segment) -> Segment:
        """A stretch without speech: the person whose face it mostly shows (a listener's face is a
        person too, judged from the face), a new one for a face not seen speaking."""
        inside = [o for o in self.faces() if seg.start <= o.time < seg.end]
        if not inside:
            return seg
        track = main_track(inside)[0].track
        face = self.identities.of(track, self.faces())
        person = self._by_face.get(face)
        if person is None:
            person = self._by_face[face] = self._new_person()
            self._face[person] = face
        return replace(seg, person=person, face=(track, self._link.get(person)))


def cut_at_turns(seg: Segment, turns: Sequence, person: dict[int, str]) -> list[Segment]:
    """`seg` cut at each change of person inside it (`person`: each voice's), each piece labelled
    with its person; pieces shorter than `MIN_PIECE_S` join the one before (or after)."""
    pieces: list[list] = []
    for t in turns:
        a, b = max(seg.start, t.start), min(seg.end, t.end)
        if b <= a:
            continue
        if pieces and pieces[-1][2] == person[t.speaker]:
            pieces[-1][1] = b
        else:
            pieces.append([a, b, person[t.speaker]])
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
    return [Segment(round(a, 3), round(b, 3), seg.speech, who) for a, b, who in merged]


def speaking_tracks(voices: dict[int, list[tuple[float, float]]], observations: Sequence[FaceObservation],
                    face: Callable[[int], int] = lambda track: track) -> dict[int, tuple[int, float]]:
    """For each voice (its turns), the face (`face(track)`: the identity a track shows) that speaks
    it, and how sure that is (0-1): the face whose mouth moves most while the voice speaks (over all
    its tracks: a person cut away from and back to), where it moves (`faces.MIN_MOUTH_MOTION`) and
    clearly more than any other face's then (`faces.SPEAKING_MARGIN`, the speaking-face rule of
    `faces.main_track`); the track returned is one of that face's. A voice no face moves with (a
    narrator, someone off screen) has none: unlinked rather than guessed."""
    tracks: dict[int, list[FaceObservation]] = {}
    for o in observations:
        tracks.setdefault(o.track, []).append(o)
    links = {}
    for voice, spans in voices.items():
        moves: dict[int, list[tuple[float, int]]] = {}  # face -> (mouth motion, frames) of each of its tracks
        for track, seen in tracks.items():
            inside = [o for o in seen if any(a <= o.time < b for a, b in spans)]
            if len(inside) >= 3:
                moves.setdefault(face(track), []).append((mouth_motion(inside), len(inside)))
        motion = {who: float(np.average([m for m, _ in ms], weights=[n for _, n in ms])) for who, ms in moves.items()}
        if not motion:
            continue
        best = max(motion, key=motion.get)
        rival = max((m for t, m in motion.items() if t != best), default=0.0)
        if motion[best] >= MIN_MOUTH_MOTION and motion[best] >= SPEAKING_MARGIN * rival:
            track = next(t for t, seen in tracks.items() if face(t) == best)
            links[voice] = (track, round(1.0 - rival / motion[best], 3))
    return links


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
        own = [r for r in faced if r.link is not None]  # their own face, where their voice is linked to one
        shown = max(own or faced, key=lambda r: r.end - r.start, default=None)
        out.append({
            "person": who,
            "speaking_s": round(sum(r.end - r.start for r in rs if "audio" in r.modalities), 3),
            "on_screen_s": round(sum(r.end - r.start for r in faced), 3),
            "segments": len(rs),
            "emotion": max(emotion, key=emotion.get), "emotion_probs": emotion,
            "sentiment": max(sentiment, key=sentiment.get), "sentiment_probs": sentiment,
            "voice_face_linked": any(r.link is not None for r in rs),
            "link_confidence": max((r.link for r in rs if r.link is not None), default=None),
            "face_box": shown.face_box if shown else None,
            "face_time": round((shown.start + shown.end) / 2, 3) if shown else None,
        })
    return out


def _weighted(probs: list[dict[str, float]], weights: np.ndarray) -> dict[str, float]:
    keys = list(probs[0])
    mean = np.average(np.array([[p[k] for k in keys] for p in probs]), axis=0, weights=weights)
    return {k: round(float(v), 4) for k, v in zip(keys, mean)}
