"""Illustration renderers: turn real photos into posters, drawings, signs and screens.

The product must report real objects and stay silent on illustrations of them. These
renderers make illustrated versions of real photos in eight families, to train with as
extra forgotten-domain data and to benchmark leave-one-family-out generalisation. Each
family draws its own parameters from the seeded generator, so a family is a distribution
of looks, not one filter. numpy + OpenCV only; every family works at the image's own
resolution and supersamples internally only where it needs fine detail.

Run `python -m adu_perception.training.stylize --contact-sheet-demo OUT.png` to draw the
documentation's contact sheet from the demo world.
"""
import argparse
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np

FAMILIES = ("halftone_print", "flat_vector", "line_ink", "painterly", "comic", "pictogram",
            "screen", "billboard_print")
# Families whose content is still a photograph (reported apart from the drawn styles).
PRINT_FAMILIES = ("billboard_print", "screen")
DRAWN_FAMILIES = tuple(f for f in FAMILIES if f not in PRINT_FAMILIES)
MIN_SIDE = 16


# --------------------------------------------------------------------------- helpers
def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


def _check_image(image) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image must be at least {MIN_SIDE}x{MIN_SIDE}, got "
                         f"{image.shape[1]}x{image.shape[0]}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _supersample(h: int, w: int, target: int = 288) -> int:
    """Upsampling factor that gives fine detail (dots, subpixels) about `target` px to draw on."""
    return int(np.clip(np.ceil(target / max(h, w)), 2, 4))


def _up(image: np.ndarray, f: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (w * f, h * f), interpolation=cv2.INTER_CUBIC)


def _down(image: np.ndarray, h: int, w: int) -> np.ndarray:
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _smooth_noise(rng, h: int, w: int, cells: float) -> np.ndarray:
    """Low-frequency noise, about `cells` blobs across, zero mean, unit-ish amplitude."""
    gh, gw = max(2, int(h / max(h, w) * cells) + 2), max(2, int(w / max(h, w) * cells) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _paper(rng, h: int, w: int, tint, grain: float) -> np.ndarray:
    """Float RGB paper: a tint with fibre grain and faint mottling."""
    fine = rng.standard_normal((h, w)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), 0.6)
    shade = 1 + grain * (fine + 0.6 * _smooth_noise(rng, h, w, 6))
    return np.asarray(tint, np.float32)[None, None] * shade[..., None]


def _vivid(rgb: np.ndarray, saturation: float, value: float = 1.0) -> np.ndarray:
    """Scale the saturation (and value) of float 0..255 RGB colours."""
    hsv = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.float32).reshape(-1, 1, 3) / 255,
                       cv2.COLOR_RGB2HSV)
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * value, 0, 1)
    return (cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255).reshape(rgb.shape)


def _kmeans(points: np.ndarray, k: int, rng, iterations: int = 6, sample: int = 800) -> np.ndarray:
    """Seeded k-means++ on a subsample (OpenCV's kmeans uses a global RNG: not reproducible)."""
    points = points.reshape(-1, points.shape[-1]).astype(np.float32)
    if len(points) > sample:
        points = points[rng.choice(len(points), sample, replace=False)]
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d = ((points[:, None] - np.array(centres)[None]) ** 2).sum(-1).min(1)
        if d.sum() <= 0:
            break
        centres.append(points[rng.choice(len(points), p=d / d.sum())])
    centres = np.array(centres)
    for _ in range(iterations):
        labels = _nearest(points, centres)
        for j in range(len(centres)):
            if np.any(labels == j):
                centres[j] = points[labels == j].mean(0)
    return centres


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for each point (|p|^2 is the same for every centre)."""
    flat = points.reshape(-1, points.shape[-1])
    d = (centres ** 2).sum(1)[None] - 2 * flat @ centres.T
    return d.argmin(1).reshape(points.shape[:-1])


def _smooth_labels(labels: np.ndarray, f: int) -> np.ndarray:
    """Labels upsampled f times with rounded region boundaries (drawn regions, not pixels)."""
    h, w = labels.shape
    big = cv2.resize(labels.astype(np.uint8), (w * f, h * f), interpolation=cv2.INTER_NEAREST)
    return cv2.medianBlur(big, 2 * f + 1)


def _rotated(h: int, w: int, angle_deg: float, shift=(0.0, 0.0)):
    """Pixel coordinates rotated by angle: (u, v) float32 grids for periodic patterns."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs += shift[0]
    ys += shift[1]
    a = np.deg2rad(angle_deg)
    return xs * np.cos(a) + ys * np.sin(a), -xs * np.sin(a) + ys * np.cos(a)


