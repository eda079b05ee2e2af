"""Awkward input, all of it: the CLI, the Python API and the server, each case in a process of
its own so that a native crash is seen as one (issue 44).

    python benchmarks/fuzz.py [--only cli,api,server] [--keep DIR] [--against OTHER/src]

Every input is made from ../shared's real media: stills stored every way (`composite.still_variants`),
cut and garbled files, names that are not UTF-8, speech the VAD misses, arguments of the wrong
kind, outputs that cannot be written, a server under abuse. Each case says what a right outcome
is: a result (exit 0), or one clear line and exit 1 (the API: AvemoError); it is counted

  good   the right outcome;
  wrong  another one: an internal error, a traceback, a raw exception, a refusal of what should
         be judged, a result where a refusal was due, or a message that is not one line;
  crash  the process died (a signal such as SIGSEGV), or the server stopped answering.

The summary line is what docs/usage.md and the README quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import av
import numpy as np

from avemo.training.composite import mux_clip, still_variants

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data"))
MEDIA = DATA / "media"
SPEECH = DATA / "ravdess_speech" / "Actor_16" / "03-01-05-02-01-01-16.flac"
SCREAM = DATA / "ravdess_speech" / "Actor_20" / "03-01-06-02-02-02-20.flac"
TIMEOUT = 300
#: The environment of every process a case runs in (`--against` puts another checkout's code first).
ENV = dict(os.environ)


def make_inputs(d: Path) -> dict[str, Path]:
    """The files the cases use, made from the shared media."""
    files = {f"still_{k}": v for k, v in still_variants(MEDIA / "single_face.jpg", d / "stills").items()}
    with av.open(str(MEDIA / "no_face.mp4")) as src:  # a picture without anyone in it
        next(src.decode(video=0)).to_image().save(d / "nobody.jpg")
    files |= {f"still_nobody_{k}": v for k, v in still_variants(d / "nobody.jpg", d / "nobody").items()
              if k.startswith("png")}
    video = mux_clip(MEDIA / "WolfgangLanger_Pexels.mp4", [(0.5, SPEECH)], d / "talk.mp4", duration=6.0)
    files["talk"] = video
    files["scream"] = Path(shutil.copy(SCREAM, d / "scream.flac"))
    files["speech"] = Path(shutil.copy(SPEECH, d / "speech.flac"))
    raw = video.read_bytes()
    rng = np.random.default_rng(44)
    for share in (0.01, 0.3, 0.7, 0.99):
        files[f"cut_{share}"] = _write(d / f"cut_{share}.mp4", raw[: int(len(raw) * share)])
    spoilt = bytearray(raw)
    for at in rng.integers(len(raw) // 10, len(raw) - 10, 40):
        spoilt[at] ^= 0xFF
    files["garbled"] = _write(d / "garbled.mp4", bytes(spoilt))
    files["noise"] = _write(d / "noise.mp4", rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    files["empty"] = _write(d / "empty.wav", b"")
    files["text"] = _write(d / "notes.mp3", b"not a sound\n" * 50)
    files["video_as_jpg"] = Path(shutil.copy(video, d / "clip.jpg"))
    files["photo_as_mp4"] = Path(shutil.copy(MEDIA / "single_face.jpg", d / "photo.mp4"))
    files["music"] = Path(shutil.copy(MEDIA / "no_face.mp4", d / "music.mp4"))
    odd = os.fsencode(d) + b"/odd\xff\xfe.flac"
    with open(odd, "wb") as f:
        f.write(SPEECH.read_bytes())
    files["odd_name"] = Path(os.fsdecode(odd))
    os.symlink("loop2", d / "loop1")
    os.symlink("loop1", d / "loop2")
    files["symlink_loop"] = d / "loop1"
    os.symlink("missing.mp4", d / "dangling.mp4")
    files["dangling"] = d / "dangling.mp4"
    files["folder"] = d / "stills"
    files["manifest_empty"] = _write(d / "empty_manifest.csv", b"path\n")
    files["manifest_no_path"] = _write(d / "bad_manifest.csv", b"file\na.mp4\n")
    files["segments_header"] = _write(d / "segments_header.csv", b"start,end\n")
    files["segments_backwards"] = _write(d / "segments_backwards.csv", b"start,end\n3,1\n")
    files["segments_ok"] = _write(d / "segments.csv", b"start,end\n0,3.9\n")
    return files


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def cli_cases(f: dict[str, Path], d: Path) -> list[tuple[str, list[str], str]]:
    """(name, argv after `avemo`, "ok" or "refused")."""
    s = {k: str(v) for k, v in f.items()}
    cases = [(f"predict {k}", ["predict", v], "ok" if "nobody" not in k else "refused")
             for k, v in s.items() if k.startswith("still")]
    cases += [(f"predict {k} json", ["predict", v, "--format", "json"], "ok") for k, v in s.items()
              if k.startswith("still_png")]
    cases += [
        ("talking video", ["predict", s["talk"]], "ok"),
        ("scream the VAD misses", ["predict", s["scream"]], "ok"),
        ("scream --every 5", ["predict", s["scream"], "--every", "5"], "ok"),
        ("scream --segments", ["predict", s["scream"], "--segments", s["segments_ok"]], "ok"),
        ("music, no speech", ["predict", s["music"], "--modalities", "audio"], "refused"),
        ("music --every 2", ["predict", s["music"], "--every", "2"], "ok"),
        ("video named .jpg", ["predict", s["video_as_jpg"]], "ok"),
        ("photo named .mp4", ["predict", s["photo_as_mp4"]], "ok"),
        ("cut at 1%", ["predict", s["cut_0.01"]], "refused"),
        ("cut at 70%", ["predict", s["cut_0.7"]], "ok"),
        ("cut at 99%", ["predict", s["cut_0.99"]], "ok"),
        ("garbled bytes", ["predict", s["garbled"], "--format", "json"], "ok"),
        ("noise", ["predict", s["noise"]], "refused"),
        ("empty file", ["predict", s["empty"]], "refused"),
        ("text as mp3", ["predict", s["text"]], "refused"),
        ("missing file", ["predict", str(d / "absent.mp4")], "refused"),
        ("a folder as --out", ["predict", s["speech"], "--out", str(d)], "refused"),
        ("symlink loop", ["predict", s["symlink_loop"]], "refused"),
        ("dangling symlink", ["predict", s["dangling"]], "refused"),
        ("folder of stills", ["predict", s["folder"], "--out", str(d / "stills.csv")], "ok"),
        ("odd name to csv", ["predict", s["odd_name"], "--out", str(d / "odd.csv")], "ok"),
        ("odd name to txt", ["predict", s["odd_name"], "--out", str(d / "odd.txt")], "ok"),
        ("odd name to json", ["predict", s["odd_name"], "--out", str(d / "odd.json")], "ok"),
        ("odd name to srt", ["predict", s["odd_name"], "--format", "srt"], "ok"),
        ("empty manifest", ["predict", s["manifest_empty"]], "refused"),
        ("manifest without path", ["predict", s["manifest_no_path"]], "refused"),
        ("segments: header only", ["predict", s["speech"], "--segments", s["segments_header"]], "refused"),
        ("segments: backwards", ["predict", s["speech"], "--segments", s["segments_backwards"]], "refused"),
        ("segments: missing", ["predict", s["speech"], "--segments", str(d / "none.csv")], "refused"),
        ("segments and every", ["predict", s["speech"], "--segments", s["segments_ok"], "--every", "2"], "refused"),
        ("segments for a folder", ["predict", s["folder"], "--segments", s["segments_ok"]], "refused"),
    ]
    cases += [(f"--every {v}", ["predict", s["speech"], "--every", v], "refused") for v in ("nan", "inf", "-1", "0", "0.001")]
    cases += [(f"--every {v}", ["predict", s["speech"], "--every", v], "ok") for v in ("0.5", "1e3")]
    cases += [
        ("--out in a read-only place", ["predict", s["speech"], "--out", "/sys/avemo.json"], "refused"),
        ("--out under a missing /proc entry", ["predict", s["speech"], "--out", "/proc/none/r.csv"], "refused"),
        ("--out a full disk, csv", ["predict", s["speech"], "--out", "/dev/full", "--format", "csv"], "refused"),
        ("--out a full disk, table", ["predict", s["speech"], "--out", "/dev/full"], "refused"),
        ("--out a full disk, json", ["predict", s["speech"], "--out", "/dev/full", "--format", "json"], "refused"),
        ("--format contradicting --out", ["predict", s["speech"], "--format", "json", "--out", str(d / "r.csv")], "refused"),
        ("--resume without --out", ["predict", s["speech"], "--resume"], "refused"),
        ("--modalities smell", ["predict", s["speech"], "--modalities", "smell"], "refused"),
        ("--modalities face of a sound", ["predict", s["speech"], "--modalities", "face"], "refused"),
        ("--modalities audio of a photo", ["predict", s["still_jpeg"], "--modalities", "audio"], "refused"),
        ("--batch-files 0", ["predict", s["speech"], "--batch-files", "0"], "refused"),
        ("--model missing", ["predict", s["speech"], "--model", str(d / "nomodel")], "refused"),
        ("stdin", ["predict", "-"], "refused"),
        ("evaluate: no manifest", ["evaluate"], "refused"),
        ("serve: short token", ["serve", "--token", "abc", "--port", "1"], "refused"),
        ("serve: open without token", ["serve", "--host", "0.0.0.0", "--port", "1"], "refused"),
        ("plot: missing results", ["plot", str(d / "none.csv"), "--out", str(d / "p.png")], "refused"),
    ]
    return cases


#: API cases: (name, Python statements using `m` (the model) and `f` (the files), "ok" or "refused").
API_CASES = [
    ("PNG, then garbage collection", "m.predict(f['still_png_rgb24']); gc.collect()", "ok"),
    ("grey+alpha PNG", "m.predict(f['still_png_ya8']); gc.collect()", "ok"),
    ("16-bit grey PNG", "m.predict(f['still_png_gray16be']); gc.collect()", "ok"),
    ("palette PNG", "m.predict(f['still_png_palette']); gc.collect()", "ok"),
    ("PNG as a frame", "m.predict(f['still_png_rgba'], as_frame=True); gc.collect()", "ok"),
    ("stream of a PNG", "list(m.stream(f['still_png_gray'])); gc.collect()", "ok"),
    ("a scream", "assert m.predict(f['scream'])[0].modalities == ['audio']", "ok"),
    ("int16 PCM", "w = load_audio(f['speech']); e = m.predict(w)[0].emotion; "
                  "assert m.predict((w * 32767).astype(np.int16))[0].emotion == e", "ok"),
    ("uint8 PCM", "w = load_audio(f['speech']); m.predict((w * 127 + 128).astype(np.uint8))", "ok"),
    ("floats at int16 scale", "m.predict(load_audio(f['speech']) * 32767)", "refused"),
    ("a list as the signal", "m.predict([0.0] * 16000)", "refused"),
    ("a 2-D signal", "m.predict(np.zeros((2, 16000), np.float32))", "refused"),
    ("an empty signal", "m.predict(np.zeros(0, np.float32))", "refused"),
    ("a signal of strings", "m.predict(np.array(['a', 'b']))", "refused"),
    ("a NaN signal", "m.predict(np.full(16000, np.nan, np.float32))", "refused"),
    ("rate 0", "m.predict(np.zeros(16000, np.float32), sampling_rate=0)", "refused"),
    ("None", "m.predict(None)", "refused"),
    ("an int", "m.predict(3)", "refused"),
    ("a dict", "m.predict({'a': 1})", "refused"),
    ("a bytes path", "m.predict(os.fsencode(f['speech']))", "ok"),
    ("the same file twice", "out = m.predict([f['speech'], f['speech']]); assert len(out) == 2 and out[0] == out[1]", "ok"),
    ("every as text", "m.predict(f['speech'], every='5')", "refused"),
    ("every NaN", "m.predict(f['speech'], every=float('nan'))", "refused"),
    ("every inf", "m.predict(f['speech'], every=float('inf'))", "refused"),
    ("every True", "m.predict(f['speech'], every=True)", "refused"),
    ("segments as tuples", "assert m.predict(f['speech'], segments=[(0.5, 2.5)])[0].end == 2.5", "ok"),
    ("segments as a path", "m.predict(f['speech'], segments=f['segments_ok'])", "ok"),
    ("segments as a str path", "m.predict(f['speech'], segments=str(f['segments_ok']))", "ok"),
    ("segments missing path", "m.predict(f['speech'], segments='x.csv')", "refused"),
    ("segments backwards", "m.predict(f['speech'], segments=[Segment(5, 3)])", "refused"),
    ("segments empty", "m.predict(f['speech'], segments=[])", "refused"),
    ("segments NaN", "m.predict(f['speech'], segments=[Segment(float('nan'), 2)])", "refused"),
    ("segments triples", "m.predict(f['speech'], segments=[(1, 2, 3)])", "refused"),
    ("segments a number", "m.predict(f['speech'], segments=5)", "refused"),
    ("segments outside", "m.predict(f['speech'], segments=[(100, 200)])", "refused"),
    ("modalities a string", "m.predict(f['speech'], modalities='audio')", "refused"),
    ("modalities unknown", "m.predict(f['speech'], modalities=['smell'])", "refused"),
    ("normalise unknown", "m.predict(f['speech'], normalise='loud')", "refused"),
    ("a video named .jpg", "assert m.predict(f['video_as_jpg'])[-1].end > 1", "ok"),
    ("a list with a bad file", "out = m.predict([f['speech'], f['noise']]); assert isinstance(out[1], avemo.AvemoError)", "ok"),
    ("a missing model", "avemo.load_model('/nonexistent/model')", "refused"),
]

_API_PRELUDE = """
import gc, json, os, sys
import numpy as np
import avemo
from avemo.media import load_audio
from avemo.segments import Segment
f = {k: __import__('pathlib').Path(os.fsdecode(v)) for k, v in json.loads(sys.argv[1]).items()}
m = avemo.load_model()
try:
%s
    print(json.dumps({'outcome': 'ok'}))
