"""`avemo serve` as a client meets it: a real server process on 127.0.0.1, real media uploads."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from avemo.cli import main  # noqa: E402
from avemo.training.composite import looped  # noqa: E402

from ..conftest import FACE_VIDEO, MEDIA, REPO  # noqa: E402

SAMPLE = REPO / "examples" / "sample.mp4"
TOKEN = "s3cret-and-long-enough"


def analysis_processes(server: int) -> list[int]:
    """The server's analysis workers: its children started by multiprocessing's spawn (not its resource tracker)."""
    children = [int(pid) for task in Path(f"/proc/{server}/task").iterdir()
                for pid in (task / "children").read_text().split()]
    return [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def at_once(calls: list) -> None:
    """Run `calls` each on a thread of its own, all at once, and wait for them."""
    threads = [threading.Thread(target=call) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An `avemo serve` process and a small HTTP client for it."""

    def __init__(self, tmp: Path, *args: str, token: str | None = None) -> None:
        self.port, self.token, self.tmp = free_port(), token, tmp
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmp)}
        self.proc = subprocess.Popen([sys.executable, "-m", "avemo", "serve", "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 60
        workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        while time.time() < deadline:  # up, and every worker's model loaded
            try:
                status, raw, _ = self.request("GET", "/healthz")
                if status == 200 and json.loads(raw)["ready"] == workers:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.proc.stderr.read() if self.proc.poll() is not None else ''}")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                auth: bool = True) -> tuple[int, bytes, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = dict(headers or {})
        if self.token and auth:
            headers["Authorization"] = f"Bearer {self.token}"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, data, dict(response.getheaders())

    def upload(self, path: Path | None = None, data: bytes | None = None, name: str | None = None,
               endpoint: str = "/v1/jobs", **fields: str) -> tuple[int, dict]:
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
        content = path.read_bytes() if path is not None else data
        filename = name or (path.name if path is not None else "upload.bin")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        status, raw, _ = self.request("POST", endpoint, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return status, json.loads(raw)

    def wait(self, job_id: str, timeout: float = 180) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, raw, _ = self.request("GET", f"/v1/jobs/{job_id}")
            job = json.loads(raw)
            if job.get("status") in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.2)
        raise TimeoutError(job_id)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve"), "--queue", "2", "--workers", "1", "--max-upload-mb", "3")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    from avemo.training.composite import still_variants

    return still_variants(MEDIA / "single_face.jpg", tmp_path_factory.mktemp("stills"))


@pytest.fixture(scope="module")
def cli_json(tmp_path_factory):
    """What `avemo predict --format json` says of a file (the schema the API must give)."""
    def run(path: Path) -> dict:
        out = tmp_path_factory.mktemp("cli") / "r.json"
        assert main(["-q", "predict", str(path), "--out", str(out)]) == 0
        return json.loads(out.read_text())
    return run


def same_segments(ours: list[dict], theirs: list[dict]) -> bool:
    """The same segments, labels and boxes, probabilities to 1e-3 (thread counts may differ)."""
    def labels(seg: dict) -> dict:
        return {k: v for k, v in seg.items() if not k.endswith("_probs")}

    def close(a: dict, b: dict) -> bool:
        return all(abs(a[p][k] - b[p][k]) <= 1e-3 for p in ("emotion_probs", "sentiment_probs") for k in a[p])

    return len(ours) == len(theirs) and all(labels(a) == labels(b) and close(a, b) for a, b in zip(ours, theirs))


def test_upload_poll_fetch_every_format_and_delete(server, cli_json):
    status, job = server.upload(SAMPLE)
    assert status == 201 and job["status"] in ("queued", "running") and job["duration"] == pytest.approx(12.0, abs=0.1)
    done = server.wait(job["id"])
    assert done["status"] == "done" and done["fraction"] == 1.0 and done["error"] is None
    status, raw, headers = server.request("GET", f"/v1/jobs/{job['id']}/segments?format=json")
    doc = json.loads(raw)
    expected = cli_json(SAMPLE)
    assert doc["file"] == "sample.mp4" and same_segments(doc["segments"], expected["segments"])  # the CLI's schema and answers
    status, raw, headers = server.request("GET", f"/v1/jobs/{job['id']}/segments?format=csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    lines = raw.decode().splitlines()
    assert lines[0].startswith("file,start,end,person,emotion,") and len(lines) == 1 + len(doc["segments"])
    status, raw, _ = server.request("GET", f"/v1/jobs/{job['id']}/segments?format=srt")
    assert raw.decode().startswith("1\n00:00:00,000 --> ")
    status, raw, headers = server.request("GET", f"/v1/jobs/{job['id']}/media", headers={"Range": "bytes=0-99"})
    assert status == 206 and len(raw) == 100 and raw == SAMPLE.read_bytes()[:100]
    assert server.request("DELETE", f"/v1/jobs/{job['id']}")[0] == 200
    assert server.request("GET", f"/v1/jobs/{job['id']}")[0] == 404
    assert server.request("GET", f"/v1/jobs/{job['id']}/media")[0] == 404


def test_server_sent_events_bring_each_segment_then_the_end(server):
    status, job = server.upload(SAMPLE, every="3")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("GET", f"/v1/jobs/{job['id']}/events")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    events, kind = [], None
    while True:
        line = response.readline().decode().strip()
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((kind, json.loads(line.split(":", 1)[1])))
            if kind == "end":
                break
    conn.close()
    segments = [data for kind, data in events if kind == "segment"]
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, pytest.approx(12.0, abs=0.1))]
    progress = [data["progress"] for kind, data in events if kind == "progress"]
    assert progress == sorted(progress) and events[-1][1]["status"] == "done"


