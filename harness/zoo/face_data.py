"""A reproducible face / non-face test set for MTCNN's ONet from scikit-image's LFW subset.

Source: ``skimage.data.lfw_subset()`` (shipped in the scikit-image wheel as
``skimage/data/lfw_subset.npy``): 100 face crops and 100 background crops from
Labeled Faces in the Wild, 25x25 grayscale.

Each sample is a crop box drawn on one source image (edge-padded where the box
leaves it), resized to 48x48 (bilinear), with a random contrast/brightness
change and Gaussian sensor noise, rounded to 8-bit pixels, replicated to RGB and
normalised as facenet-pytorch does, ``(pixel - 127.5) * 0.0078125``.

Labels follow MTCNN's training convention, with the source crop as the face box:
* 1 (face): a face image, crop IoU >= 0.65 with the face box;
* 0 (non-face): a background image (any crop), or a face image cropped to
  IoU < 0.3 (a part of a face: MTCNN's negatives).
"""
from __future__ import annotations

import numpy as np

SIZE = 48
SRC = 25


def load_lfw_subset() -> tuple[np.ndarray, np.ndarray]:
    """(200, 25, 25) float64 in [0, 1] and labels (100 faces, then 100 non-faces)."""
    import skimage.data

    x = skimage.data.lfw_subset()
    return x, np.r_[np.ones(100, dtype=np.int64), np.zeros(100, dtype=np.int64)]


def iou(box, ref=(0.0, 0.0, SRC, SRC)) -> float:
    x0, y0, x1, y1 = box
    ix = max(0.0, min(x1, ref[2]) - max(x0, ref[0]))
    iy = max(0.0, min(y1, ref[3]) - max(y0, ref[1]))
    inter = ix * iy
    return inter / ((x1 - x0) * (y1 - y0) + (ref[2] - ref[0]) * (ref[3] - ref[1]) - inter)


def crop_resize(img: np.ndarray, box) -> np.ndarray:
    """Bilinear resample of ``box`` (x0, y0, x1, y1 in pixel-edge coordinates) to SIZE x SIZE, edge padded."""
    x0, y0, x1, y1 = box
    c = (np.arange(SIZE) + 0.5) / SIZE
    xs = x0 + c * (x1 - x0) - 0.5
    ys = y0 + c * (y1 - y0) - 0.5
    xi = np.floor(xs).astype(int)
    yi = np.floor(ys).astype(int)
    fx = (xs - xi)[None, :]
    fy = (ys - yi)[:, None]
    n = img.shape[0]

    def at(yy, xx):
        return img[np.clip(yy, 0, n - 1)[:, None], np.clip(xx, 0, n - 1)[None, :]]

    return ((1 - fy) * ((1 - fx) * at(yi, xi) + fx * at(yi, xi + 1))
            + fy * ((1 - fx) * at(yi + 1, xi) + fx * at(yi + 1, xi + 1)))


def _box(rng, scale_range, max_shift):
    s = SRC * rng.uniform(*scale_range)
    cx = SRC / 2 + rng.uniform(-max_shift, max_shift) * SRC
    cy = SRC / 2 + rng.uniform(-max_shift, max_shift) * SRC
    return (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)


def positive_box(rng):
    while True:
        b = _box(rng, (0.8, 1.25), 0.15)
        if iou(b) >= 0.65:
            return b


def part_box(rng):
    while True:
        b = _box(rng, (0.3, 0.6), 0.35)
        if iou(b) < 0.3:
            return b


def photometric(rng, patch: np.ndarray) -> np.ndarray:
    """Contrast/brightness change and sensor noise on 0..255 values; 8-bit result."""
    m = patch.mean()
    p = (patch - m) * rng.uniform(0.6, 1.4) + m + rng.uniform(-30, 30)
    p = p + rng.normal(0, rng.uniform(0, 8), p.shape)
    return np.clip(np.round(p), 0, 255)


def build(n_pos: int, n_neg: int, seed: int = 0, part_fraction: float = 0.35):
    """Return ``(x (n, 3, 48, 48) float32, y (n,) int64, info)``, shuffled with the seed."""
    rng = np.random.default_rng(seed)
    imgs, labels = load_lfw_subset()
    faces = imgs[labels == 1] * 255.0
    backs = imgs[labels == 0] * 255.0
    xs, ys, info = [], [], []
    for i in range(n_pos):
        k = i % len(faces)  # every face the same number of times (+-1)
        img = faces[k][:, ::-1] if rng.random() < 0.5 else faces[k]
        b = positive_box(rng)
        xs.append(photometric(rng, crop_resize(img, b)))
        ys.append(1)
        info.append(f"face{k} iou={iou(b):.2f}")
    for i in range(n_neg):
        if rng.random() < part_fraction:
            k = int(rng.integers(len(faces)))
            b = part_box(rng)
            xs.append(photometric(rng, crop_resize(faces[k], b)))
            info.append(f"part{k} iou={iou(b):.2f}")
        else:
            k = int(rng.integers(len(backs)))
            img = backs[k][:, ::-1] if rng.random() < 0.5 else backs[k]
            b = _box(rng, (0.6, 1.2), 0.2)
            xs.append(photometric(rng, crop_resize(img, b)))
            info.append(f"background{k}")
        ys.append(0)
    x = np.stack(xs)[:, None].repeat(3, axis=1)
    x = ((x - 127.5) * 0.0078125).astype(np.float32)
    order = rng.permutation(len(ys))
    return x[order], np.asarray(ys, dtype=np.int64)[order], np.asarray(info)[order]
