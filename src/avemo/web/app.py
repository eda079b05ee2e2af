"""The web app and its HTTP API: `avemo serve`.

    POST   /v1/jobs                     multipart upload (fields: file, every, modalities, people) -> {id}
    GET    /v1/jobs/{id}                status, progress (seconds analysed of the duration), error
    GET    /v1/jobs/{id}/segments       ?format=json|csv|srt (the CLI's writers, the CLI's JSON schema)
    GET    /v1/jobs/{id}/events         Server-Sent Events: each segment as it settles, progress, the end
    GET    /v1/jobs/{id}/media          the uploaded file, for the page's player (byte ranges)
    DELETE /v1/jobs/{id}                cancels a job and deletes its upload and results
    POST   /v1/predict                  a short file, answered at once (the CLI's JSON)
    WS     /v1/live                     microphone sound and camera frames in, segments out
    GET    /healthz                     liveness and the queue's state
    GET    /, /jobs/{id}, /live         the upload page, a file's result page, the live page

Why this shape: a media analyst drops files and watches the timeline fill in while a long
video is analysed, an engineer posts files from a script; both reach the same job queue,
whose workers each load the model once, each in a process of its own that the server supervises
(`workers.py`): a file that crashes a decoder natively fails its job, not the server. Uploads are parsed as they stream in, so an upload
over the size limit is refused before it is stored; they are kept under a private temporary
folder with random names (nothing the client sends becomes a path) and deleted with their
job or after a time to live. Off the loopback interface every request needs the token.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import ipaddress
import json
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from sse_starlette.sse import EventSourceResponse

from ..errors import AvemoError
from .workers import Stopped, Task, Worker, WorkerDied

log = logging.getLogger("avemo")

STATIC = Path(str(resources.files("avemo.web") / "static"))
#: File name endings kept on uploads (FFmpeg reads most formats from their bytes, still images by name).
KEPT_SUFFIXES = frozenset({"mp4", "mov", "mkv", "webm", "avi", "m4v", "mpg", "mpeg", "flv", "wav", "flac", "mp3", "m4a",
                           "ogg", "opus", "aac", "jpg", "jpeg", "png", "bmp", "webp"})


#: The shortest token `avemo serve` takes: shorter ones can be guessed by trying.
MIN_TOKEN_CHARS = 16


@dataclass
class ServeSettings:
    """The server's limits; `avemo serve` flags."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # job workers, each with its own model
    queue: int = 8  # jobs waiting beyond those running; more are answered 429
    max_upload_mb: float = 512.0
    max_duration_s: float = 4 * 3600.0
    sync_max_s: float = 60.0  # the longest media POST /v1/predict answers at once
    ttl_s: float = 3600.0  # finished jobs (and their uploads) are deleted this long after they end
    token: str | None = None
    model: str | None = None  # model folder; None: the shipped one


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (then no token is needed)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- jobs

@dataclass
class Job:
    """One uploaded file's analysis."""

    id: str
    name: str  # the client's file name, shown on the page, never used as a path
    path: Path
    kind: str  # "video", "audio" or "image"
    duration: float
    every: float | None = None
    modalities: tuple[str, ...] = ("audio", "face")
    people: bool | None = None  # people told apart (`predict(people=...)`: None where the model can)
    status: str = "queued"  # queued, running, done, failed, cancelled
    progress: float = 0.0  # seconds of the media analysed so far
    error: str | None = None
    results: list = field(default_factory=list)
    ended: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)  # set once it has ended, however

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "status": self.status, "duration": self.duration,
                "progress": round(self.progress, 3), "fraction": round(min(1.0, self.progress / self.duration), 4)
                if self.duration else (1.0 if self.status == "done" else 0.0),
                "segments": len(self.results), "error": self.error, "every": self.every, "modalities": list(self.modalities),
                "people": self.people}


