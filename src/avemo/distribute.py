"""Beyond one machine: the same per-file work spread over a Ray cluster.

    avemo predict --engine ray FOLDER_OR_MANIFEST --out results.parquet [--address ray://host:10001]

Each Ray worker is an actor that loads the model once and then analyses whole files,
one at a time, exactly as `Model.predict_file` does on one machine (one torch thread
per worker, so a node's cores go to files rather than to one file). A file that fails
becomes a row with its `error` and the others go on. The output is one Parquet table,
a row per segment, indexed like `Model.predict(..., as_frame=True)`: (file, start, end);
each file's rows are kept as they come, so an interrupted run resumes (`--resume`).

Without `--address` a local Ray instance is started with this machine's cores; on a
cluster started with `ray start --head` (and `ray start --address HEAD:6379` on the
other nodes), give `--address auto` on the head node. Ray is an optional dependency:
`pip install "avemo[ray]"`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pandas as pd

from .errors import AvemoError
from .files import written_whole

log = logging.getLogger("avemo")


class FileWorker:
    """One Ray worker: the model, loaded once, and the per-file job."""

    def __init__(self, model_dir: str | None, every: float | None, modalities: tuple[str, ...],
                 people: bool | None = None, speakers: int | None = None) -> None:
        from .predict import load_model

        self.model = load_model(model_dir, threads=1)
        self.every, self.modalities, self.people, self.speakers = every, modalities, people, speakers

    def run(self, index: int, path: str) -> tuple[int, list[dict]]:
        """The file's rows, or one row naming the error that stopped it; `index` is passed back."""
        from .predict import frame_rows

        try:
            results = self.model.predict_file(path, every=self.every, modalities=self.modalities, people=self.people,
                                              speakers=self.speakers)
        except AvemoError as exc:
            return index, [{"file": path, "error": str(exc)}]
        return index, [{**row, "error": None} for row in frame_rows(path, results)]


def part_path(out: Path, file: str | Path) -> Path:
    """Where a run writing `out` keeps one file's rows until the whole table is written."""
    return out.with_name(out.name + ".parts") / f"{hashlib.sha1(str(file).encode()).hexdigest()[:16]}.parquet"


def predict_ray(paths: list[Path], out: str | Path, model_dir: str | None = None, every: float | None = None,
                modalities: tuple[str, ...] = ("audio", "face"), address: str | None = None,
                workers: int | None = None, resume: bool = False, people: bool | None = None,
                speakers: int | None = None) -> pd.DataFrame:
    """Analyse `paths` on Ray workers; write and return the (file, start, end)-indexed table
    (`people`, `speakers`: as `Model.predict` takes them).

    Each file's rows are kept as they come, in a folder beside `out` (`NAME.parquet.parts/`),
    so that with `resume` an interrupted run goes on with the files it had not finished;
    the folder is removed once the whole table is written."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise AvemoError('--engine ray needs Ray: pip install "avemo[ray]"') from None
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise AvemoError(f"--engine ray writes Parquet: give --out NAME.parquet, not {out}")
    parts = out.with_name(out.name + ".parts")
    if not resume and parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    part_of = {str(p): part_path(out, p) for p in paths}
    jobs = [(i, str(p)) for i, p in enumerate(paths) if not part_of[str(p)].exists()]
    if resume and len(jobs) < len(paths):
        log.warning("resuming: %d of %d files already done in %s", len(paths) - len(jobs), len(paths), parts)
    if jobs:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        count = workers or max(1, int(ray.available_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1)(FileWorker)
        pool = ActorPool([actor.remote(model_dir, every, modalities, people, speakers) for _ in range(min(count, len(jobs)))])
        for done, (index, rows) in enumerate(pool.map_unordered(lambda a, job: a.run.remote(*job), jobs), 1):
            with written_whole(part_of[str(paths[index])]) as tmp:
                pd.DataFrame(rows).to_parquet(tmp)
            if rows[0]["error"]:
                log.error("%s", rows[0]["error"])
            log.info("%d/%d files", done, len(jobs))
    # in the order given, as the local engine
    frame = pd.concat([pd.read_parquet(part_of[str(p)]) for p in paths]).set_index(["file", "start", "end"])
    with written_whole(out) as tmp:
        frame.to_parquet(tmp)
    shutil.rmtree(parts)
    return frame