except avemo.AvemoError as exc:
    print(json.dumps({'outcome': 'refused', 'message': str(exc)}))
except Exception as exc:
    print(json.dumps({'outcome': 'raw', 'message': type(exc).__name__ + ': ' + str(exc)}))
"""


def run_cli(argv: list[str], expect: str, cwd: Path) -> tuple[str, str]:
    limit = 30 if argv[0] == "serve" else TIMEOUT  # a server that should have refused to start serves on
    try:
        proc = subprocess.run([sys.executable, "-m", "avemo", "-q", *argv], capture_output=True, cwd=cwd, timeout=limit,
                              env=ENV)
    except subprocess.TimeoutExpired:
        return "wrong", f"still running after {limit} s"
    if not _full_device_intact():
        return "wrong", "replaced the device /dev/full with a file (restored)"
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode < 0 or proc.returncode >= 128:
        return "crash", f"exit {proc.returncode}: {err[-200:]}"
    if "Traceback" in err or "internal error" in err:
        return "wrong", err.splitlines()[-1]
    if expect == "ok":
        return ("good", "") if proc.returncode == 0 and proc.stdout is not None else ("wrong", f"exit {proc.returncode}: {err}")
    lines = [line for line in err.splitlines() if line.startswith("avemo: error:")]
    if proc.returncode == 1 and len(lines) == 1:
        return "good", ""
    return "wrong", f"exit {proc.returncode}: {err[-300:]}"


def _full_device_intact() -> bool:
    """Whether /dev/full is still the device (code that writes its output beside it and renames it over
    the target, as avemo once did, replaces it with a file): restored where it is not."""
    if stat.S_ISCHR(os.stat("/dev/full").st_mode):
        return True
    os.remove("/dev/full")
    os.mknod("/dev/full", 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    os.chmod("/dev/full", 0o666)
    return False


def run_api(code: str, expect: str, files: dict[str, Path]) -> tuple[str, str]:
    body = "\n".join("    " + line for line in code.split("; "))
    arg = json.dumps({k: os.fsdecode(os.fsencode(v)) if "odd" not in k else "" for k, v in files.items()})
    proc = subprocess.run([sys.executable, "-c", _API_PRELUDE % body, arg], capture_output=True, text=True, timeout=TIMEOUT,
                          env=ENV)
    if proc.returncode != 0:
        return ("crash" if proc.returncode < 0 or proc.returncode >= 128 else "wrong"), f"exit {proc.returncode}: {proc.stderr[-200:]}"
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    if doc["outcome"] == expect:
        return "good", ""
    return "wrong", f"{doc['outcome']}: {doc.get('message', '')}"


def run_server(files: dict[str, Path], d: Path) -> list[tuple[str, str, str]]:
    """Uploads of every still, of files that are not media, a worker killed mid-job, a bounded queue."""
    import http.client
    import socket
    import uuid

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "avemo", "serve", "--port", str(port), "--queue", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**ENV, "TMPDIR": str(d)})

    def request(method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, {"text": raw[:200].decode("utf-8", "replace")}

    def upload(path: Path, endpoint: str) -> tuple[int, dict]:
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n\r\n'.encode()
                + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
        return request("POST", endpoint, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def alive() -> bool:
        try:
            return request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    outcomes: list[tuple[str, str, str]] = []

    def check(name: str, case) -> None:
        """Run `case` (True, or the reason it is wrong); a server that stops answering is a crash."""
        try:
            said = case()
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            said = f"{type(exc).__name__}: {exc}"
        if said is True and alive():
            outcomes.append((f"server: {name}", "good", ""))
        else:
            outcomes.append((f"server: {name}", "wrong" if alive() else "crash", str(said)))

    def answered(key: str) -> bool | str:
        status, doc = upload(files[key], "/v1/predict")
        return status == 200 and doc["segments"][0]["faces"] == 1 or f"{status}: {doc}"

    def refused(key: str) -> bool | str:
        status, doc = upload(files[key], "/v1/predict")
        return 400 <= status < 500 and "error" in doc or f"{status}: {doc}"

    def killed_mid_job() -> bool | str:
        status, job = upload(long_video, "/v1/jobs")
        state: dict = {}
        deadline = time.time() + 60
        while request("GET", f"/v1/jobs/{job['id']}")[1].get("progress", 0) <= 0 and time.time() < deadline:
            time.sleep(0.1)
        children = [int(pid) for task in Path(f"/proc/{proc.pid}/task").iterdir()
                    for pid in (task / "children").read_text().split()]
        spawned = [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        for pid in spawned:  # the analysis worker, as a decoder's segfault would end it
            os.kill(pid, 9)
        deadline = time.time() + 60
        while time.time() < deadline and state.get("status") not in ("done", "failed", "cancelled"):
            state = request("GET", f"/v1/jobs/{job['id']}")[1]
            time.sleep(0.3)
        jobs.append(job["id"])
        if not spawned:
            return f"no analysis process to kill ({state})"
        return state.get("status") == "failed" and "its process ended" in (state.get("error") or "") or str(state)

    def failed_csv() -> bool | str:
        status, doc = request("GET", f"/v1/jobs/{jobs[-1]}/segments?format=csv")
        return status == 422 and "error" in doc or f"{status}: {doc}"

    from avemo.training.composite import looped

    long_video, jobs = looped(MEDIA / "WolfgangLanger_Pexels.mp4", 3.0, d / "long.mp4"), []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (alive() and request("GET", "/healthz")[1].get("ready") == 1):
            time.sleep(0.3)
        for key in [k for k in files if k.startswith("still_png") or k in ("still_jpeg", "still_webp", "still_tiff")]:
            check(f"/v1/predict {key}", lambda key=key: answered(key))
        for key in ("noise", "text", "empty", "cut_0.01"):
            check(f"refuses {key}", lambda key=key: refused(key))
        check("worker killed mid-job", killed_mid_job)
        check("next job after the kill", lambda: answered("still_png_rgb24"))
        check("a failed job's CSV says its error", failed_csv)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="cli,api,server", help="which surfaces to try (default: all three)")
    parser.add_argument("--keep", type=Path, help="make the inputs in this folder and keep them")
    parser.add_argument("--against", type=Path, help="run the cases on another checkout's src/ folder (the code before a change)")
    args = parser.parse_args()
    if args.against:
        ENV["PYTHONPATH"] = str(args.against.resolve())
    d = args.keep or Path(tempfile.mkdtemp(prefix="avemo-fuzz-"))
    d.mkdir(parents=True, exist_ok=True)
    files = make_inputs(d)
    rows: list[tuple[str, str, str]] = []
    only = set(args.only.split(","))
    if "cli" in only:
        rows += [(f"cli: {name}", *run_cli(argv, expect, d)) for name, argv, expect in cli_cases(files, d)]
    if "api" in only:
        rows += [(f"api: {name}", *run_api(code, expect, files)) for name, code, expect in API_CASES]
    if "server" in only:
        rows += run_server(files, d)
    for name, outcome, why in rows:
        if outcome != "good":
            print(f"{outcome:6} {name}: {why}")
    counts = Counter(outcome for _, outcome, _ in rows)
    by_surface = Counter(name.split(":")[0] for name, _, _ in rows)
    print(f"{len(rows)} cases ({', '.join(f'{n} {s}' for s, n in by_surface.items())}): "
          f"{counts['good']} good, {counts['wrong']} wrong, {counts['crash']} crash")
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