def test_a_short_file_is_answered_at_once(server, cli_json):
    status, doc = server.upload(MEDIA / "single_face.jpg", endpoint="/v1/predict")
    assert status == 200 and same_segments(doc["segments"], cli_json(MEDIA / "single_face.jpg")["segments"])


@pytest.mark.parametrize("data,name,code,message", [
    (b"", "empty.mp4", 422, "empty file (0 bytes)"),
    (b"these are meeting notes, not a video\n" * 20, "notes.mp4", 415, "notes.mp4: not a readable media file"),
    (None, "cut.mp4", 415, "cut.mp4: not a readable media file"),
    (bytes(4 * 1024 * 1024), "big.mp4", 413, "larger than this server's limit of 3 MB"),
])
def test_bad_uploads_get_4xx_with_avemos_line_and_the_server_stays_up(server, data, name, code, message):
    if data is None:
        data = SAMPLE.read_bytes()[:2000]  # cut off before its index
    kept = sorted(server.tmp.rglob("*"))
    status, doc = server.upload(data=data, name=name)
    assert status == code and message in doc["error"] and str(server.tmp) not in doc["error"]
    assert server.request("GET", "/healthz")[0] == 200
    assert sorted(server.tmp.rglob("*")) == kept  # nothing of it kept


@pytest.mark.parametrize("name", ["png_rgb24", "png_rgba", "png_gray", "png_ya8", "png_gray16be", "png_palette", "webp"])
def test_a_photo_in_any_storage_is_answered_and_the_server_stays_up(server, stills, name):
    """A PNG with a face once crashed the server's whole process (PyAV freeing its side data twice)."""
    status, doc = server.upload(stills[name], endpoint="/v1/predict")
    assert status == 200 and doc["segments"][0]["faces"] == 1
    status, job = server.upload(stills[name])
    assert status == 201 and server.wait(job["id"])["status"] == "done"
    assert server.request("GET", "/healthz")[0] == 200


def test_a_failed_jobs_segments_answer_with_its_error(server):
    status, job = server.upload(MEDIA / "no_face.mp4", modalities="face")  # a picture without a face: nothing to judge
    assert status == 201 and server.wait(job["id"])["status"] == "failed"
    for fmt in ("json", "csv", "srt"):
        status, raw, _ = server.request("GET", f"/v1/jobs/{job['id']}/segments?format={fmt}")
        assert status == 422 and "no face in any frame" in json.loads(raw)["error"]


def test_a_worker_killed_mid_job_fails_that_job_and_the_server_goes_on(tmp_path):
    long_video = looped(FACE_VIDEO, 1.0, tmp_path / "minute.mp4")
    srv = Server(tmp_path / "serve", "--queue", "2", "--workers", "1")
    try:
        status, job = srv.upload(long_video)
        assert status == 201
        deadline = time.time() + 60
        while json.loads(srv.request("GET", f"/v1/jobs/{job['id']}")[1])["progress"] <= 0 and time.time() < deadline:
            time.sleep(0.1)
        (worker,) = analysis_processes(srv.proc.pid)
        os.kill(worker, signal.SIGKILL)  # as a decoder's segfault or the out-of-memory killer would
        state = srv.wait(job["id"])
        assert state["status"] == "failed"
        assert state["error"].startswith("minute.mp4: the analysis stopped: its process ended (killed by SIGKILL)")
        assert srv.request("GET", "/healthz")[0] == 200
        status, doc = srv.upload(MEDIA / "single_face.jpg", endpoint="/v1/predict")  # a fresh worker takes the next
        assert status == 200 and doc["segments"][0]["faces"] == 1
        (idle,) = analysis_processes(srv.proc.pid)
        os.kill(idle, signal.SIGKILL)  # a worker that dies while it waits for work
        status, doc = srv.upload(MEDIA / "single_face.jpg", endpoint="/v1/predict")
        assert status == 200 and doc["segments"][0]["faces"] == 1
    finally:
        assert srv.stop() == 0


def test_answers_at_once_are_bounded_by_the_queue(tmp_path):
    srv = Server(tmp_path / "serve", "--queue", "1", "--workers", "1")
    codes = []
    try:
        at_once([lambda: codes.append(srv.upload(SAMPLE, endpoint="/v1/predict")[0])] * 6)
    finally:
        srv.stop()
    assert len(codes) == 6 and 200 in codes and 429 in codes and set(codes) <= {200, 429}