def _dot_screen(h: int, w: int, cell: float, angle: float, shift=(0.0, 0.0)) -> np.ndarray:
    """Halftone spot function in [0, 1]: 0 at dot centres, 1 between them.

    cos(k(x cos a + y sin a)) splits into 1-D factors (angle-sum identity): two outer
    products per axis instead of a cosine per pixel.
    """
    a, k = np.deg2rad(angle), 2 * np.pi / cell
    x = (np.arange(w) + shift[0]) * k
    y = (np.arange(h) + shift[1]) * k
    total = np.zeros((h, w), np.float32)
    for cx, cy in ((np.cos(a), np.sin(a)), (-np.sin(a), np.cos(a))):
        total += np.outer(np.cos(y * cy), np.cos(x * cx)).astype(np.float32)
        total -= np.outer(np.sin(y * cy), np.sin(x * cx)).astype(np.float32)
    return 0.5 - 0.25 * total


def _ink_from_spot(coverage: np.ndarray, spot: np.ndarray, cell: float) -> np.ndarray:
    """Antialiased ink mask: ink where the spot function is below the tone's coverage."""
    softness = 1.6 / cell  # about one pixel of the spot function's slope
    return np.clip((coverage - spot) / softness + 0.5, 0, 1)


def _edge_strength(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Largest |difference of Gaussians| over the colour channels (rgb in 0..1): colour
    edges count too, a dark green truck on a grey road has little luminance contrast."""
    dog = cv2.GaussianBlur(rgb, (0, 0), sigma * 1.6) - cv2.GaussianBlur(rgb, (0, 0), sigma)
    return np.abs(dog).max(axis=2)


# --------------------------------------------------------------------------- 1. halftone print
_INKS = {"c": (0, 158, 224), "m": (226, 0, 122), "y": (255, 230, 0), "k": (28, 28, 32)}
_PRINT_PAPERS = [(236, 232, 216), (246, 244, 236), (232, 222, 196), (250, 250, 247)]
_MONO_INKS = [(22, 22, 26), (40, 30, 22), (20, 34, 70)]


def _cmyk(rgb: np.ndarray, black_generation: float) -> List[np.ndarray]:
    k = (1 - rgb.max(axis=2)) * black_generation
    rest = np.maximum(1 - k, 1e-3)
    return [np.clip((1 - rgb[..., i] - k) / rest, 0, 1) for i in range(3)] + [k]


def _halftone_print(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    f = _supersample(h, w, 192)  # dots are 2+ output pixels: 2x is enough to draw them round
    rgb = (_up(image, f).astype(np.float32) / 255) ** rng.uniform(0.8, 1.15)
    H, W = rgb.shape[:2]
    cell = f * min(h, w) / rng.uniform(24, 44)  # screen ruling: cells across the short side
    gain = rng.uniform(0.0, 0.12)  # dot gain: ink spreads into the paper
    out = _paper(rng, H, W, _PRINT_PAPERS[rng.integers(len(_PRINT_PAPERS))], rng.uniform(0.01, 0.04))
    if rng.random() < 0.3:
        plates = [(1 - _luma(rgb), _MONO_INKS[rng.integers(len(_MONO_INKS))], 45.0)]
    else:
        c, m, y, k = _cmyk(rgb, rng.uniform(0.5, 1.0))
        plates = [(c, _INKS["c"], 15.0), (m, _INKS["m"], 75.0), (y, _INKS["y"], 0.0), (k, _INKS["k"], 45.0)]
    for coverage, ink, angle in plates:
        shift = rng.normal(0, 0.45 * f, 2)  # plate misregistration
        spot = _dot_screen(H, W, cell, angle + rng.normal(0, 1.5), shift)
        coverage = cv2.GaussianBlur(coverage, (0, 0), 0.6 * f) * (1 + gain)
        mask = _ink_from_spot(coverage, spot, cell)[..., None]
        out *= 1 - mask * (1 - np.asarray(ink, np.float32) / 255)
    return _down(out, h, w)


# --------------------------------------------------------------------------- 2. flat vector
def _flat_vector(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    smooth = image
    for _ in range(rng.integers(1, 4)):
        smooth = cv2.bilateralFilter(smooth, 7, rng.uniform(40, 90), 5)
    smooth = cv2.GaussianBlur(smooth, (0, 0), 0.6).astype(np.float32)
    centres = _kmeans(smooth, int(rng.integers(3, 8)), rng)
    centres = centres[np.argsort(_luma(centres))]  # a median over labels then follows brightness
    labels = _smooth_labels(_nearest(smooth, centres), 2)
    palette = _vivid(centres, rng.uniform(1.1, 1.7), rng.uniform(0.95, 1.12))
    palette = np.clip(palette + rng.normal(0, 10, palette.shape), 0, 255)  # designer's palette drift
    out = palette[labels]
    if rng.random() < 0.6:
        edge = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8)) > 0
        out[edge] = palette[0] * rng.uniform(0.2, 0.6)
    return _down(out.astype(np.float32), h, w)


# --------------------------------------------------------------------------- 3. line and ink
_PEN_INKS = [(18, 18, 22), (18, 18, 22), (66, 42, 24), (22, 34, 78)]
_DRAWING_PAPERS = [(250, 249, 244), (244, 238, 222), (252, 252, 252), (238, 232, 215)]


def _hatching(tone: np.ndarray, rng, period: float) -> np.ndarray:
    """Ink of one or two layers of parallel strokes, denser where the tone is darker."""
    h, w = tone.shape
    ink = np.zeros_like(tone)
    angle = rng.uniform(20, 70) * rng.choice([-1, 1])
    wobble = _smooth_noise(rng, h, w, 5) * period * 0.4
    for layer, level in enumerate((rng.uniform(0.35, 0.5), rng.uniform(0.6, 0.75))):
        u, _ = _rotated(h, w, angle + 90 * layer)
        stripe = np.abs(((u + wobble) / period) % 1 - 0.5) * 2  # 0 on a stroke, 1 between
        ink = np.maximum(ink, np.clip((0.3 - stripe) * 4, 0, 1) * (tone > level))
    return ink


def _line_ink(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    f = 2
    rgb = _up(image, f).astype(np.float32) / 255
    rgb = cv2.bilateralFilter(rgb, 5, 0.15, 3)
    gray = _luma(rgb)
    H, W = gray.shape
    scale = f * max(1.0, min(h, w) / 96)
    edges = _edge_strength(rgb, rng.uniform(0.6, 1.0) * scale)
    ink = np.clip((edges - rng.uniform(0.006, 0.014)) / rng.uniform(0.008, 0.02), 0, 1)
    tone = 1 - cv2.GaussianBlur(gray, (0, 0), scale)
    style = rng.random()
    if style < 0.45:
        ink = np.maximum(ink, _hatching(tone, rng, rng.uniform(2.2, 3.5) * scale))
    elif style < 0.7:
        ink = np.maximum(ink, np.clip((tone - rng.uniform(0.72, 0.85)) * 12, 0, 1))  # solid blacks
    paper = _paper(rng, H, W, _DRAWING_PAPERS[rng.integers(len(_DRAWING_PAPERS))], rng.uniform(0.01, 0.03))
    if rng.random() < 0.35:  # a pale colour wash under the lines
        wash = cv2.GaussianBlur(rgb, (0, 0), 2 * scale)
        wash = wash / np.maximum(wash.max(axis=2, keepdims=True), 1e-3)
        paper *= 1 - rng.uniform(0.15, 0.35) * (1 - wash)
    pen = np.asarray(_PEN_INKS[rng.integers(len(_PEN_INKS))], np.float32)
    ink = (ink * rng.uniform(0.85, 1.0))[..., None]
    return _down(paper * (1 - ink) + pen * ink, h, w)


# --------------------------------------------------------------------------- 4. painterly
def _stroke_orientation(gray: np.ndarray, sigma: float) -> np.ndarray:
    """Per-pixel angle (radians) along the local edges, from the smoothed structure tensor."""
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    jxx, jyy, jxy = (cv2.GaussianBlur(g, (0, 0), sigma) for g in (gx * gx, gy * gy, gx * gy))
    return 0.5 * np.arctan2(2 * jxy, jxx - jyy) + np.pi / 2


def _line_kernel(length: int, angle: float) -> np.ndarray:
    size = 2 * (length // 2) + 1
    kernel = np.zeros((size, size), np.float32)
    c, d = size // 2, (size // 2) * np.array([np.cos(angle), np.sin(angle)])
    cv2.line(kernel, (int(round(c - d[0])), int(round(c - d[1]))),
             (int(round(c + d[0])), int(round(c + d[1]))), 1.0, 1, cv2.LINE_AA)
    return kernel / kernel.sum()


def _smear(image: np.ndarray, angle: np.ndarray, length: int, directions: int = 6) -> np.ndarray:
    """Blur along each pixel's stroke direction (a cheap line-integral convolution)."""
    bins = np.round((angle % np.pi) / np.pi * directions).astype(int) % directions
    out = np.empty_like(image)
    for i in range(directions):
        mask = bins == i
        if mask.any():
            out[mask] = cv2.filter2D(image, -1, _line_kernel(length, i * np.pi / directions))[mask]
    return out


def _oil(base: np.ndarray, rng, scale: float) -> np.ndarray:
    H, W = base.shape[:2]
    base = _vivid(base, rng.uniform(1.15, 1.5), rng.uniform(0.95, 1.08))
    angle = _stroke_orientation(_luma(base) / 255, 2 * scale) + _smooth_noise(rng, H, W, 4) * 0.4
    length = int(rng.uniform(4, 8) * scale)
    paint = _smear(base, angle, length)
    height = _smear(rng.standard_normal((H, W)).astype(np.float32), angle, length)
    relief = cv2.Sobel(height, cv2.CV_32F, 1, 1) * rng.uniform(0.5, 1.2)  # impasto catching light
    period = rng.uniform(1.6, 2.6) * scale / 2
    u, v = _rotated(H, W, rng.uniform(-10, 10))
    canvas = np.sin(u * np.pi / period) * np.sin(v * np.pi / period) * rng.uniform(0.03, 0.06)
    return paint * (1 + 0.2 * height[..., None] + relief[..., None] + canvas[..., None])


def _watercolour(base: np.ndarray, rng, scale: float) -> np.ndarray:
    H, W = base.shape[:2]
    bleed = cv2.GaussianBlur(base, (0, 0), rng.uniform(0.5, 1.2) * scale)
    bleed += _smooth_noise(rng, H, W, 8)[..., None] * 10  # uneven pigment
    pigment = 1 - bleed / 255
    pooling = np.abs(_luma(base - cv2.GaussianBlur(base, (0, 0), 1.5 * scale))) / 255
    pigment = pigment * rng.uniform(0.75, 1.0) * (1 + rng.uniform(3, 6) * pooling[..., None])
    paper = _paper(rng, H, W, _DRAWING_PAPERS[rng.integers(len(_DRAWING_PAPERS))], rng.uniform(0.02, 0.05))
    granulation = 1 + 0.25 * (paper[..., :1] / paper.mean() - 1) * 4
    out = paper * (1 - np.clip(pigment * granulation, 0, 1))
    if rng.random() < 0.5:  # the pencil underdrawing shows through
        lines = np.clip((_edge_strength(base / 255, scale * 0.8) - 0.01) / 0.03, 0, 1) * 0.45
        out *= 1 - lines[..., None]
    return out


def _painterly(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    base = cv2.edgePreservingFilter(image, flags=cv2.RECURS_FILTER, sigma_s=rng.uniform(20, 60),
                                    sigma_r=rng.uniform(0.3, 0.6))
    scale = 2 * max(1.0, min(h, w) / 96)
    base = _up(base, 2).astype(np.float32)
    out = _oil(base, rng, scale) if rng.random() < 0.55 else _watercolour(base, rng, scale)
    return _down(out, h, w)


# --------------------------------------------------------------------------- 5. comic
def _benday(h: int, w: int, cell: float, rng) -> np.ndarray:
    """1 inside printed Ben-Day dots, 0 on the paper between them."""
    spot = _dot_screen(h, w, cell, rng.uniform(10, 50))
    return _ink_from_spot(np.full((h, w), rng.uniform(0.5, 0.7), np.float32), spot, cell)


def _comic(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    f = 2
    smooth = image
    for _ in range(2):
        smooth = cv2.bilateralFilter(smooth, 7, 70, 5)
    small = cv2.cvtColor(smooth.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    weights = np.array([0.35, 1.0, 1.0], np.float32)  # regions follow hue more than shading
    centres = _kmeans(small * weights, int(rng.integers(4, 8)), rng) / weights
    centres = centres[np.argsort(centres[:, 0])]
    labels = _smooth_labels(_nearest(small * weights, centres * weights), f)
    lab = cv2.resize(small, (w * f, h * f), interpolation=cv2.INTER_LINEAR)
    H, W = lab.shape[:2]
    tones = int(rng.integers(2, 5))
    level = np.clip(np.floor(cv2.GaussianBlur(lab[..., 0], (0, 0), 1.5) / 100 * tones), 0, tones - 1)
    cel = np.empty_like(lab)
    cel[..., 0] = rng.uniform(22, 40) + level * (rng.uniform(88, 97) - 30) / max(tones - 1, 1)
    cel[..., 1:] = centres[labels, 1:] * rng.uniform(1.2, 1.7)
    out = cv2.cvtColor(cel, cv2.COLOR_Lab2RGB) * 255
    if rng.random() < 0.5:  # Ben-Day dots: the lightest band printed as coloured dots
        light = (level == tones - 1)[..., None]
        dots = _benday(H, W, f * min(h, w) / rng.uniform(20, 32), rng)[..., None]
        out = np.where(light, out * dots + np.float32([250, 246, 236]) * (1 - dots), out)
    gray = cv2.cvtColor(_up(smooth, f), cv2.COLOR_RGB2GRAY)
    lines = cv2.Canny(gray, 40, 110) | cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8))
    thickness = max(2, int(round(f * max(1.0, min(h, w) / 96) * rng.uniform(0.8, 1.6))))
    lines = cv2.dilate((lines > 0).astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (thickness, thickness)))
    out[lines > 0] = (16, 14, 20)
    return _down(out.astype(np.float32), h, w)


# --------------------------------------------------------------------------- 6. pictogram
# (sign fill, figure colour, border colour)
_SIGN_STYLES = [((0, 86, 160), (250, 250, 250), (250, 250, 250)),
                ((250, 250, 250), (20, 20, 20), (200, 30, 30)),
                ((250, 250, 250), (20, 20, 20), (20, 20, 20)),
                ((250, 196, 0), (20, 20, 20), (20, 20, 20)),
                ((0, 120, 72), (250, 250, 250), (250, 250, 250))]
_BACKDROPS = [(238, 238, 236), (200, 204, 210), (250, 250, 250), (120, 160, 205)]


def _central_colours(lab: np.ndarray, ring: int, rng) -> np.ndarray:
    """Pixels of colour clusters that rarely touch the image border: the object's colours."""
    centres = _kmeans(lab, 6, rng, iterations=8, sample=lab.shape[0] * lab.shape[1])
    labels = _nearest(lab, centres)
    border = np.zeros(labels.shape, bool)
    border[:ring], border[-ring:], border[:, :ring], border[:, -ring:] = True, True, True, True
    foreground = np.zeros(labels.shape, bool)
    for j in range(len(centres)):
        area = labels == j
        if area.any() and (area & border).sum() < 0.5 * border.mean() * area.sum():
            foreground |= area
    return foreground


def _foreground_mask(image: np.ndarray, rng) -> np.ndarray:
    """Object silhouette, uint8 0/255 on a small copy: GrabCut seeded by the colours that
    stay off the border (a central rectangle alone often takes the whole scene)."""
    h, w = image.shape[:2]
    s = 48 / max(h, w)
    sw, sh = max(16, int(round(w * s))), max(16, int(round(h * s)))
    small = cv2.GaussianBlur(cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA), (3, 3), 0)
    lab = cv2.cvtColor(small.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    seed = _central_colours(lab, max(2, int(min(sw, sh) * 0.08)), rng)
    fg = seed.astype(np.uint8)
    if 0.02 < seed.mean() < 0.85:
        mask = np.where(seed, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut starts its colour models from OpenCV's global RNG: fix it, or the same
        # image and seed give a different silhouette from call to call.
        cv2.setRNGSeed(0)
        cv2.grabCut(small, mask, None, *models, 2, cv2.GC_INIT_WITH_MASK)
        fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # cut thin bridges
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
    if count > 1:  # keep the largest blob: a sign shows one figure
        fg = (labels == 1 + stats[1:, cv2.CC_STAT_AREA].argmax()).astype(np.uint8)
    if not 0.03 < fg.mean() < 0.8:  # nothing usable: a centred blob
        fg = np.zeros_like(fg)
        cv2.ellipse(fg, (sw // 2, sh // 2), (sw // 3, sh // 4), 0, 0, 360, 1, -1)
    return fg * 255


def _figure_polygons(mask: np.ndarray, rng) -> List[np.ndarray]:
    """The silhouette and its holes as simplified polygons, in [0, 1] of its bounding box."""
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    outer = max(range(len(contours)), key=lambda i: cv2.contourArea(contours[i]))
    kept = [i for i in range(len(contours))
            if i == outer or (hierarchy[0, i, 3] == outer and cv2.contourArea(contours[i]) > 4)]
    epsilon = rng.uniform(0.004, 0.012) * cv2.arcLength(contours[outer], True)
    polys = [cv2.approxPolyDP(contours[i], epsilon, True)[:, 0].astype(np.float32) for i in kept]
    low = polys[0].min(0)
    span = max(float((polys[0].max(0) - low).max()), 1.0)
    return [(p - low) / span for p in polys]


def _sign_shape(canvas, shape: str, centre, radius: float, colour, sub: int) -> None:
    cx, cy = centre
    if shape == "circle":
        cv2.circle(canvas, (int(cx * sub), int(cy * sub)), int(radius * sub), colour, -1, cv2.LINE_AA, 4)
        return
    if shape == "diamond":
        pts = [(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)]
    else:
        pts = [(cx - radius, cy - radius), (cx + radius, cy - radius),
               (cx + radius, cy + radius), (cx - radius, cy + radius)]
    pts = np.round(np.array(pts) * sub).astype(np.int32)
    cv2.fillPoly(canvas, [pts], colour, cv2.LINE_AA, 4)


def _pictogram(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    f = 2
    fill, figure, border = _SIGN_STYLES[rng.integers(len(_SIGN_STYLES))]
    shape = rng.choice(["square", "square", "circle", "diamond"])
    canvas = np.empty((h * f, w * f, 3), np.float32)
    canvas[:] = fill if rng.random() < 0.4 else _BACKDROPS[rng.integers(len(_BACKDROPS))]
    centre = (w * f / 2 + rng.normal(0, 0.02) * w * f, h * f / 2 + rng.normal(0, 0.02) * h * f)
    radius = min(h, w) * f / 2 * rng.uniform(0.86, 0.98) * (1.0 if shape != "square" else 0.94)
    thickness = radius * rng.uniform(0.07, 0.13)
    _sign_shape(canvas, shape, centre, radius, border, 16)
    _sign_shape(canvas, shape, centre, radius - thickness, fill, 16)
    polys = _figure_polygons(_foreground_mask(image, rng), rng)
    extent = polys[0].max(0)
    inner = (radius - thickness) * (1.05 if shape == "square" else 0.72) * rng.uniform(0.75, 0.9)
    size = 2 * inner / max(extent.max(), 1e-3)
    offset = np.array(centre) - extent * size / 2
    cv2.fillPoly(canvas, [np.round((p * size + offset) * 16).astype(np.int32) for p in polys],
                 figure, cv2.LINE_AA, 4)  # holes (wheels, windows) stay open: even-odd fill
    out = _down(canvas, h, w)
    return out + rng.normal(0, 1.5, out.shape).astype(np.float32)  # printed, not synthetic-flat


# --------------------------------------------------------------------------- 7. screen
def _subpixel_display(image: np.ndarray, rng, f: int) -> np.ndarray:
    """The image as lit RGB stripes of a slightly rotated pixel grid, seen at f x resolution."""
    h, w = image.shape[:2]
    pitch = f * min(h, w) / rng.uniform(30, 56)  # screen pixels per output pixel: > 1, visible
    u, v = _rotated(h * f, w * f, rng.uniform(-5, 5), rng.uniform(0, pitch, 2))
    u, v = u / pitch, v / pitch
    # Each screen pixel shows the image at its centre (nearest sampling of the source).
    sx = ((np.floor(u) + 0.5) * pitch).astype(np.float32)
    sy = ((np.floor(v) + 0.5) * pitch).astype(np.float32)
    source = _up(image, f).astype(np.float32)
    lit = cv2.remap(source, sx, sy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    sub = (u % 1) * 3
    gap = rng.uniform(0.12, 0.3)
    row_open = ((v % 1) < 1 - gap).astype(np.float32)
    out = np.zeros_like(lit)
    for c in range(3):
        stripe = ((sub >= c + gap) & (sub < c + 1)).astype(np.float32)
        out[..., c] = lit[..., c] * stripe * row_open
    return out * 3 / ((1 - gap) ** 2)  # refill the light lost to the black matrix


def _screen(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    f = _supersample(h, w)
    out = _down(_subpixel_display(image, rng, f), h, w)
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.7))  # camera focus
    glow = cv2.GaussianBlur(np.maximum(out - 170, 0), (0, 0), min(h, w) * 0.05)
    out = out + glow * rng.uniform(0.6, 1.4)  # backlight bloom
    ys = np.arange(h, dtype=np.float32)[:, None, None]
    if rng.random() < 0.6:  # rolling scanlines
        period = rng.uniform(2.0, 4.0)
        out *= 1 - rng.uniform(0.08, 0.2) * (0.5 + 0.5 * np.cos(2 * np.pi * ys / period))
    if rng.random() < 0.7:  # moire: interference of the pixel grid with the camera's
        u, v = _rotated(h, w, rng.uniform(0, 180))
        out *= (1 + rng.uniform(0.05, 0.14) * np.sin(u / rng.uniform(3, 9) + 0.6 * np.sin(v / 7)))[..., None]
    cast = np.array([rng.uniform(0.85, 1.0), rng.uniform(0.9, 1.02), rng.uniform(0.98, 1.15)], np.float32)
    out = 18 + out * cast[None, None] * rng.uniform(0.8, 1.0)  # raised blacks, cool white point
    out *= (1 - 0.25 * _vignette(h, w))[..., None]
    out = _bezel(out, rng)
    return out + rng.normal(0, rng.uniform(1.5, 4), out.shape).astype(np.float32)


def _vignette(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return ((xs / w - 0.5) ** 2 + (ys / h - 0.5) ** 2) * 2


def _bezel(out: np.ndarray, rng) -> np.ndarray:
    """Dark plastic frame along one to three sides, the screen's edge in the camera's view."""
    h, w = out.shape[:2]
    colour = np.float32(rng.uniform(8, 45))
    for side in rng.choice(4, size=int(rng.integers(1, 4)), replace=False):
        width = int(max(2, rng.uniform(0.04, 0.12) * (h if side < 2 else w)))
        region = [slice(None), slice(None)]
        axis = 0 if side < 2 else 1
        region[axis] = slice(0, width) if side % 2 == 0 else slice(-width, None)
        out[tuple(region)] = colour + rng.uniform(0, 12)
    return out


# --------------------------------------------------------------------------- 8. billboard print
_SKIES = [((70, 125, 200), (175, 205, 235)), ((140, 148, 160), (205, 208, 212)),
          ((215, 150, 110), (245, 210, 160)), ((100, 150, 210), (220, 230, 240))]


def _outdoor(rng, h: int, w: int) -> np.ndarray:
    """Sky gradient over a textured street or wall: where the print hangs."""
    top, bottom = (np.asarray(c, np.float32) for c in _SKIES[rng.integers(len(_SKIES))])
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    scene = np.broadcast_to(top + (bottom - top) * t, (h, w, 3)).copy()
    horizon = int(h * rng.uniform(0.55, 0.85))
    ground = np.float32(rng.uniform(70, 130)) * (1 + 0.15 * _smooth_noise(rng, h - horizon, w, 12))
    ground += rng.normal(0, 6, ground.shape).astype(np.float32)
    scene[horizon:] = ground[..., None] * np.float32([1.0, 0.98, 0.95])
    for _ in range(int(rng.integers(0, 4))):  # distant buildings / trees on the horizon
        x0, bw = rng.uniform(0, w), rng.uniform(0.1, 0.35) * w
        bh = rng.uniform(0.05, 0.25) * h
        scene[int(max(0, horizon - bh)):horizon, int(x0):int(x0 + bw)] = rng.uniform(60, 140, 3)
    return scene


def _billboard_quad(rng, h: int, w: int) -> np.ndarray:
    """Corners (tl, tr, br, bl) of the print in the scene, seen slightly from the side."""
    bw, bh = w * rng.uniform(0.58, 0.8), h * rng.uniform(0.46, 0.62)
    x0, y0 = rng.uniform(0.05, 0.95 - bw / w) * w, rng.uniform(0.06, 0.2) * h
    skew = rng.uniform(-0.12, 0.12) * bh  # perspective: the far side is shorter
    return np.float32([[x0, y0 + max(skew, 0)], [x0 + bw, y0 + max(-skew, 0)],
                       [x0 + bw, y0 + bh - max(-skew, 0)], [x0, y0 + bh - max(skew, 0)]])


def _place_print(scene: np.ndarray, image: np.ndarray, quad: np.ndarray, rng) -> None:
    """Warp the printed photo into the quad, with a frame around it."""
    h, w = scene.shape[:2]
    ih, iw = image.shape[:2]
    printed = image.astype(np.float32) * rng.uniform(0.8, 0.95) + rng.uniform(10, 30)  # matte ink
    frame = float(rng.uniform(20, 210))
    grow = (quad - quad.mean(0)) * rng.uniform(0.05, 0.1)
    cv2.fillConvexPoly(scene, np.round((quad + grow) * 8).astype(np.int32), (frame,) * 3, cv2.LINE_AA, 3)
    source = np.float32([[0, 0], [iw, 0], [iw, ih], [0, ih]])
    matrix = cv2.getPerspectiveTransform(source, quad)
    warped = cv2.warpPerspective(printed, matrix, (w, h), flags=cv2.INTER_AREA)
    cover = cv2.warpPerspective(np.ones((ih, iw), np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)
    scene[:] = scene * (1 - cover[..., None]) + warped * cover[..., None]


def _posts(scene: np.ndarray, quad: np.ndarray, rng) -> None:
    h = scene.shape[0]
    colour = (float(rng.uniform(40, 110)),) * 3
    bottom = max(quad[2, 1], quad[3, 1])
    width = max(1, int(0.025 * scene.shape[1]))
    for t in (0.25, 0.75):
        x = int(quad[3, 0] + (quad[2, 0] - quad[3, 0]) * t)
        cv2.line(scene, (x, int(bottom)), (x, h), colour, width, cv2.LINE_AA)


def _billboard_print(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    scene = _outdoor(rng, h, w)
    quad = _billboard_quad(rng, h, w)
    if rng.random() < 0.75:
        _posts(scene, quad, rng)
    _place_print(scene, image, quad, rng)
    sx, sy = rng.uniform(0, w), rng.uniform(0, 0.5 * h)  # sun glare
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    glare = np.exp(-((xs - sx) ** 2 + (ys - sy) ** 2) / (2 * (rng.uniform(0.15, 0.4) * w) ** 2))
    scene += glare[..., None] * rng.uniform(30, 90)
    scene = cv2.GaussianBlur(scene, (0, 0), rng.uniform(0.4, 0.9))
    return scene + rng.normal(0, rng.uniform(2, 5), scene.shape).astype(np.float32)


# --------------------------------------------------------------------------- public API
_RENDERERS: Dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "halftone_print": _halftone_print, "flat_vector": _flat_vector, "line_ink": _line_ink,
    "painterly": _painterly, "comic": _comic, "pictogram": _pictogram, "screen": _screen,
    "billboard_print": _billboard_print,
}


def render(image: np.ndarray, family: str, seed) -> np.ndarray:
    """`image` (uint8 RGB HxWx3) drawn as `family`: uint8 RGB of the same shape.

    Deterministic for (image, family, seed); seed is anything np.random.default_rng takes.
    """
    _check_family(family)
    _check_image(image)
    out = _to_uint8(_RENDERERS[family](np.ascontiguousarray(image), np.random.default_rng(seed)))
    if np.array_equal(out, image):  # never hand back the photo itself
        out = _to_uint8(out.astype(np.float32) + np.where(out < 128, 3, -3))
    return out


def render_batch(images: np.ndarray, family: str, seed: int) -> np.ndarray:
    """Render each image of a uint8 [N, H, W, 3] batch; image i uses seed [seed, i]."""
    _check_family(family)
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError(f"images must be a uint8 [N, H, W, 3] array, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if len(images) == 0:
        return images.copy()
    return np.stack([render(image, family, [seed, i]) for i, image in enumerate(images)])


def _image_seed(seed: int, family: str, relative: str) -> list:
    """Per-image seed from the file's path: independent of which other images are chosen."""
    return [seed, FAMILIES.index(family), zlib.crc32(relative.encode())]


def stylize_folder(src_root, out_root, families: Sequence[str], domains: Sequence[str], seed: int,
                   split_file: Optional[str] = None, split: str = "downstream",
                   size: Optional[int] = None) -> dict:
    """Render every image of `domains` under `src_root` with every family.

    Writes `<out_root>/<family>/<class>/<stem>.png` (each family a domain folder). Returns
    {"images": read, "skipped": unreadable, "written": {family: count}}.
    """
    from adu_perception.runtime.images import resize_center_crop

    from .data import MultiDomainDataset, read_rgb

    for family in families:
        _check_family(family)
    if size is not None and size < MIN_SIDE:
        raise ValueError(f"size must be at least {MIN_SIDE}, got {size}")
    dataset = MultiDomainDataset.scan(src_root, split_file, split)
    wanted = set(dataset.domain_indices(list(domains)))
    out_root = Path(out_root)
    counts = {"images": 0, "skipped": 0, "written": {family: 0 for family in families}}
    taken = set()  # (class, file name) written
    for sample in dataset.samples:
        if sample.domain_index not in wanted:
            continue
        image = read_rgb(dataset.root / sample.path)
        if image is None or (size is None and min(image.shape[:2]) < MIN_SIDE):
            counts["skipped"] += 1
            continue
        if size is not None:
            image = resize_center_crop(image, size)
        counts["images"] += 1
        name = Path(sample.path)
        # <stem>.png, unless an image of another domain or suffix already took it in this class
        out_name = f"{name.stem}.png"
        key = (sample.class_index, out_name)
        if key in taken:
            out_name = f"{dataset.domains[sample.domain_index]}-{name.stem}-{name.suffix[1:]}.png"
        taken.add((sample.class_index, out_name))
        for family in families:
            folder = out_root / family / dataset.classes[sample.class_index]
            folder.mkdir(parents=True, exist_ok=True)
            styled = render(image, family, _image_seed(seed, family, sample.path))
            cv2.imwrite(str(folder / out_name), cv2.cvtColor(styled, cv2.COLOR_RGB2BGR))
            counts["written"][family] += 1
    return counts


def first_images_per_class(src_root, domains: Sequence[str], limit: int = 6,
                           split_file: Optional[str] = None, split: str = "downstream") -> List[np.ndarray]:
    """The first readable image of up to `limit` classes, from the chosen domains."""
    from .data import MultiDomainDataset, read_rgb

    dataset = MultiDomainDataset.scan(src_root, split_file, split)
    wanted = set(dataset.domain_indices(list(domains)))
    images: Dict[int, np.ndarray] = {}
    for sample in dataset.samples:
        if sample.domain_index in wanted and sample.class_index not in images and len(images) < limit:
            image = read_rgb(dataset.root / sample.path)
            if image is not None and min(image.shape[:2]) >= MIN_SIDE:
                images[sample.class_index] = image
    return [images[k] for k in sorted(images)]


def _label(tile: np.ndarray, text: str, width: int) -> None:
    """Write `text` centred in the header strip, shrunk to fit the column."""
    scale = 0.45
    while scale > 0.2 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 4:
        scale -= 0.02
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(tile, text, ((width - tw) // 2, (tile.shape[0] + th) // 2), cv2.FONT_HERSHEY_SIMPLEX,
                scale, (20, 20, 20), 1, cv2.LINE_AA)


def contact_sheet(images: Sequence[np.ndarray], families: Sequence[str] = FAMILIES, seed: int = 0,
                  tile: int = 128) -> np.ndarray:
    """Grid on white: one row per image, columns = original + each family, names on top."""
    from adu_perception.runtime.images import resize_center_crop

    for family in families:
        _check_family(family)
    gap, header = 4, 22
    columns = ["original"] + list(families)
    sheet = np.full((header + len(images) * (tile + gap) + gap, len(columns) * (tile + gap) + gap, 3),
                    255, np.uint8)
    for c, name in enumerate(columns):
        x = gap + c * (tile + gap)
        _label(sheet[:header, x:x + tile], name, tile)
    for r, image in enumerate(images):
        square = resize_center_crop(np.ascontiguousarray(image), tile)
        y = header + r * (tile + gap)
        for c, name in enumerate(columns):
            x = gap + c * (tile + gap)
            sheet[y:y + tile, x:x + tile] = square if c == 0 else render(square, name, [seed, r, c])
    return sheet


DEMO_CLASSES = ("car", "truck", "bus", "pedestrian", "bicycle", "traffic_sign")


def demo_contact_sheet(seed: int = 0, tile: int = 112) -> np.ndarray:
    """Contact sheet of the demo world's photos (no outside data): one row per class."""
    from adu_perception.demo.world import render_object

    photos = [render_object(cls, "photo", np.random.default_rng(k), size=160)
              for k, cls in enumerate(DEMO_CLASSES)]
    return contact_sheet(photos, FAMILIES, seed, tile)


def _write_palette_png(path: str, rgb: np.ndarray) -> None:
    """A 256-colour PNG (a third of the full-colour size, for the docs), via Pillow when present."""
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it, a full-colour PNG
        cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        return
    image = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                          dither=Image.Dither.NONE)
    image.save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Draw the stylize contact sheet of the demo world.")
    parser.add_argument("--contact-sheet-demo", required=True, metavar="PNG", help="output PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile", type=int, default=112)
    args = parser.parse_args(argv)
    sheet = demo_contact_sheet(args.seed, args.tile)
    _write_palette_png(args.contact_sheet_demo, sheet)
    print(f"wrote {args.contact_sheet_demo} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
