"""Analysis in child processes that the server supervises: a file that crashes a decoder
natively (a segmentation fault, running out of memory) fails its own job, not the server.

Why processes and not threads: a native crash takes its whole process with it. Each worker
is a child process (started with "spawn": a fresh interpreter, safe beside the server's
threads) that loads the model once and runs one job at a time; its results come back over a
pipe as they settle. If it dies mid-job, the job fails with what happened and a fresh worker
takes its place; cancelling a running job stops its worker the same way, and a fresh one starts.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from ..errors import AvemoError

log = logging.getLogger("avemo")

#: How often the supervisor looks at its worker while waiting for its next message (seconds).
POLL_S = 0.2


class WorkerDied(Exception):
    """The worker process ended (a native crash, killed, out of memory); `started`: after it had
    taken the task (else it was already gone when the task came, and the task may go to a fresh one)."""

    def __init__(self, how: str, started: bool = True) -> None:
        super().__init__(how)
        self.started = started


class Stopped(Exception):
    """The job was cancelled: its worker was stopped."""


@dataclass(frozen=True)
class Task:
    """One file to analyse, as the worker needs it (all picklable)."""

    path: str
    every: float | None
    modalities: tuple[str, ...]
    max_duration_s: float
    name: str  # the client's name for the file, for the duration message
    people: bool | None = None


class Worker:
    """A supervised analysis process with the model loaded; `run` gives it one task at a time."""

    def __init__(self, model_dir: str | None, threads: int) -> None:
        self.model_dir, self.threads = model_dir, threads
        self.start()

    def start(self) -> None:
        """A fresh process (it says when its model is loaded: `wait_ready`)."""
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs, self.model_dir, self.threads),
                                       name="avemo-analysis", daemon=True)
        self.process.start()
        theirs.close()
        self.ready = False

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def wait_ready(self, stop: Callable[[], bool]) -> bool:
        """Until the model is loaded (True), or `stop()` says so (False); WorkerDied if the process ends first."""
        while not self.ready:
            if stop():
                return False
            if self.conn.poll(POLL_S):
                self.ready = self._receive()[0] == "ready"
            elif not self.process.is_alive():
                raise WorkerDied(_how_it_ended(self.process))
        return True

    def run(self, task: Task, on_progress: Callable[[float], None], on_segment: Callable[[object], None],
            cancelled: Callable[[], bool]) -> None:
        """Analyse `task`, handing on progress and each result as it comes. AvemoError for the
        user's file; Stopped when `cancelled()` turned true and WorkerDied when the process
        ended (either way the process is gone: `start` a fresh one); RuntimeError for a bug."""
        started = False
        try:
            self.conn.send(task)
        except OSError:
            raise WorkerDied(_how_it_ended(self.process), started=False) from None
        while True:
            if cancelled():
                self.stop()
                raise Stopped()
            if not self.conn.poll(POLL_S):
                if not self.process.is_alive() and not self.conn.poll(0):
                    raise WorkerDied(_how_it_ended(self.process), started)
                continue
            try:
                kind, value = self._receive()
            except WorkerDied as exc:
                exc.started = started
                raise
            if kind == "started":
                started = True
            elif kind == "progress":
                on_progress(value)
            elif kind == "segment":
                on_segment(value)
            elif kind == "done":
                return
            elif kind == "error":
                raise AvemoError(value)
            else:  # "bug"
                raise RuntimeError(value)

    def _receive(self) -> tuple:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise WorkerDied(_how_it_ended(self.process)) from None

    def stop(self) -> None:
        """End the process, whatever it is doing."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()


def _how_it_ended(process: multiprocessing.process.BaseProcess) -> str:
    process.join(timeout=5)
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}" if code is not None else "no exit status"


def _serve(conn: Connection, model_dir: str | None, threads: int) -> None:
    """The worker's side: load the model, say so, then analyse each task sent until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle: it stops the workers
    from ..predict import load_model

    model = load_model(model_dir, threads=threads)
    conn.send(("ready", None))
    while True:
        try:
            task: Task = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_analyse(model, task, conn))


def _analyse(model, task: Task, conn: Connection) -> tuple:
    """Run one task, each result sent as it comes; the message that ends it."""
    conn.send(("started", None))

    def progress(seconds: float, duration: float) -> None:
        if seconds > task.max_duration_s:
            raise AvemoError(f"{task.name}: longer than this server's limit of {task.max_duration_s:g} s")
        conn.send(("progress", seconds))

    try:
        for result in model.stream(Path(task.path), every=task.every, modalities=task.modalities, progress=progress,
                                   people=task.people):
            conn.send(("segment", result))
    except AvemoError as exc:
        return ("error", str(exc))
    except Exception as exc:  # a bug: said to the supervisor, the worker goes on
        log.exception("analysis of %s failed", task.name)
        return ("bug", f"internal error: {type(exc).__name__}: {exc}")
    return ("done", None)