class JobBoard:
    """The jobs, their bounded queue and the workers that run them."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.folder = Path(tempfile.mkdtemp(prefix="avemo-serve-"))  # 0700: this user's alone
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.todo: queue.Queue[str | None] = queue.Queue(maxsize=settings.queue)
        self.stopping = threading.Event()
        self.workers: list[Worker] = []  # the analysis processes, each with its model
        self.threads = [threading.Thread(target=self._work, name=f"avemo-worker-{i}", daemon=True)
                        for i in range(settings.workers)]
        self.threads.append(threading.Thread(target=self._sweep, name="avemo-ttl", daemon=True))
        for thread in self.threads:
            thread.start()

    def new_path(self, suffix: str) -> Path:
        """A fresh random name in the private folder; `suffix` only if it is a known media ending."""
        suffix = suffix.lower() if suffix.lower() in KEPT_SUFFIXES else "bin"
        return self.folder / f"{secrets.token_hex(16)}.{suffix}"

    def submit(self, job: Job) -> None:
        """Queue `job`; QueueFull when the queue is."""
        with self.lock:
            self.jobs[job.id] = job
        try:
            self.todo.put_nowait(job.id)
        except queue.Full:
            self.remove(job.id)
            raise QueueFull() from None

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def remove(self, job_id: str) -> bool:
        """Cancel a job (a running one stops at its next step) and delete its upload and results."""
        with self.lock:
            job = self.jobs.pop(job_id, None)
        if job is None:
            return False
        job.cancel.set()
        if job.status == "queued":
            job.status = "cancelled"
        job.path.unlink(missing_ok=True)
        return True

    def waiting(self) -> int:
        return self.todo.qsize()

    @property
    def ready(self) -> int:
        """Analysis processes with their model loaded."""
        return sum(w.ready and w.alive for w in list(self.workers))

    def _work(self) -> None:
        """One worker slot: its analysis process, kept alive, and the jobs it takes from the queue."""
        worker = Worker(self.settings.model, threads=max(1, (os.cpu_count() or 1) // self.settings.workers))
        self.workers.append(worker)
        try:
            while self._ready(worker):
                job_id = self.todo.get()
                if job_id is None:
                    return
                job = self.get(job_id)
                if job is None or job.cancel.is_set():
                    continue
                if not self._ready(worker):  # it ended while idle (killed, out of memory)
                    return
                self.run(worker, job)
        finally:
            worker.stop()

    def _ready(self, worker: Worker) -> bool:
        """`worker` alive with its model loaded (a fresh process if the last one ended, after a crash or a
        cancel); False once the server is stopping."""
        while not self.stopping.is_set():
            if not worker.alive:
                worker.start()
            try:
                return worker.wait_ready(self.stopping.is_set)
            except WorkerDied as exc:
                log.error("an analysis process did not start (%s)", exc)
                self.stopping.wait(5)
        return False

    def run(self, worker: Worker, job: Job) -> None:
        """Analyse `job`'s file in `worker`'s process, keeping each segment as it comes."""
        job.status = "running"
        task = Task(str(job.path), job.every, job.modalities, self.settings.max_duration_s, job.name, job.people)

        def attempt() -> None:
            worker.run(task, lambda seconds: setattr(job, "progress", seconds), job.results.append, job.cancel.is_set)

        try:
            try:
                attempt()
            except WorkerDied as exc:  # gone before it took the file (it died while idle): a fresh one tries
                if exc.started or not self._ready(worker):
                    raise
                attempt()
            job.progress, job.status = job.duration, "done"
        except Stopped:
            job.status = "cancelled"
        except AvemoError as exc:
            job.status, job.error = "failed", _named(str(exc), job)
        except WorkerDied as exc:
            log.error("job %s: the analysis process ended (%s); a fresh one takes its place", job.id, exc)
            job.status, job.error = "failed", (f"{job.name}: the analysis stopped: its process ended ({exc}) while "
                                               "reading this file (a decoder crash, or out of memory); the server goes on")
        except RuntimeError as exc:  # a bug in the worker: the job fails, the server stays up
            job.status, job.error = "failed", _named(str(exc), job)
        finally:
            job.ended = time.time()
            job.finished.set()

    def _sweep(self) -> None:
        while not self.stopping.wait(min(60.0, max(1.0, self.settings.ttl_s / 4))):
            now = time.time()
            with self.lock:
                old = [j.id for j in self.jobs.values() if j.ended and now - j.ended > self.settings.ttl_s]
            for job_id in old:
                self.remove(job_id)

    def shutdown(self) -> None:
        """Cancel what waits and what runs, let the workers end, delete every upload."""
        self.stopping.set()
        with self.lock:
            ids = list(self.jobs)
        for job_id in ids:
            job = self.get(job_id)
            if job is not None:
                job.cancel.set()
                if job.status == "queued":
                    job.status = "cancelled"
        for _ in range(self.settings.workers):
            try:
                self.todo.put_nowait(None)
            except queue.Full:
                while True:  # drop what waits, then tell the workers to end
                    try:
                        self.todo.get_nowait()
                    except queue.Empty:
                        break
                self.todo.put_nowait(None)
        for thread in self.threads:
            thread.join(timeout=30)
        for worker in self.workers:
            worker.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class QueueFull(Exception):
    """The job queue is full (answered 429)."""


def _named(message: str, job: Job) -> str:
    """avemo's message with the private upload path replaced by the client's file name."""
    return message.replace(str(job.path), job.name)


# ---------------------------------------------------------------- uploads

class TooLarge(Exception):
    """An upload past the size limit (answered 413)."""


async def receive_upload(request: Request, board: JobBoard, limit: int) -> tuple[Path | None, str, dict[str, str]]:
    """Parse a multipart upload as it streams in: the file part goes to a fresh private path,
    the other parts are fields. TooLarge as soon as more than `limit` bytes have come."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise AvemoError("send the file as multipart/form-data (a 'file' field)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise TooLarge()
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "name": None, "filename": None,
                             "out": None, "buf": bytearray(), "path": None, "client": "upload"}
    fields: dict[str, str] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get("content-disposition", b""))
        state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        if filename is not None and state["name"] == "file" and state["path"] is None:
            client = os.path.basename(filename.decode("utf-8", "replace").replace("\\", "/"))[:200] or "upload"
            state["client"] = client
            state["path"] = board.new_path(client.rpartition(".")[2] if "." in client else "")
            state["out"] = open(state["path"], "wb")
        state["buf"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["out"] is not None:
            state["out"].write(data[start:end])
        elif len(state["buf"]) < 4096:
            state["buf"] += data[start:end]

    def on_part_end() -> None:
        if state["out"] is not None:
            state["out"].close()
            state["out"] = None
        elif state["name"]:
            fields[state["name"]] = state["buf"].decode("utf-8", "replace")
        state["headers"], state["name"] = {}, None

    parser = MultipartParser(params[b"boundary"], {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end})
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + 64 * 1024:  # the form's own bytes come on top of the file's
                raise TooLarge()
            parser.write(chunk)
        parser.finalize()
    except BaseException:
        if state["out"] is not None:
            state["out"].close()
        if state["path"] is not None:
            Path(state["path"]).unlink(missing_ok=True)
        raise
    if state["path"] is not None and Path(state["path"]).stat().st_size > limit:
        Path(state["path"]).unlink(missing_ok=True)
        raise TooLarge()
    return state["path"], state["client"], fields


def job_options(fields: dict[str, str]) -> tuple[float | None, tuple[str, ...], bool | None]:
    """`every`, `modalities` and `people` from a form, checked as the CLI checks them."""
    every = None
    if fields.get("every", "").strip():
        try:
            every = float(fields["every"])
        except ValueError:
            raise AvemoError(f"every must be a number of seconds, not {fields['every']!r}") from None
        if not np.isfinite(every) or every <= 0:
            raise AvemoError("every must be a positive number of seconds")
    raw = fields.get("modalities", "").strip() or "audio,face"
    modalities = tuple(m.strip() for m in raw.split(",") if m.strip())
    if not modalities or set(modalities) - {"audio", "face"}:
        raise AvemoError(f"modalities must be audio and/or face, not {raw!r}")
    people = fields.get("people", "").strip().lower()
    if people not in ("on", "off", ""):
        raise AvemoError(f"people is on or off, not {fields['people']!r}")
    return every, modalities, {"on": True, "off": False, "": None}[people]


def _kind(info) -> str:
    return "image" if info.is_image else "video" if info.has_video else "audio"


# ---------------------------------------------------------------- the app

def create_app(settings: ServeSettings):
    """The ASGI app: the API, the pages, and the job board behind them."""
    from ..media import probe
    from ..writers import WRITERS

    board: JobBoard | None = None
    limit = int(settings.max_upload_mb * 1024 * 1024)

    @asynccontextmanager
    async def lifespan(app):
        nonlocal board
        board = JobBoard(settings)
        app.state.board = board
        yield
        await asyncio.to_thread(board.shutdown)

    app = FastAPI(title="avemo", version=_version(), lifespan=lifespan,
                  description="Emotion and sentiment of people in video, from voice and face: the HTTP API of `avemo serve`.")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if settings.token and not _authorised(request.headers, request.query_params, request.cookies, settings.token):
            return error(401, "this server needs its token: an 'Authorization: Bearer TOKEN' header or ?token=TOKEN")
        response = await call_next(request)
        if settings.token and request.query_params.get("token"):  # a page opened with ?token= keeps it as a cookie
            response.set_cookie("avemo_token", request.query_params["token"], httponly=True, samesite="strict")
        return response

    async def stored_upload(request: Request) -> tuple[Job | None, JSONResponse | None]:
        """The upload as a new job (probed, not queued), or the 4xx answer that refuses it."""
        try:
            path, name, fields = await receive_upload(request, board, limit)
        except TooLarge:
            return None, error(413, f"upload larger than this server's limit of {settings.max_upload_mb:g} MB")
        except AvemoError as exc:
            return None, error(400, str(exc))
        if path is None:
            return None, error(400, "no file in the upload (a multipart 'file' field)")
        job_id = secrets.token_urlsafe(12)
        try:
            every, modalities, people = job_options(fields)
            info = probe(path)
            if info.duration > settings.max_duration_s:
                raise AvemoError(f"{path}: {info.duration:.0f} s long, over this server's limit of "
                                 f"{settings.max_duration_s:g} s")
        except AvemoError as exc:
            path.unlink(missing_ok=True)
            return None, error(415 if "not a readable media file" in str(exc) or "damaged" in str(exc) else 422,
                               str(exc).replace(str(path), name))
        return Job(job_id, name, path, _kind(info), info.duration, every, modalities, people), None

    @app.post("/v1/jobs", status_code=201, summary="Upload a file to analyse (multipart: file, every, modalities, people)")
    async def post_job(request: Request):
        if board.waiting() >= settings.queue:  # refuse before reading the upload
            return error(429, "the job queue is full; try again later")
        job, refused = await stored_upload(request)
        if refused:
            return refused
        try:
            board.submit(job)
        except QueueFull:
            return error(429, "the job queue is full; try again later")
        return JSONResponse({"id": job.id, **job.public()}, status_code=201)

    @app.get("/v1/jobs/{job_id}", summary="A job's status, progress and error")
    def get_job(job_id: str):
        job = board.get(job_id)
        return job.public() if job else error(404, "no such job")

    @app.get("/v1/jobs/{job_id}/segments", summary="A job's segments so far, as json, csv or srt")
    def get_segments(job_id: str, format: str = "json"):
        job = board.get(job_id)
        if job is None:
            return error(404, "no such job")
        if format not in ("json", "csv", "srt"):
            return error(400, "format is json, csv or srt")
        if job.status == "failed":
            return error(422, job.error or "the job failed")
        out = io.StringIO()
        WRITERS[format]({job.name: list(job.results)}, out)
        media = {"json": "application/json", "csv": "text/csv", "srt": "application/x-subrip"}[format]
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", job.name.rpartition(".")[0] or job.name)
        return Response(out.getvalue(), media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{stem}.{format}"'})

    @app.get("/v1/jobs/{job_id}/events", summary="Server-Sent Events: segments as they come, progress, the end")
    async def job_events(job_id: str, request: Request):
        job = board.get(job_id)
        if job is None:
            return error(404, "no such job")

        async def events():
            sent, last = 0, None
            while True:
                while sent < len(job.results):
                    yield {"event": "segment", "data": json.dumps(job.results[sent].to_dict(), allow_nan=False)}
                    sent += 1
                state = job.public()
                if state != last:
                    yield {"event": "progress", "data": json.dumps(state)}
                    last = state
                if job.status in ("done", "failed", "cancelled") and sent == len(job.results):
                    yield {"event": "end", "data": json.dumps(state)}
                    return
                if await request.is_disconnected() or board.get(job_id) is None and job.status != "cancelled":
                    return
                await asyncio.sleep(0.2)

        return EventSourceResponse(events())

    @app.get("/v1/jobs/{job_id}/media", summary="The uploaded file, for the page's player")
    def job_media(job_id: str):
        job = board.get(job_id)
        if job is None or not job.path.exists():
            return error(404, "no such job")
        return FileResponse(job.path, filename=job.name)

    @app.delete("/v1/jobs/{job_id}", summary="Cancel a job and delete its upload and results")
    def delete_job(job_id: str):
        return {"deleted": job_id} if board.remove(job_id) else error(404, "no such job")

    @app.post("/v1/predict", summary=f"A short file (<= {settings.sync_max_s:g} s), answered at once")
    async def predict_now(request: Request):
        if board.waiting() >= settings.queue:  # the same queue as the jobs: refused before the upload is read
            return error(429, "the job queue is full; try again later")
        job, refused = await stored_upload(request)
        if refused:
            return refused
        try:
            if job.duration > settings.sync_max_s:
                return error(413, f"{job.name}: {job.duration:.0f} s is too long to answer at once "
                                  f"(at most {settings.sync_max_s:g} s): POST it to /v1/jobs")
            try:
                board.submit(job)
            except QueueFull:
                return error(429, "the job queue is full; try again later")
            await asyncio.to_thread(job.finished.wait)
            if job.status != "done":
                return error(422, job.error or job.status)
            out = io.StringIO()
            WRITERS["json"]({job.name: job.results}, out)
            return Response(out.getvalue(), media_type="application/json")
        finally:
            if not board.remove(job.id):  # never queued (too long): its upload alone to delete
                job.path.unlink(missing_ok=True)

    @app.get("/healthz", summary="Liveness, and the queue's state")
    def healthz():
        with board.lock:
            running = sum(j.status == "running" for j in board.jobs.values())
        return {"ok": True, "version": _version(), "workers": settings.workers, "ready": board.ready,
                "running": running, "waiting": board.waiting(), "queue": settings.queue}

    @app.websocket("/v1/live")
    async def live(socket: WebSocket):
        if settings.token and not _authorised(socket.headers, socket.query_params, socket.cookies, settings.token):
            await socket.close(code=4401)
            return
        await socket.accept()
        await LiveSession(socket, settings).run()

    def page(name: str) -> HTMLResponse:
        return HTMLResponse(render_page(name))

    @app.get("/", include_in_schema=False)
    def index():
        return page("index.html")

    @app.get("/jobs/{job_id}", include_in_schema=False)
    def result_page(job_id: str):
        return page("result.html")

    @app.get("/live", include_in_schema=False)
    def live_page():
        return page("live.html")

    @app.exception_handler(404)
    async def not_found(request, exc):
        return PlainTextResponse("not found", status_code=404)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def render_page(name: str) -> str:
    """A page of `static/`: its <main> and script, inside the shell all pages share (`page.html`)."""
    text = (STATIC / name).read_text(encoding="utf-8")
    title = re.search(r"<!-- title: (.*?) -->", text).group(1)
    main = text[text.index("<main>") + len("<main>\n"):text.index("</main>")].rstrip("\n")
    script = text[text.index("</main>") + len("</main>\n"):].rstrip("\n")
    shell = (STATIC / "page.html").read_text(encoding="utf-8")
    return shell.replace("{{title}}", title).replace("{{main}}", main).replace("{{script}}", script)


def _authorised(headers, query, cookies, token: str) -> bool:
    given = headers.get("authorization", "")
    given = given[7:] if given.lower().startswith("bearer ") else query.get("token") or cookies.get("avemo_token") or ""
    return hmac.compare_digest(given.encode(), token.encode())


def _version() -> str:
    from .. import __version__

    return __version__


# ---------------------------------------------------------------- live

#: First byte of a live message: what follows.
LIVE_SOUND, LIVE_FRAME = 1, 2


class LiveSession:
    """One browser's camera and microphone: sound (16 kHz mono float32) and JPEG frames stamped on
    the sound's clock come in over the WebSocket; `Model.live` runs on a thread of its own, and
    each segment goes back as soon as it settles."""

    def __init__(self, socket: WebSocket, settings: ServeSettings) -> None:
        self.socket = socket
        self.settings = settings
        self.sound: queue.Queue = queue.Queue()
        self.frames: queue.Queue = queue.Queue()
        self.width = 0

    def _sound(self):
        while (block := self.sound.get()) is not None:
            yield block

    def _frames(self):
        import cv2

        while (item := self.frames.get()) is not None:
            t, jpeg = item
            grey = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
            if grey is not None:
                self.width = grey.shape[1]
                yield t, grey

    async def run(self) -> None:
        """Until the page says stop (the last segments are then judged and sent, then "done") or leaves."""
        from ..predict import load_model

        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue = asyncio.Queue()
        start = await self.socket.receive_json()  # {"type": "start", "video": bool, "audio": bool, "people": bool}
        modalities = [m for m, on in (("audio", start.get("audio", True)), ("face", start.get("video", True))) if on]
        if not modalities:
            await self.socket.send_json({"type": "error", "error": "neither a microphone nor a camera to analyse"})
            return
        model = await asyncio.to_thread(load_model, self.settings.model)

        def judge() -> None:
            try:
                frames = self._frames() if "face" in modalities else None
                for result in model.live(self._sound() if "audio" in modalities else iter(()), frames,
                                         modalities=modalities, width=0, people=start.get("people") is True):
                    message = {"type": "segment", **result.to_dict(), "width": self.width}
                    loop.call_soon_threadsafe(outbox.put_nowait, message)
                loop.call_soon_threadsafe(outbox.put_nowait, {"type": "done"})
            except AvemoError as exc:
                loop.call_soon_threadsafe(outbox.put_nowait, {"type": "error", "error": str(exc).removeprefix("live: ")})
            except Exception as exc:  # a bug: said to the page, the server stays up
                log.exception("live session failed")
                loop.call_soon_threadsafe(outbox.put_nowait, {"type": "error", "error": f"internal error: {exc}"})

        threading.Thread(target=judge, name="avemo-live", daemon=True).start()
        await self.socket.send_json({"type": "ready"})

        async def send() -> None:
            while True:
                message = await outbox.get()
                await self.socket.send_text(json.dumps(message, allow_nan=False))
                if message["type"] in ("done", "error"):
                    return

        async def receive() -> None:
            while True:
                message = await self.socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data and data[0] == LIVE_SOUND and len(data) > 1:
                    block = np.frombuffer(data[1:len(data) - (len(data) - 1) % 4], "<f4").astype(np.float32)
                    self.sound.put(np.nan_to_num(np.clip(block, -1, 1)))
                elif data and data[0] == LIVE_FRAME and len(data) > 9:
                    (t,) = np.frombuffer(data[1:9], "<f8")
                    self.frames.put((float(t), data[9:]))
                elif message.get("text") == "stop":
                    self._end()

        sender, receiver = asyncio.create_task(send()), asyncio.create_task(receive())
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            self._end()  # the page left, or the run ended: either way no more input
            if not sender.done():
                await asyncio.wait_for(sender, timeout=30)
        except Exception:  # the page went away while we were sending
            pass
        finally:
            self._end()
            receiver.cancel()
            sender.cancel()

    def _end(self) -> None:
        self.sound.put(None)
        self.frames.put(None)


def serve(settings: ServeSettings) -> None:
    """Run the server until interrupted (Ctrl-C, SIGTERM): jobs are cancelled and uploads deleted on the way out."""
    import uvicorn

    if not is_loopback(settings.host) and not settings.token:
        raise AvemoError(f"--host {settings.host} is reachable from other machines: give --token (or set AVEMO_TOKEN)")
    if settings.token is not None and len(settings.token) < MIN_TOKEN_CHARS:
        raise AvemoError(f"--token is {len(settings.token)} characters: give at least {MIN_TOKEN_CHARS}, too many to guess "
                         "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
    if settings.workers < 1 or settings.queue < 1:
        raise AvemoError("--workers and --queue must be at least 1")
    app = create_app(settings)
    print(f"avemo: serving on http://{settings.host}:{settings.port} (Ctrl-C to stop)", flush=True)
    # uvicorn stops gracefully on SIGTERM, then raises the signal again for the handler it found:
    # this one lets the process end with status 0, as a stop that was asked for
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=10)
