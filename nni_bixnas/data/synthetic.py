"""The embedded default dataset: procedural H&E-like nuclei tiles with exact masks.

Each tile has a pink, textured eosin background; elliptical, slightly irregular haematoxylin-purple
nuclei of varied size, orientation and darkness (some pale, some touching or overlapping); red blood
cells and darker cytoplasm halos that are *not* nuclei; intensity noise and a slight blur. Tile ``i``
depends only on ``(seed, i, size)``, so it is identical whatever ``n`` is.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import ndimage

from .collection import Collection, PatchRef

DEFAULTS = {"n": 32, "size": 64, "seed": 0}

_EOSIN = np.array([0.93, 0.74, 0.84])
_HAEMATOXYLIN = np.array([0.32, 0.18, 0.46])
_PALE_NUCLEUS = np.array([0.60, 0.45, 0.68])
_RED_CELL = np.array([0.86, 0.36, 0.45])
_CYTOPLASM = np.array([0.82, 0.58, 0.74])


def _blob(rng, size, cy, cx, a, b, angle, wobble=0.1):
    """Signed inside-ness of an irregular ellipse on a local window: (slices, level), mask = level > 0."""
    reach = int(np.ceil(max(a, b) * (1 + wobble))) + 2
    y0, y1 = max(0, int(cy) - reach), min(size, int(cy) + reach + 1)
    x0, x1 = max(0, int(cx) - reach), min(size, int(cx) + reach + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dy, dx = yy + 0.5 - cy, xx + 0.5 - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = (dx * cos + dy * sin) / a, (-dx * sin + dy * cos) / b
    radius, phi = np.hypot(u, v), np.arctan2(v, u)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    edge = 1 + wobble * (0.6 * np.sin(3 * phi + p1) + 0.4 * np.sin(5 * phi + p2))
    return (slice(y0, y1), slice(x0, x1)), (edge - radius) * min(a, b)  # ~ distance to the edge in pixels


def _paint(image, window, level, colour, softness=0.7):
    """Alpha-blend ``colour`` where ``level > 0``, with a soft (sub-pixel) edge."""
    alpha = np.clip(level / softness + 0.5, 0.0, 1.0)[..., None]
    image[window] = image[window] * (1 - alpha) + colour * alpha


def generate_tile(seed: int, index: int, size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic tile.

    Returns
    -------
    tuple of numpy.ndarray
        ``(image, mask)``: uint8 ``(3, size, size)`` and uint8 ``(size, size)`` in {0, 1}.
    """
    rng = np.random.default_rng([seed, index, size])
    scale = size / 64.0
    image = np.empty((size, size, 3))
    stain = _EOSIN + rng.normal(0, 0.03, 3)
    coarse = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 4 * scale)
    fine = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 1.0)
    texture = 0.8 * coarse / (coarse.std() + 1e-8) + 0.4 * fine / (fine.std() + 1e-8)
    image[:] = stain * (1 - 0.04 * texture[..., None])

    for _ in range(rng.integers(3, 8)):  # cytoplasm halos: darker pink, not nuclei
        blob = _blob(rng, size, *rng.uniform(0, size, 2), *rng.uniform(5, 10, 2) * scale, rng.uniform(0, np.pi), 0.2)
        if blob:
            _paint(image, blob[0], blob[1], _CYTOPLASM * rng.uniform(0.95, 1.05), softness=3 * scale)

    mask = np.zeros((size, size), dtype=bool)
    centres = []
    for _ in range(rng.poisson(16)):
        a = rng.uniform(2.5, 6.5) * scale
        b = a * rng.uniform(0.55, 1.0)
        if centres and rng.random() < 0.35:  # touching / overlapping neighbour
            py, px, pa = centres[rng.integers(len(centres))]
            theta = rng.uniform(0, 2 * np.pi)
            gap = (pa + b) * rng.uniform(0.75, 1.05)
            cy, cx = py + gap * np.sin(theta), px + gap * np.cos(theta)
        else:
            cy, cx = rng.uniform(-2, size + 2, 2)
        blob = _blob(rng, size, cy, cx, a, b, rng.uniform(0, np.pi))
        if blob is None:
            continue
        centres.append((cy, cx, a))
        window, level = blob
        pale = rng.random() < 0.2
        colour = (_PALE_NUCLEUS if pale else _HAEMATOXYLIN) * rng.uniform(0.85, 1.25) + rng.normal(0, 0.03, 3)
        chromatin = 1 + 0.12 * rng.normal(0, 1, level.shape)[..., None]
        _paint(image, window, level, np.clip(colour * chromatin, 0, 1))
        mask[window] |= level > 0

    for _ in range(rng.integers(0, 4)):  # red blood cells: small, round, red; not nuclei
        r = rng.uniform(2.0, 3.5) * scale
        blob = _blob(rng, size, *rng.uniform(0, size, 2), r, r * rng.uniform(0.8, 1.0), 0.0, 0.03)
        if blob:
            free = ~mask[blob[0]]
            _paint(image, blob[0], np.where(free, blob[1], -1.0), _RED_CELL * rng.uniform(0.9, 1.1))

    image = ndimage.gaussian_filter(image, sigma=(0.6, 0.6, 0))
    image += rng.normal(0, 0.025, image.shape)
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image.transpose(2, 0, 1)), mask.astype(np.uint8)


def load_default(options: dict) -> Collection:
    """The ``default`` collection: ``n`` tiles (one patch each) of ``size`` px from ``seed``."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for the default dataset; valid: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **options}
    if opts["n"] < 1 or opts["size"] < 16:
        raise ValueError(f"default dataset needs n >= 1 and size >= 16, got n={opts['n']}, size={opts['size']}")
    n, size, seed = opts["n"], opts["size"], opts["seed"]
    keys = [f"synthetic_{i:04d}" for i in range(n)]
    return Collection(
        name="default",
        in_channels=3,
        num_classes=1,
        patches=[PatchRef(source=key, key=key) for key in keys],
        loader=lambda key: generate_tile(seed, int(key.rsplit("_", 1)[1]), size),
        sizes={key: (size, size) for key in keys},
        n_items=n,
    )
