"""Training batches on real voices and faces: augmentation keeps what a sample is, mixup
blends two faces and both labels, the draws balance classes and corpora as documented."""

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the [train] extra

from avemo.audio import log_mel
from avemo.media import load_audio
from avemo.training.batches import augment_mel, balanced_draw, face_batch, face_draw, mixed_faces
from avemo.training.datasets import Item

from ..conftest import DATA


def test_mixup_blends_each_face_with_another_and_keeps_both_labels():
    crops = torch.from_numpy(np.stack([np.full((1, 48, 48), v, np.uint8) for v in (0, 100, 200, 250)]))
    mixed, mix = mixed_faces({"crops": crops, "crop_mask": torch.ones(4, 1, dtype=torch.bool)}, 0.2, np.random.default_rng(3))
    assert sorted(mix.order.tolist()) == [0, 1, 2, 3] and 0.0 <= mix.share <= 1.0
    expected = mix.share * crops.float() + (1 - mix.share) * crops.float()[mix.order]
    assert torch.allclose(mixed["crops"], expected) and mixed["crop_mask"].all()


def test_augmented_voices_keep_their_bands_and_roughly_their_length():
    mel = log_mel(load_audio(DATA / "ravdess_speech" / "Actor_01" / "03-01-05-01-01-01-01.flac"))
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(20):
        out = augment_mel(mel, rng)
        assert out.shape[1] == mel.shape[1] and out.dtype == np.float32
        lengths.append(len(out))
    assert min(lengths) >= len(mel) / 1.16 and max(lengths) <= len(mel) / 0.84 and len(set(lengths)) > 5
    assert not np.array_equal(augment_mel(mel, rng)[: len(mel)], mel[: len(augment_mel(mel, rng))])


def test_augmented_faces_still_look_like_the_face():
    crop = cv2.imread(str(next((DATA / "fer2013" / "val" / "happy").glob("*.jpg"))), cv2.IMREAD_GRAYSCALE)
    rng = np.random.default_rng(0)
    batch = face_batch(np.stack([crop] * 32), rng)[:, 0].numpy()
    assert batch.dtype == np.uint8 and batch.shape == (32, 48, 48)
    assert len({b.tobytes() for b in batch}) == 32  # every copy differs
    # against the crop or its mirror, each copy stays recognisably the same face
    same = [max(np.corrcoef(b.ravel(), c.ravel())[0, 1] for c in (crop, crop[:, ::-1])) for b in batch]
    assert np.median(same) > 0.6
    # and evaluation inputs are left exactly as they are
    assert np.array_equal(face_batch(crop[None], None)[0, 0].numpy(), crop)


def test_balanced_draw_gives_each_class_then_corpus_an_equal_share():
    big = [Item(Path(f"a{i}.wav"), 0 if i < 900 else 1, 1, "s", None, "big") for i in range(1000)]
    small = [Item(Path(f"b{i}.wav"), 2, 1, "s", None, "small") for i in range(10)]
    drawn = balanced_draw(big + small, 30000, np.random.default_rng(0))
    classes = np.bincount([(big + small)[i].emotion for i in drawn], minlength=3) / len(drawn)
    assert classes == pytest.approx([1 / 3] * 3, abs=0.02)


def test_face_corpora_are_drawn_by_the_square_root_of_their_sizes():
    """FER2013-sized and JAFFE-sized corpora: the small one is seen, and not a hundred times over."""
    big = [Item(Path(f"fer{i}.jpg"), i % 7, 1, None, "train", "fer2013") for i in range(25600)]
    small = [Item(Path(f"jaffe{i}.jpg"), i % 7, 1, "KA", None, "jaffe") for i in range(100)]
    drawn = face_draw(big + small, 20000, np.random.default_rng(0))
    share = np.mean(drawn >= len(big))
    assert share == pytest.approx(10 / (160 + 10), abs=0.01)  # sqrt(100) / (sqrt(25600) + sqrt(100))
    assert len(set(drawn[drawn >= len(big)].tolist())) == 100  # every small-corpus image comes up
