"""Who speaks when, measured: the diarisation error rate on a real two-person recording, and
conversations built from real actors' labelled utterances.

    python benchmarks/diarisation.py [--conversations 12] [--seed 0]

1. pyannote's 30 s sample (tests/data/pyannote_sample, MIT; its labelled turns): DER with a
   0.25 s collar, with avemo's own VAD (not the labelled speech regions).
2. Conversations of 2-4 of RAVDESS's actors held out of the shipped model's training (04, 15, 16,
   17), sound only (people are told apart by voice so far): each turn one real utterance of a
   known emotion, 0.3-0.8 s apart. Reported: people counted right, DER, the share of speech time
   given to the right person, segments spanning two people's turns, and the per-turn emotion with
   people on against the single stream (the emotion of the segment covering most of each turn).
3. Conversations of the two people in ../shared whose own face and voice were recorded together
   (av_clips: CREMA-D's actor 1001 in six emotions, RAVDESS's actor 01), their clips taking turns,
   side by side (the one speaking moving, the other still) and cut between (only the one speaking on
   screen): the same figures, and whether each voice is linked to its own face.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

import avemo
from avemo.diarise import diarise
from avemo.media import load_audio
from avemo.metrics import diarisation_error
from avemo.segments import speech_regions
from avemo.training.composite import conversation as converse

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "data" / "pyannote_sample"
RAVDESS = REPO.parent / "shared" / "data" / "ravdess_speech"
HELD_OUT = ("04", "15", "16", "17")
EMOTIONS = {"neutral": "neutral", "calm": "neutral", "happy": "joy", "sad": "sadness", "angry": "anger",
            "fearful": "fear", "disgust": "disgust", "surprised": "surprise"}


def pyannote_sample(model) -> dict:
    wave = load_audio(SAMPLE / "sample.wav")
    rows = [line.split() for line in (SAMPLE / "sample.rttm").read_text().splitlines() if line.strip()]
    reference = [(float(r[3]), float(r[3]) + float(r[4]), r[7]) for r in rows]
    turns = diarise(wave, speech_regions(wave), model.runtime.voiceprints)
    return diarisation_error(reference, [(t.start, t.end, t.speaker) for t in turns], collar=0.25)


def conversation(rng: np.random.Generator, index: list[dict], people: int, turns: int) -> tuple[np.ndarray, list]:
    """A signal of `turns` utterances by `people` actors taking turns, and its (start, end, actor, emotion)."""
    actors = list(rng.choice(HELD_OUT, people, replace=False))
    parts, truth, at, last = [], [], 0.0, None
    for _ in range(turns):
        actor = rng.choice([a for a in actors if a != last])
        row = index[rng.choice([i for i, r in enumerate(index) if r["actor"] == actor])]
        wave = load_audio(RAVDESS / row["path"])
        regions = speech_regions(wave)
        if regions:
            wave = wave[int(regions[0][0] * 16000):int(regions[-1][1] * 16000)]
        gap = np.zeros(int(rng.uniform(0.3, 0.8) * 16000), np.float32)
        parts += [wave, gap]
        truth.append((at, at + len(wave) / 16000, actor, EMOTIONS[row["emotion"]]))
        at += (len(wave) + len(gap)) / 16000
        last = actor
    return np.concatenate(parts), truth


def per_turn(results, truth) -> list[bool]:
    """For each turn, whether the segment covering most of it says its emotion."""
    right = []
    for a, b, _, emotion in truth:
        cover = max(results, key=lambda r: max(0.0, min(r.end, b) - max(r.start, a)))
        right.append(cover.emotion == emotion)
    return right


AV_CLIPS = RAVDESS.parent / "av_clips"


def filmed(model, rng: np.random.Generator, n: int, layout: str, folder: Path) -> dict:
    """`n` conversations of the two filmed people in `layout`; the summed figures."""
    with open(AV_CLIPS / "av_clips.csv", newline="") as f:
        clips = list(csv.DictReader(f))
    own = [[c for c in clips if c["speaker"] == who] for who in ("crema-1001", "ravdess-01")]
    tally = {"counted": 0, "right_time": [], "linked": 0, "voices": 0, "spans": 0, "segments": 0, "on": [], "off": []}
    for k in range(n):
        order = [k % 2]
        while len(order) < 6:
            order.append(1 - order[-1])
        picked = [own[who][rng.integers(len(own[who]))] for who in order]
        out, truth = converse([(who, AV_CLIPS / c["path"]) for who, c in zip(order, picked)], folder / f"{layout}{k}.mp4", layout)
        on, off = model.predict(out, people=True), model.predict(out, people=False)
        said = [r for r in on if "audio" in r.modalities and r.person]
        der = diarisation_error(truth, [(r.start, r.end, r.person) for r in said], collar=0.25)
        tally["counted"] += len({r.person for r in on}) == 2
        tally["right_time"].append(1.0 - der["confusion"] / max(1e-9, 1.0 - der["missed"]))
        for person in {r.person for r in said}:  # linked to its own face: the slot where its voice's turns are
            mine = [r for r in said if r.person == person and r.link is not None]
            whose = max(set(order), key=lambda w: sum(max(0.0, min(r.end, b) - max(r.start, a))
                                                      for r in said if r.person == person for a, b, x in truth if x == w))
            tally["voices"] += 1
            slot = 960 // 2
            tally["linked"] += bool(mine) and (layout == "cut" or all((r.face_box[0] + r.face_box[2] / 2) // slot == whose
                                                                          for r in mine))
        tally["segments"] += len(on)
        tally["spans"] += sum(len({w for a, b, w in truth if min(r.end, b) - max(r.start, a) > 0.3}) > 1 for r in on)
        labels = [c["emotion"] for c in picked]
        turns = [(a, b, w, labels[i]) for i, (a, b, w) in enumerate(truth)]
        tally["on"] += per_turn(on, turns)
        tally["off"] += per_turn(off, turns)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--filmed", type=int, default=6, help="filmed conversations per layout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = avemo.load_model()
    score = pyannote_sample(model)
    print(f"pyannote sample: DER {score['der']:.1%} (missed {score['missed']:.1%}, false alarm {score['false_alarm']:.1%}, "
          f"confusion {score['confusion']:.1%}), {score['voices']} voices for {score['people']} people")
    rng = np.random.default_rng(args.seed)
    with open(RAVDESS / "index.csv", newline="") as f:
        index = [r for r in csv.DictReader(f) if r["actor"] in HELD_OUT]
    counted = spans = segments = 0
    ders, right_time, on_turns, off_turns = [], [], [], []
    for n in range(args.conversations):
        people = 2 + n % 3
        wave, truth = conversation(rng, index, people, 3 * people + 2)
        on, off = model.predict(wave, people=True), model.predict(wave, people=False)
        reference = [(a, b, actor) for a, b, actor, _ in truth]
        der = diarisation_error(reference, [(r.start, r.end, r.person) for r in on if r.person], collar=0.25)
        ders.append(der["der"])
        counted += der["voices"] == people
        right_time.append(1.0 - der["confusion"] / max(1e-9, 1.0 - der["missed"]))
        segments += len(on)
        spans += sum(len({actor for a, b, actor, _ in truth if min(r.end, b) - max(r.start, a) > 0.3}) > 1 for r in on)
        on_turns += per_turn(on, truth)
        off_turns += per_turn(off, truth)
        print(f"conversation {n + 1}: {people} people, {der['voices']} voices found, DER {der['der']:.1%}", flush=True)
    if args.conversations:
        print(f"{args.conversations} conversations of 2-4 people: counted right in {counted}; DER mean {np.mean(ders):.1%}; "
              f"speech time to the right person {np.mean(right_time):.1%}; {spans} of {segments} segments span two people's "
              f"turns; per-turn emotion {np.mean(on_turns):.1%} with people, {np.mean(off_turns):.1%} as one stream "
              f"({len(on_turns)} turns)")
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for layout in ("side", "cut"):
            t = filmed(model, rng, args.filmed, layout, Path(folder))
            print(f"{args.filmed} filmed conversations of 2 people, {'side by side' if layout == 'side' else 'cut between'}: "
                  f"counted right in {t['counted']}; speech time to the right person {np.mean(t['right_time']):.1%}; "
                  f"{t['linked']} of {t['voices']} voices linked to their own face; {t['spans']} of {t['segments']} "
                  f"segments span two people's turns; per-turn emotion {np.mean(t['on']):.1%} with people, "
                  f"{np.mean(t['off']):.1%} as one stream ({len(t['on'])} turns)", flush=True)


if __name__ == "__main__":
    main()
