"""Speaker-independent splits: no speaker in two of train, validation and test.

Why its own stage: what a model is scored on must be chosen before it is trained, and the
same way by training, evaluation and the benchmarks; datasets → splits → train → evaluate.
"""

from __future__ import annotations

import random

from .datasets import Item


def split_items(items: list[Item], seed: int = 0, val_speakers: float = 0.1, test_speakers: float = 0.2
                ) -> dict[str, list[Item]]:
    """train / val / test with no speaker in two of them.

    Corpora with their own split keep it (their val also serves as test where they
    have no test). Corpora with 5+ speakers hold out whole speakers; corpora with
    fewer speakers (TESS has 2) train only. Each corpus draws from its own generator
    (seeded by the seed and its name), so the speakers it holds out do not depend on
    the corpora given beside it; a model still records them (config.json `held_out`).
    """
    out: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    by_corpus: dict[str, list[Item]] = {}
    for item in items:
        by_corpus.setdefault(item.corpus, []).append(item)
    for corpus, group in sorted(by_corpus.items()):
        rng = random.Random(f"{seed}:{corpus}")
        if any(i.split for i in group):
            own = {sp: [i for i in group if i.split == sp] for sp in ("train", "val", "test")}
            test = own["test"] or own["val"]
            train = own["train"]
            val = own["val"] if own["test"] else []
            if not val:  # carve validation from training files (no speakers known to keep apart)
                train = train[:]
                rng.shuffle(train)
                cut = max(1, int(len(train) * val_speakers))
                val, train = train[:cut], train[cut:]
            out["train"] += train
            out["val"] += val
            out["test"] += test
            continue
        speakers = sorted({i.speaker for i in group if i.speaker})
        if len(speakers) < 5:
            out["train"] += group
            continue
        rng.shuffle(speakers)
        n_test = max(1, round(len(speakers) * test_speakers))
        n_val = max(1, round(len(speakers) * val_speakers))
        test, val = set(speakers[:n_test]), set(speakers[n_test:n_test + n_val])
        for item in group:
            out["test" if item.speaker in test else "val" if item.speaker in val else "train"].append(item)
    return out


def held_out_name(item: Item) -> str:
    """How a model's card names the group an item was held out with: `corpus:speaker`,
    or `corpus:split` where speakers are unknown (FER2013's `fer2013:val`)."""
    return f"{item.corpus}:{item.speaker or item.split or '?'}"
