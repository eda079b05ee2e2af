"""Files written whole or not at all.

Why: a run that is interrupted (killed, out of disk, Ctrl-C) must never leave a
half-written output, cache, checkpoint or model where a finished one is expected; a
rerun then resumes from the last file that was written whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to, which replaces `path` once the block ends
    without error (and is removed otherwise). It keeps `path`'s suffix, which some writers
    (NumPy, FFmpeg) read the format from; the parent folder is created. A device or a pipe
    (/dev/stdout) is written as it is: renamed over, it would be replaced by a file."""
    path = Path(path)
    if path.exists() and not path.is_file():
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
