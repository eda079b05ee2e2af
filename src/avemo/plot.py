"""`avemo plot`: a results CSV's timeline as a PNG, the same picture as the web page's.

Seven emotion probabilities stacked over time (each segment a step, gaps left empty), and
under them a strip of the sentiment with its probability as the strength of the colour: for
reports, and for readers without a browser.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import AvemoError
from .files import written_whole
from .labels import EMOTIONS, SENTIMENTS

#: Colours of the emotions and sentiments (the web page uses the same).
EMOTION_COLOURS = {"neutral": "#9e9e9e", "joy": "#f4b400", "sadness": "#4285f4", "anger": "#db4437",
                   "surprise": "#ab47bc", "fear": "#00897b", "disgust": "#6d4c41"}
SENTIMENT_COLOURS = {"positive": "#0f9d58", "neutral": "#bdbdbd", "negative": "#c62828"}


def read_results(path: Path, file: str | None = None) -> tuple[str, list[dict]]:
    """One file's rows of an avemo results CSV (the first file's, unless `file` names one)."""
    if not path.is_file():
        raise AvemoError(f"{path}: no such results file")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    needed = {"file", "start", "end", "sentiment", *(f"emotion_{e}" for e in EMOTIONS)}
    if not rows or not needed <= set(rows[0]):
        raise AvemoError(f"{path}: not a results CSV written by avemo predict (it needs {', '.join(sorted(needed))})")
    chosen = file if file is not None else rows[0]["file"]
    mine = [r for r in rows if r["file"] == chosen]
    if not mine:
        raise AvemoError(f"{path}: no rows for {chosen}")
    return chosen, sorted(mine, key=lambda r: float(r["start"]))


def plot_timeline(results: Path, out: Path, file: str | None = None) -> Path:
    """Draw the timeline of one file's results (see the module's docstring) to the PNG `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    name, rows = read_results(Path(results), file)
    fig, (top, strip) = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True, gridspec_kw={"height_ratios": [5, 1]})
    for r in rows:
        a, b = float(r["start"]), float(r["end"])
        b = b if b > a else a + 1.0  # a photo: one second wide
        bottom = 0.0
        for emotion in EMOTIONS:
            p = float(r[f"emotion_{emotion}"])
            top.fill_between([a, b], bottom, bottom + p, color=EMOTION_COLOURS[emotion], linewidth=0, step="post")
            bottom += p
        sentiment = r["sentiment"]
        strength = float(r.get(f"sentiment_{sentiment}") or 1.0)
        strip.axvspan(a, b, color=SENTIMENT_COLOURS.get(sentiment, "#bdbdbd"), alpha=0.35 + 0.65 * strength, linewidth=0)
    top.set_ylim(0, 1)
    top.set_ylabel("emotion probability")
    top.set_title(Path(name).name, loc="left", fontsize=10)
    top.legend(handles=[Patch(color=EMOTION_COLOURS[e], label=e) for e in EMOTIONS], ncol=7, fontsize=8,
               loc="upper center", bbox_to_anchor=(0.5, -0.02), frameon=False)
    strip.set_yticks([])
    strip.set_ylabel("sentiment", rotation=0, ha="right", va="center")
    strip.set_xlabel("time (s)")
    strip.legend(handles=[Patch(color=SENTIMENT_COLOURS[s], label=s) for s in SENTIMENTS], ncol=3, fontsize=8,
                 loc="upper right", bbox_to_anchor=(1.0, -0.6), frameon=False)
    fig.tight_layout()
    with written_whole(Path(out)) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(out)