def test_a_token_too_short_to_resist_guessing_is_refused():
    proc = subprocess.run([sys.executable, "-m", "avemo", "serve", "--port", str(free_port()), "--token", "abc"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("avemo: error: --token is 3 characters: give at least 16") and "secrets" in proc.stderr


def test_a_bad_option_is_refused(server):
    status, doc = server.upload(MEDIA / "single_face.jpg", modalities="smell")
    assert status == 422 and "modalities must be audio and/or face" in doc["error"]
    status, doc = server.upload(MEDIA / "single_face.jpg", people="maybe")
    assert status == 422 and "people is on or off, not 'maybe'" in doc["error"]


def test_people_over_http_as_on_the_command_line(server, cli_json, tmp_path):
    recording = Path(__file__).parents[1] / "data" / "pyannote_sample" / "sample.wav"
    status, doc = server.upload(recording, endpoint="/v1/predict", people="on")
    assert status == 200 and [p["person"] for p in doc["people"]] == ["P1", "P2"]
    out = tmp_path / "r.json"
    assert main(["-q", "predict", str(recording), "--people", "on", "--out", str(out)]) == 0
    assert same_segments(doc["segments"], json.loads(out.read_text())["segments"])


def test_a_full_queue_answers_429(tmp_path):
    long_video = looped(FACE_VIDEO, 1.5, tmp_path / "ninety_seconds.mp4")
    srv = Server(tmp_path / "serve", "--queue", "1", "--workers", "1")
    try:
        codes = [srv.upload(long_video)[0] for _ in range(4)]  # one runs, one waits, the rest are refused
        assert codes[:2] == [201, 201] and 429 in codes[2:]
        status, raw, _ = srv.request("GET", "/healthz")
        assert json.loads(raw)["running"] == 1
    finally:
        assert srv.stop() == 0  # a graceful stop with a job running and one waiting
    assert not list((tmp_path / "serve").rglob("avemo-serve-*"))  # its uploads deleted on the way out


def test_a_non_loopback_bind_needs_a_token(tmp_path):
    refused = subprocess.run([sys.executable, "-m", "avemo", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "AVEMO_TOKEN": ""})
    assert refused.returncode == 1
    assert refused.stderr.strip() == "avemo: error: --host 0.0.0.0 is reachable from other machines: give --token (or set AVEMO_TOKEN)"
    srv = Server(tmp_path, "--host", "0.0.0.0", "--token", TOKEN, token=TOKEN)
    try:
        assert srv.request("GET", "/healthz", auth=False)[0] == 401
        assert srv.request("GET", "/healthz", headers={"Authorization": "Bearer wrong"}, auth=False)[0] == 401
        assert srv.request("GET", "/healthz")[0] == 200
        assert srv.request("GET", f"/healthz?token={TOKEN}", auth=False)[0] == 200
        assert srv.upload(MEDIA / "single_face.jpg", endpoint="/v1/predict")[0] == 200
    finally:
        srv.stop()


def test_concurrent_uploads_all_finish_with_the_clis_results(tmp_path, cli_json):
    srv = Server(tmp_path, "--queue", "4", "--workers", "2")
    files = [SAMPLE, MEDIA / "single_face.jpg", FACE_VIDEO]
    answers: dict[Path, dict] = {}

    def one(path: Path) -> None:
        status, job = srv.upload(path)
        assert status == 201
        assert srv.wait(job["id"])["status"] == "done"
        answers[path] = json.loads(srv.request("GET", f"/v1/jobs/{job['id']}/segments")[1])

    try:
        at_once([lambda f=f: one(f) for f in files])
    finally:
        srv.stop()
    assert set(answers) == set(files)
    for path in files:
        assert same_segments(answers[path]["segments"], cli_json(path)["segments"])


def test_openapi_documents_the_api(server):
    status, raw, _ = server.request("GET", "/openapi.json")
    paths = json.loads(raw)["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/segments", "/v1/jobs/{job_id}/events", "/v1/predict",
            "/healthz"} <= set(paths)
    assert server.request("GET", "/docs")[0] == 200


def test_plot_draws_the_timeline(tmp_path, capsys):
    import cv2

    assert main(["-q", "predict", str(SAMPLE), "--out", str(tmp_path / "r.csv")]) == 0
    assert main(["plot", str(tmp_path / "r.csv"), "--out", str(tmp_path / "curve.png")]) == 0
    image = cv2.imread(str(tmp_path / "curve.png"))
    assert image is not None and image.shape[1] > 1000
    joy = (image[..., 0] < 40) & (image[..., 1] > 160) & (image[..., 2] > 220)  # the joy colour, f4b400, is drawn
    assert joy.sum() > 500
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert main(["plot", str(tmp_path / "other.csv"), "--out", str(tmp_path / "x.png")]) == 1
    assert "not a results CSV written by avemo predict" in capsys.readouterr().err
