"""A small procedural world for the demo: road users drawn in four domains.

Nothing can be downloaded on these machines, so the demo carries its own data. Each class
is a family of 2-D part shapes (filled polygons and lines) with random proportions; the
same parts are drawn in one real-camera style and three illustration styles. The class is
carried by the shape and the domain by the drawing style, which is what ADU must pull
apart. numpy and OpenCV only (no torch), seeded: the same generator state gives the same
image.
"""
import colorsys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

CLASSES = ("car", "truck", "bus", "pedestrian", "bicycle", "traffic_sign")
DOMAINS = ("photo", "cartoon", "sketch", "billboard")
MEMORIZED_DOMAIN = "photo"
ILLUSTRATION_DOMAINS = ("cartoon", "sketch", "billboard")
VEHICLES = ("car", "truck", "bus")

SUPERSAMPLE = 2  # draw at twice the size, then area-downsample: clean antialiasing at 64 px


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Part:
    kind: str            # "fill": closed polygon; "line": polyline drawn with `width`
    points: np.ndarray   # [N, 2] (x, y), y down
    role: str            # colour role, looked up in the domain's palette
    width: float = 0.0
    closed: bool = False


def _fill(points, role):
    return Part("fill", np.asarray(points, np.float64), role)


def _line(points, role, width, closed=False):
    return Part("line", np.asarray(points, np.float64), role, width, closed)


def _circle(cx, cy, r, n=24, start=0.0, stop=360.0, ry=None):
    angle = np.radians(np.linspace(start, stop, n, endpoint=stop - start < 360))
    return np.stack([cx + r * np.cos(angle), cy + (r if ry is None else ry) * np.sin(angle)], 1)


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _rounded_rect(x0, y0, x1, y1, radius, n=4):
    corners = [(x1 - radius, y0 + radius, -90), (x1 - radius, y1 - radius, 0),
               (x0 + radius, y1 - radius, 90), (x0 + radius, y0 + radius, 180)]
    return np.concatenate([_circle(cx, cy, radius, n, a, a + 90) for cx, cy, a in corners])


def _limb(p0, p1, width):
    """A straight limb or tube as a quad, so every style can fill or outline it."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * width / 2
    return np.array([p0 + normal, p1 + normal, p1 - normal, p0 - normal])


# --------------------------------------------------------------------------- class shapes
# Side views in object units (height about 1, y down, ground at the bottom). Random
# proportions make each class a family of silhouettes rather than one template.

def _car(rng):
    length, r = rng.uniform(2.0, 2.5), rng.uniform(0.16, 0.2)
    floor, belt, roof = 1 - 0.8 * r, rng.uniform(0.45, 0.55), rng.uniform(0.05, 0.15)
    rear = length * rng.uniform(0.15, 0.28)
    hatchback = rng.random() < 0.4
    front = length * (rng.uniform(0.84, 0.92) if hatchback else rng.uniform(0.66, 0.76))
    span = front - rear
    rear_top, front_top = rear + span * rng.uniform(0.08, 0.25), front - span * rng.uniform(0.2, 0.35)
    L = length
    parts = [
        _fill([(rear, belt + 0.02), (rear_top, roof), (front_top, roof), (front, belt + 0.02)], "body"),
        _fill([(0.02 * L, floor), (0, floor - 0.06), (0, belt + 0.08), (0.05 * L, belt), (front, belt),
               (0.95 * L, belt + 0.05), (L, belt + 0.14), (L, floor - 0.06), (0.98 * L, floor)], "body"),
        _fill([(rear + 0.07, belt - 0.02), (rear_top + 0.04, roof + 0.045),
               (front_top - 0.03, roof + 0.045), (front - 0.09, belt - 0.02)], "window"),
    ]
    pillar = rear + 0.5 * span
    parts += [_line([(pillar, roof), (pillar, belt)], "body", 0.05),
              _line([(pillar, belt + 0.03), (pillar, floor - 0.04)], "dark", 0.012),
              _fill(_rect(L - 0.05, belt + 0.16, L, belt + 0.24), "light"),
              _fill(_rect(0, belt + 0.1, 0.04, belt + 0.18), "tail")]
    for x in (0.19 * L, 0.8 * L):
        parts += [_fill(_circle(x, 1 - r, r), "wheel"), _fill(_circle(x, 1 - r, 0.5 * r, 12), "hub")]
    return parts


def _truck(rng):
    # Box, gap, lower cab, lower bonnet: the profile steps down toward the front, where a
    # bus is one tall box all along.
    L, r = rng.uniform(2.1, 2.6), rng.uniform(0.13, 0.16)
    top, chassis = rng.uniform(0.0, 0.06), 1 - 2.0 * r
    bonnet, cab_w = L * rng.uniform(0.1, 0.14), L * rng.uniform(0.14, 0.18)
    cab_x = L - bonnet - cab_w
    box_end = cab_x - rng.uniform(0.06, 0.1)
    cab_top, bonnet_top = rng.uniform(0.36, 0.46), rng.uniform(0.58, 0.66)
    floor = chassis + 0.06
    parts = [
        _fill(_rect(0.02 * L, chassis, L - 0.02, floor), "dark"),
        _fill(_rect(0, top, box_end, chassis), "cargo"),
        _fill([(cab_x, floor), (cab_x, cab_top), (cab_x + 0.8 * cab_w, cab_top), (cab_x + cab_w, bonnet_top),
               (L - 0.02, bonnet_top + 0.02), (L, bonnet_top + 0.08), (L, floor)], "body"),
        _fill([(cab_x + 0.15 * cab_w, cab_top + 0.05), (cab_x + 0.75 * cab_w, cab_top + 0.05),
               (cab_x + 0.9 * cab_w, bonnet_top - 0.03), (cab_x + 0.15 * cab_w, bonnet_top - 0.03)], "window"),
        _fill(_rect(L - 0.04, bonnet_top + 0.1, L, bonnet_top + 0.15), "light"),
    ]
    if rng.random() < 0.5:  # a livery stripe along the box
        y = rng.uniform(top + 0.15, chassis - 0.2)
        parts.append(_fill(_rect(0.05, y, box_end - 0.05, y + 0.08), "stripe"))
    for x in (0.13 * L, 0.13 * L + 2.1 * r, L - max(0.6 * bonnet, r + 0.03)):
        parts += [_fill(_circle(x, 1 - r, r), "wheel"), _fill(_circle(x, 1 - r, 0.5 * r, 12), "hub")]
    return parts


def _bus(rng):
    L, r = rng.uniform(2.3, 2.8), rng.uniform(0.11, 0.13)
    top, bottom = rng.uniform(0.0, 0.06), 1 - 1.1 * r
    win_top, win_bottom = top + 0.1, top + rng.uniform(0.38, 0.45)
    parts = [_fill(_rounded_rect(0, top, L, bottom, 0.08), "livery")]
    if rng.random() < 0.6:
        parts.append(_fill(_rect(0, top + 0.58, L, top + 0.65), "stripe"))
    n, x0, x1, gap = int(rng.integers(4, 7)), 0.05 * L, 0.72 * L, 0.035
    width = (x1 - x0 - gap * (n - 1)) / n
    for i in range(n):  # the row of side windows is what says "bus"
        x = x0 + i * (width + gap)
        parts.append(_fill(_rect(x, win_top, x + width, win_bottom), "window"))
    parts += [_fill(_rect(0.75 * L, win_top, 0.83 * L, bottom - 0.04), "door"),
              _fill(_rect(0.86 * L, win_top - 0.03, L - 0.02, top + 0.55), "window"),
              _fill(_rect(L - 0.04, bottom - 0.14, L, bottom - 0.06), "light")]
    for x in (0.18 * L, 0.88 * L):
        parts += [_fill(_circle(x, 1 - r, r), "wheel"), _fill(_circle(x, 1 - r, 0.5 * r, 12), "hub")]
    return parts


def _pedestrian(rng):
    head, cx = rng.uniform(0.065, 0.08), 0.3
    shoulder, hip = 2 * head + 0.04, rng.uniform(0.5, 0.56)
    sw, hw, stride = rng.uniform(0.08, 0.1), rng.uniform(0.06, 0.08), rng.uniform(0.0, 0.15)
    parts = []
    for side in (-1, 1):
        foot = (cx + side * stride, 0.97)
        parts += [_fill(_limb((cx + side * 0.035, hip - 0.02), foot, 0.07), "pants"),
                  _fill(_rect(foot[0] - 0.03, 0.95, foot[0] + 0.06, 1.0), "shoe")]
    torso = [(cx - sw, shoulder), (cx + sw, shoulder), (cx + hw, hip), (cx - hw, hip)]
    if rng.random() < 0.3:  # coat or dress: a longer, flared torso
        torso[2:] = [(cx + hw + 0.05, hip + 0.15), (cx - hw - 0.05, hip + 0.15)]
    parts.append(_fill(torso, "shirt"))
    for side in (-1, 1):
        hand = (cx + side * rng.uniform(0.06, 0.16), hip + rng.uniform(-0.03, 0.04))
        parts += [_fill(_limb((cx + side * sw * 0.85, shoulder + 0.02), hand, 0.05), "shirt"),
                  _fill(_circle(*hand, 0.028, 10), "skin")]
    parts += [_fill(_limb((cx, head), (cx, shoulder + 0.01), 0.04), "skin"),
              _fill(_circle(cx, head + 0.01, head, 16), "skin"),
              _fill(_circle(cx, head + 0.01, head * 1.06, 10, 180, 360), "hair")]
    return parts


def _bicycle(rng):
    r, base = rng.uniform(0.27, 0.32), rng.uniform(1.0, 1.15)
    rear, front = np.array([r, 1 - r]), np.array([r + base, 1 - r])
    bracket = rear + (0.42 * base, 0.03)
    seat = rear + (0.32 * base, -rng.uniform(0.45, 0.52))
    head_top, head_bottom = rear + (0.86 * base, -0.48), rear + (0.9 * base, -0.36)
    parts = []
    for hub in (rear, front):
        parts.append(_line(_circle(*hub, r), "tyre", 0.05, closed=True))
        for angle in np.radians([0, 60, 120]):  # spokes
            d = 0.95 * r * np.array([np.cos(angle), np.sin(angle)])
            parts.append(_line([hub - d, hub + d], "hub", 0.012))
    for a, b in ((rear, bracket), (rear, seat), (seat, bracket), (seat, head_top),
                 (bracket, head_bottom), (head_top, head_bottom), (head_bottom, front)):
        parts.append(_line([a, b], "frame", 0.045))
    saddle = seat + (-0.02, -0.08)
    handle = head_top + (-0.05, -0.1)
    parts += [_line([seat, saddle], "seat", 0.03),
              _fill([saddle + (-0.09, -0.02), saddle + (0.07, -0.03), saddle + (0.06, 0.02),
                     saddle + (-0.08, 0.03)], "seat"),
              _line([head_top, handle, handle + (-0.1, 0.0)], "seat", 0.03)]
    return parts


def _traffic_sign(rng):
    r = rng.uniform(0.22, 0.28)  # a big plate on a thin pole: unlike a person's small head
    cx, cy = 0.3, r + 0.01
    parts = [_fill(_rect(cx - 0.02, cy, cx + 0.02, 1.0), "pole")]
    shape = rng.choice(["circle", "triangle", "octagon"])
    if shape == "circle":
        variant = rng.integers(3)
        if variant == 0:  # prohibition / speed limit: red ring, white face, dark figures
            parts += [_fill(_circle(cx, cy, r), "sign_red"), _fill(_circle(cx, cy, 0.75 * r), "sign_white"),
                      _line(_circle(cx - 0.2 * r, cy, 0.22 * r, 12), "ink", 0.05 * r, closed=True),
                      _line(_circle(cx + 0.25 * r, cy, 0.22 * r, 12), "ink", 0.05 * r, closed=True)]
        elif variant == 1:  # no entry
            parts += [_fill(_circle(cx, cy, r), "sign_red"),
                      _fill(_rect(cx - 0.65 * r, cy - 0.16 * r, cx + 0.65 * r, cy + 0.16 * r), "sign_white")]
        else:  # mandatory direction: blue disc, white arrow
            tip = (cx, cy - 0.6 * r)
            parts += [_fill(_circle(cx, cy, r), "sign_blue"),
                      _line([(cx, cy + 0.6 * r), tip], "sign_white", 0.18 * r),
                      _fill([tip + np.array([0, -0.1 * r]), (cx + 0.35 * r, cy - 0.2 * r),
                             (cx - 0.35 * r, cy - 0.2 * r)], "sign_white")]
    elif shape == "triangle":
        up = rng.random() < 0.7  # warning (point up) or give way (point down)
        angles = (-90, 30, 150) if up else (90, 210, 330)
        corners = np.array([(cx + 1.15 * r * np.cos(np.radians(a)), cy + 1.15 * r * np.sin(np.radians(a)))
                            for a in angles])
        centre = corners.mean(0)
        parts += [_fill(corners, "sign_red"), _fill(centre + 0.62 * (corners - centre), "sign_white")]
        if up:
            parts += [_line([(cx, cy - 0.35 * r), (cx, cy + 0.15 * r)], "ink", 0.12 * r),
                      _fill(_circle(cx, cy + 0.35 * r, 0.08 * r, 8), "ink")]
    else:  # stop
        parts += [_fill(_circle(cx, cy, r, 8, 22.5, 382.5), "sign_red"),
                  _line(_circle(cx, cy, 0.86 * r, 8, 22.5, 382.5), "sign_white", 0.05 * r, closed=True),
                  _fill(_rect(cx - 0.6 * r, cy - 0.12 * r, cx + 0.6 * r, cy + 0.12 * r), "sign_white")]
    return parts


_BUILDERS = {"car": _car, "truck": _truck, "bus": _bus, "pedestrian": _pedestrian,
             "bicycle": _bicycle, "traffic_sign": _traffic_sign}


def object_parts(cls: str, rng: np.random.Generator) -> Tuple[List[Part], Tuple[float, float]]:
    """A random member of the class's shape family, moved so its bounding box starts at 0."""
    if cls not in _BUILDERS:
        raise ValueError(f"unknown class {cls!r}; expected one of {', '.join(CLASSES)}")
    parts = _BUILDERS[cls](rng)
    low, high = _bounds(parts)
    return [replace(p, points=p.points - low) for p in parts], tuple(high - low)


def _bounds(parts):
    low = np.min([p.points.min(0) - p.width / 2 for p in parts], axis=0)
    high = np.max([p.points.max(0) + p.width / 2 for p in parts], axis=0)
    return low, high


def _place(parts, size, scale, anchor, flip=False, angle_deg=0.0):
    """Object units -> pixels: the object's bottom-centre lands on `anchor`."""
    w, h = size
    a = np.radians(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    placed = []
    for p in parts:
        q = p.points - (w / 2, h)
        if flip:
            q = q * (-1, 1)
        placed.append(replace(p, points=q @ rotation.T * scale + anchor, width=p.width * scale))
    return placed


# --------------------------------------------------------------------------- palettes
_PAINTS = [(235, 235, 235), (190, 192, 196), (30, 30, 34), (28, 48, 110), (160, 25, 30),
           (95, 98, 104), (30, 70, 45), (200, 185, 150), (210, 120, 30), (60, 110, 170)]
_LIVERIES = [(235, 190, 30), (200, 40, 35), (235, 235, 230), (40, 90, 170), (60, 140, 70), (230, 120, 30)]
_SKINS = [(241, 194, 160), (224, 172, 130), (198, 134, 94), (141, 85, 54), (92, 58, 40)]
_HAIRS = [(25, 20, 18), (70, 45, 25), (120, 80, 40), (200, 170, 110), (140, 140, 140)]
_TROUSERS = [(40, 55, 90), (30, 30, 32), (150, 130, 100), (90, 90, 95), (60, 80, 120)]


def _hsv(h, s, v):
    return tuple(255 * c for c in colorsys.hsv_to_rgb(h, s, v))


def _pick(rng, colours, spread=10.0):
    colour = np.asarray(colours[rng.integers(len(colours))], np.float64)
    return tuple(np.clip(colour + rng.normal(0, spread, 3), 0, 255))


def _photo_palette(rng) -> Dict[str, tuple]:
    """Real-world colours: car paints, skin tones, grey asphalt-era materials."""
    muted = lambda: tuple(rng.uniform(30, 220, 3))
    return {"body": _pick(rng, _PAINTS), "livery": _pick(rng, _LIVERIES), "cargo": _pick(rng, _PAINTS + [(225, 225, 220)] * 3),
            "window": _pick(rng, [(45, 58, 72)], 8), "wheel": (28, 28, 30), "hub": _pick(rng, [(165, 165, 170)]),
            "light": (235, 232, 210), "tail": (170, 25, 25), "dark": (45, 45, 48),
            "stripe": _pick(rng, _PAINTS), "door": _pick(rng, [(55, 65, 75)], 6),
            "skin": _pick(rng, _SKINS, 6), "hair": _pick(rng, _HAIRS, 6), "shirt": muted(),
            "pants": _pick(rng, _TROUSERS), "shoe": (35, 30, 28), "frame": _pick(rng, _PAINTS),
            "tyre": (25, 25, 25), "seat": (35, 35, 35), "pole": _pick(rng, [(135, 138, 142)]),
            "sign_red": _pick(rng, [(190, 28, 32)], 8), "sign_white": (235, 235, 232),
            "sign_blue": (25, 75, 165), "ink": (25, 25, 25)}


def _flat_palette(rng) -> Dict[str, tuple]:
    """Cartoon / poster colours: saturated and flat."""
    bright = lambda: _hsv(rng.uniform(0, 1), rng.uniform(0.55, 0.95), rng.uniform(0.8, 1.0))
    return {"body": bright(), "livery": bright(), "cargo": bright(), "window": (170, 220, 250), "wheel": (50, 50, 55),
            "hub": (210, 210, 215), "light": (255, 235, 110), "tail": (235, 50, 50), "dark": (70, 70, 75),
            "stripe": bright(), "door": (95, 145, 190), "skin": _pick(rng, _SKINS, 0),
            "hair": _pick(rng, _HAIRS, 0), "shirt": bright(), "pants": bright(), "shoe": (70, 50, 40),
            "frame": bright(), "tyre": (45, 45, 45), "seat": (60, 60, 60), "pole": (160, 160, 165),
            "sign_red": (225, 35, 35), "sign_white": (255, 255, 255), "sign_blue": (30, 100, 220),
            "ink": (20, 20, 20)}


# --------------------------------------------------------------------------- drawing
def _blend(canvas, points, colour, thickness=None, closed=True, shade=None):
    """Antialiased polygon (thickness None) or polyline, alpha-blended onto a float canvas.

    Working on the part's bounding box only keeps a 128 px image at a few milliseconds.
    `shade(ys, xs)` returns a brightness factor, for the photo style's gradients.
    """
    pad = 2 + (thickness or 0)
    height, width = canvas.shape[:2]
    x0, y0 = np.maximum(np.floor(points.min(0) - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(points.max(0) + pad).astype(int), (width, height))
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = [np.round((points - (x0, y0)) * 16).astype(np.int32)]  # 4 fractional bits
    if thickness is None:
        cv2.fillPoly(mask, pts, 255, cv2.LINE_AA, shift=4)
    else:
        cv2.polylines(mask, pts, closed, 255, max(1, int(round(thickness))), cv2.LINE_AA, shift=4)
    alpha = mask.astype(np.float32)[..., None] / 255.0
    layer = np.asarray(colour, np.float32)
    if shade is not None:
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        layer = layer * shade(ys, xs)[..., None]
    region = canvas[y0:y1, x0:x1]
    region += alpha * (layer - region)


def _draw_part(canvas, part, colour, thickness=None, shade=None):
    if part.kind == "fill" and thickness is None:
        _blend(canvas, part.points, colour, None, shade=shade)
    else:
        _blend(canvas, part.points, colour, thickness or part.width, part.kind == "fill" or part.closed, shade)


def _gradient_shade(points, light, glossy):
    """Lit from above and one side; windows get a diagonal reflection streak."""
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)

    def shade(ys, xs):
        u, v = (xs - x0) / w, (ys - y0) / h
        factor = 1.2 - 0.45 * v + light * (u - 0.5)
        if glossy:
            factor = factor + 0.9 * (np.abs(u + 0.6 * v - 0.55) < 0.09)
        return np.clip(factor, 0.3, 2.0)
    return shade


def _draw_photo(canvas, parts, palette, rng, px):
    """Shaded, 3-D-ish: vehicle bodies are extruded toward a random side with a darker face."""
    light = rng.uniform(-0.4, 0.4)
    depth = np.array([rng.choice([-1, 1]) * rng.uniform(0.06, 0.12), -rng.uniform(0.04, 0.08)]) * px
    for part in parts:
        colour = np.asarray(palette[part.role])
        if part.kind == "fill" and part.role in ("body", "cargo", "livery"):
            for k in np.linspace(1.0, 0.25, 4):
                _blend(canvas, part.points + k * depth, colour * 0.6 + 10)
        glossy = part.role == "window"
        thickness = None if part.kind == "fill" else part.width
        shade = _gradient_shade(part.points, light, glossy) if part.kind == "fill" else None
        _draw_part(canvas, part, colour, thickness, shade)


_DETAIL_ROLES = {"sign_white", "ink", "hub", "light", "tail", "window", "door"}


def _draw_flat(canvas, parts, palette, outline):
    """Flat colours; `outline` > 0 adds black ink outlines (cartoon), 0 leaves them off (print)."""
    for part in parts:
        colour = palette[part.role]
        # Inner details and thin parts get a finer pen, or they drown in ink.
        pen = outline / 2 if part.role in _DETAIL_ROLES else outline
        if outline and part.kind == "fill":
            pen = max(1.0, min(pen, 0.25 * np.ptp(part.points, axis=0).min()))
        if part.kind == "line":
            if pen:
                _draw_part(canvas, part, (15, 15, 15), part.width + 2 * pen)
            _draw_part(canvas, part, colour, part.width)
        else:
            _draw_part(canvas, part, colour)
            if pen:
                _draw_part(canvas, part, (15, 15, 15), pen)


def _pencil_path(points, closed, rng, step, wobble):
    """Resample a polyline every `step` px and jitter it, like a hand-drawn stroke."""
    if closed:
        points = np.vstack([points, points[:1]])
    seg = np.hypot(*np.diff(points, axis=0).T)
    dist = np.concatenate([[0.0], np.cumsum(seg)])
    samples = np.linspace(0, dist[-1], max(2, int(dist[-1] / step) + 1))
    path = np.stack([np.interp(samples, dist, points[:, 0]), np.interp(samples, dist, points[:, 1])], 1)
    return path + rng.normal(0, wobble, path.shape)


def _draw_sketch(canvas, parts, rng, px_size):
    """Grey pencil outlines only, one or two slightly different passes per part, no fill."""
    grey = rng.uniform(35, 110)
    thin = max(1.0, px_size / 64)  # about one pixel after downsampling
    for part in parts:
        closed = part.kind == "fill" or part.closed
        thickness = thin * (1.6 if part.kind == "line" and part.width > 3 * thin else 1.0)
        for _ in range(int(rng.integers(1, 3))):
            path = _pencil_path(part.points, closed, rng, step=3.0, wobble=0.35 * thin)
            tone = np.clip(grey + rng.normal(0, 15), 0, 200)
            _blend(canvas, path, (tone, tone, tone), thickness, closed=False)


# --------------------------------------------------------------------------- backgrounds
_SKIES = [((90, 140, 210), (180, 210, 240)), ((150, 155, 165), (205, 207, 210)),
          ((70, 80, 140), (240, 170, 120)), ((170, 185, 200), (222, 222, 216))]


def _mottle(rng, height, width, strength):
    """Low-frequency texture: smooth blotches such as stains on asphalt or uneven light."""
    noise = rng.normal(0, 1, (6, 6)).astype(np.float32)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)[..., None] * strength


def _sky_and_skyline(canvas, rng, horizon):
    height, width = canvas.shape[:2]
    top, bottom = [np.clip(np.asarray(c, np.float32) + rng.normal(0, 8, 3), 0, 255)
                   for c in _SKIES[rng.integers(len(_SKIES))]]
    t = np.linspace(0, 1, max(horizon, 1), dtype=np.float32)[:, None, None]
    canvas[:horizon] = top + t * (bottom - top)
    for _ in range(int(rng.integers(3, 9))):  # buildings and trees standing on the horizon
        x, w = rng.uniform(-0.1, 1.0) * width, rng.uniform(0.08, 0.3) * width
        h = rng.uniform(0.05, 0.3) * height
        if rng.random() < 0.6:
            haze = 0.6 * rng.uniform(70, 170, 3) + 0.4 * bottom  # distant things fade into the sky
            _blend(canvas, _rect(x, horizon - h, x + w, horizon + 1), tuple(haze))
        else:
            _blend(canvas, _circle(x + w / 2, horizon - h / 2, w / 2, 16, ry=h / 2),
                   _pick(rng, [(50, 80, 45), (70, 95, 50)], 10))


def _street(rng, size, ground):
    """Side view of a street: sky, skyline, pavement, asphalt with lane dashes, texture."""
    canvas = np.zeros((size, size, 3), np.float32)
    horizon = int(np.clip(ground - rng.uniform(0.25, 0.55) * size, 0.08 * size, ground - 0.08 * size))
    _sky_and_skyline(canvas, rng, horizon)
    kerb = int(horizon + (ground - horizon) * rng.uniform(0.1, 0.4))
    canvas[horizon:kerb] = _pick(rng, [(165, 165, 160), (180, 170, 150)], 10)
    canvas[kerb:] = rng.uniform(80, 135) + rng.normal(0, 4, 3)
    y, dash = rng.uniform(kerb, size), rng.uniform(0.08, 0.16) * size
    paint = (230, 230, 225) if rng.random() < 0.7 else (225, 190, 60)
    for x in np.arange(rng.uniform(-dash, 0), size, 2 * dash):
        _blend(canvas, _rect(x, y, x + dash, y + 0.012 * size + 1), paint)
    canvas[horizon:] += _mottle(rng, size - horizon, size, 10)
    canvas += rng.normal(0, 5, canvas.shape).astype(np.float32)
    return canvas


def _cartoon_background(rng, size, ground, outline):
    sky = np.asarray(_hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.4), 1.0), np.float32)
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = sky
    if rng.random() < 0.8:
        top = ground - rng.uniform(0.0, 0.12) * size
        _blend(canvas, _rect(-5, top, size + 5, size + 5),
               _pick(rng, [(120, 200, 90), (170, 170, 175), (230, 200, 140)], 0))
        _blend(canvas, np.array([(-5.0, top), (size + 5.0, top)]), (15, 15, 15), outline, closed=False)
    if rng.random() < 0.5:  # a sun or a cloud in a corner
        cx, cy = rng.choice([0.15, 0.85]) * size, 0.15 * size
        if rng.random() < 0.5:
            _blend(canvas, _circle(cx, cy, 0.09 * size), (255, 220, 60))
            _blend(canvas, _circle(cx, cy, 0.09 * size), (15, 15, 15), outline)
        else:
            for dx in (-0.07, 0.0, 0.07):
                _blend(canvas, _circle(cx + dx * size, cy, 0.06 * size, ry=0.04 * size), (255, 255, 255))
    return canvas


def _paper(rng, size, ground):
    base = rng.uniform(232, 250)
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = (base, base - rng.uniform(0, 4), base - rng.uniform(2, 10))
    canvas += _mottle(rng, size, size, 3) + rng.normal(0, 2.5, canvas.shape).astype(np.float32)
    if rng.random() < 0.6:  # a pencil ground line
        line = np.array([(rng.uniform(0, 0.2) * size, ground), (rng.uniform(0.8, 1.0) * size, ground)])
        tone = rng.uniform(90, 160)
        _blend(canvas, _pencil_path(line, False, rng, 3.0, 0.5), (tone,) * 3, max(1, size // 90), closed=False)
    return canvas


# --------------------------------------------------------------------------- camera
def _sensor(image, rng):
    """What a real camera adds: lighting, slight blur, sensor noise, JPEG artefacts."""
    image = image.astype(np.float32) * rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)
    image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.8, 1.25)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.9))
    image = image + rng.normal(0, rng.uniform(2, 7), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 75))])
    return cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)  # channel order is irrelevant here


def _photograph(canvas, rng, size):
    """Random perspective (a quad inside the image fills the frame: no border), downsample, sensor."""
    big = canvas.shape[0]
    corners = np.float32([[0, 0], [big, 0], [big, big], [0, big]])
    outward = np.float32([[-1, -1], [1, -1], [1, 1], [-1, 1]])
    source = corners - outward * rng.uniform(0, 0.06 * big, (4, 2)).astype(np.float32)
    warp = cv2.getPerspectiveTransform(source, corners)
    image = cv2.warpPerspective(canvas, warp, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return _sensor(image, rng)


# --------------------------------------------------------------------------- billboards
_SLOGANS = ["NEW", "SALE", "DRIVE", "BUY NOW", "2026", "CITY", "SPEED", "GO!", "TOUR", "RENT"]


def _poster(cls_parts, size, rng, width, height):
    """The printed ad: flat background, optional slogan bar, the object in flat colours, halftone."""
    poster = np.empty((height, width, 3), np.float32)
    poster[:] = _hsv(rng.uniform(0, 1), rng.uniform(0.15, 0.6), rng.uniform(0.85, 1.0))
    area_top, area_bottom = 0.0, float(height)
    if rng.random() < 0.7:
        bar = rng.uniform(0.15, 0.2) * height
        at_top = rng.random() < 0.3
        y0 = 0.0 if at_top else height - bar
        _blend(poster, _rect(-2, y0, width + 2, y0 + bar), _hsv(rng.uniform(0, 1), 0.8, rng.uniform(0.3, 0.9)))
        text = _SLOGANS[rng.integers(len(_SLOGANS))]
        scale = 0.7 * bar / cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, 1.0, 2)[0][1]
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 2)
        mask = np.zeros((height, width), np.uint8)
        cv2.putText(mask, text, (int(max(2, (width - tw) / 2)), int(y0 + (bar + th) / 2)),
                    cv2.FONT_HERSHEY_DUPLEX, scale, 255, max(1, int(scale * 1.5)), cv2.LINE_AA)
        poster += (mask.astype(np.float32)[..., None] / 255) * (255 - poster)
        area_top, area_bottom = (bar, height) if at_top else (0, height - bar)
    w, h = size
    area = area_bottom - area_top
    scale = rng.uniform(0.82, 0.94) * min(width / w, area / h)
    anchor = (width / 2 + rng.uniform(-0.5, 0.5) * (width - w * scale), area_bottom - 0.06 * area)
    parts = _place(cls_parts, size, scale, anchor, flip=rng.random() < 0.5)
    outline = max(1.0, width / 90) if rng.random() < 0.5 else 0
    _draw_flat(poster, parts, _flat_palette(rng), outline)
    if rng.random() < 0.6:  # halftone print screen
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        period = rng.uniform(2.5, 4.0)
        poster *= 0.82 + 0.18 * ((np.cos(2 * np.pi * xs / period) * np.cos(2 * np.pi * ys / period) + 1) / 2)[..., None]
    return poster


def _draw_billboard(canvas, quad, poster, frame, rng, ground):
    """Posts, frame and the poster warped into the (slightly angled) board quad."""
    height, width = canvas.shape[:2]
    post = _pick(rng, [(70, 72, 75), (110, 110, 112), (60, 75, 60)], 8)
    bottom_left, bottom_right = quad[3], quad[2]
    post_w = max(2.0, 0.05 * np.hypot(*(bottom_right - bottom_left)))
    for t in ((0.5,) if rng.random() < 0.3 else (0.22, 0.78)):
        x, y = bottom_left + t * (bottom_right - bottom_left)
        _blend(canvas, _rect(x - post_w / 2, y - 2, x + post_w / 2, max(ground, y + 2)), post,
               shade=_gradient_shade(_rect(x - post_w / 2, y, x + post_w / 2, ground), 0.8, False))
    _blend(canvas, quad, _pick(rng, [(235, 235, 230), (120, 120, 125), (40, 40, 42), (40, 90, 60)], 8))
    centre = quad.mean(0)
    span = np.maximum(np.abs(quad - centre).max(0), 1)
    inner = quad + (centre - quad) * frame / span
    x0, y0 = np.maximum(np.floor(inner.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(inner.max(0)).astype(int) + 1, (width, height))
    if x1 <= x0 or y1 <= y0:
        return
    ph, pw = poster.shape[:2]
    source = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    warp = cv2.getPerspectiveTransform(source, (inner - (x0, y0)).astype(np.float32))
    size = (x1 - x0, y1 - y0)
    image = cv2.warpPerspective(poster, warp, size, flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.ones((ph, pw), np.float32), warp, size, flags=cv2.INTER_LINEAR)[..., None]
    region = canvas[y0:y1, x0:x1]
    region += mask * (image - region)


def _billboard_quad(x0, y0, w, h, skew):
    """Board corners; `skew` shortens one vertical edge, as when the board is seen at an angle."""
    return np.array([[x0, y0 + max(skew, 0)], [x0 + w, y0 + max(-skew, 0)],
                     [x0 + w, y0 + h - max(-skew, 0)], [x0, y0 + h - max(skew, 0)]])


def _billboard_scene(parts, size, rng, big):
    ground = rng.uniform(0.85, 1.0) * big
    canvas = _street(rng, big, ground)
    w, h = size
    if w >= h:  # a wide landscape board for vehicles, a squarer one for upright objects
        board_w, aspect = rng.uniform(0.8, 0.96) * big, rng.uniform(1.2, 1.6)
    else:
        board_w, aspect = rng.uniform(0.62, 0.8) * big, rng.uniform(0.85, 1.1)
    board_h = board_w / aspect
    x0, y0 = rng.uniform(0.02, 0.98 - board_w / big) * big, rng.uniform(0.04, 0.18) * big
    quad = _billboard_quad(x0, y0, board_w, board_h, rng.uniform(-0.08, 0.08) * board_h)
    frame = rng.uniform(0.03, 0.06) * board_w
    poster = _poster(parts, size, rng, int(board_w - 2 * frame), int(board_h - 2 * frame))
    _draw_billboard(canvas, quad, poster, frame, rng, ground)
    return canvas


# --------------------------------------------------------------------------- public API
def render_object(cls: str, domain: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One random `cls` object drawn in `domain`: HxWx3 uint8 RGB, size x size. Photos and
    billboards are close-ups, or (ROADSIDE_SHARE of them) cut from a road scene as the
    drive's camera and detector frame them."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    if domain in ("photo", "billboard") and rng.random() < ROADSIDE_SHARE:
        image = _roadside_image(cls, domain, rng, size)
        if image is not None:
            return image
    big = size * SUPERSAMPLE
    parts, (w, h) = object_parts(cls, rng)
    if domain == "billboard":
        return _photograph(_billboard_scene(parts, (w, h), rng, big), rng, size)
    scale = rng.uniform(0.68, 0.94) * big / max(w, h)
    margin = 0.03 * big
    ground = rng.uniform(min(h * scale + margin, big - margin), big - margin)
    cx = rng.uniform(w * scale / 2 + margin, max(big - w * scale / 2 - margin, w * scale / 2 + margin))
    angle = 0.0 if domain == "photo" else rng.uniform(-6, 6)  # photos tilt through perspective instead
    placed = _place(parts, (w, h), scale, (cx, ground), flip=rng.random() < 0.5, angle_deg=angle)
    if domain == "photo":
        canvas = _street(rng, big, ground)
        shadow = np.zeros(canvas.shape[:2], np.float32)
        cv2.ellipse(shadow, (int(cx), int(ground)), (int(w * scale * 0.55), int(max(2, 0.05 * h * scale))),
                    0, 0, 360, 1.0, -1)
        canvas *= 1 - 0.5 * cv2.GaussianBlur(shadow, (0, 0), 2)[..., None]
        _draw_photo(canvas, placed, _photo_palette(rng), rng, scale)
        return _photograph(canvas, rng, size)
    if domain == "cartoon":
        outline = rng.uniform(0.022, 0.035) * big
        canvas = _cartoon_background(rng, big, ground, outline)
        _draw_flat(canvas, placed, _flat_palette(rng), outline)
    else:
        canvas = _paper(rng, big, ground)
        _draw_sketch(canvas, placed, rng, big)
    image = cv2.resize(np.clip(canvas, 0, 255), (size, size), interpolation=cv2.INTER_AREA)
    return np.round(image).astype(np.uint8)


def _roadside_position(cls, domain, rng):
    """Lateral position and depth (m) where the drive shows such an object."""
    side = rng.choice([-1, 1])
    if domain == "billboard":
        return side * rng.uniform(*BILLBOARD_X), rng.uniform(*BILLBOARD_Z)
    if cls in KERB:
        return side * rng.uniform(*KERB_X), rng.uniform(*KERB_Z)
    return side * rng.uniform(LANE_X - 0.4, LANE_X + 0.4), rng.uniform(*LANE_Z)


def _roadside_image(cls, domain, rng, size, tries: int = 20):
    """`cls` as a photo or billboard on a road scene, framed as the drive frames it: sometimes
    something farther away behind it, the sensor at frame resolution, then its square region
    cut out and resized. None if no placement of `tries` lands inside the frame."""
    width, height = ROADSIDE_FRAME
    scene, project, _, focal = _road_scene(rng, ROADSIDE_FRAME)
    parts, dims = object_parts(cls, rng)
    for _ in range(tries):
        x, z = _roadside_position(cls, domain, rng)
        canvas = scene.copy()
        if rng.random() < 0.5:  # a road user or billboard behind it, as on a busy road
            other = CLASSES[rng.integers(len(CLASSES))]
            other_domain = "billboard" if rng.random() < 0.3 else "photo"
            other_x, other_z = _roadside_position(other, other_domain, rng)
            _draw_road_object(canvas, other, other_domain, object_parts(other, rng), rng, other_x,
                              max(other_z, z + 5), project, focal)
        _, box = _draw_road_object(canvas, cls, domain, (parts, dims), rng, x, z, project, focal)
        if box is not None and box[2] >= _MIN_REGION * height:
            left, top, side, _ = box
            crop = _sensor(canvas[top:top + side, left:left + side], rng)
            return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return None


def _draw_road_object(canvas, cls, domain, shape, rng, x, z, project, focal):
    """Draw one road user (photo) or billboard at (x, z), as the drive does: (its drawn
    bounds, its square region or None if cut by the frame edge)."""
    parts, dims = shape
    height, width = canvas.shape[:2]
    if domain == "billboard":
        return _drive_billboard(canvas, parts, dims, rng, x, z, project, width, height)
    return _drive_object(canvas, parts, dims, rng, cls, x, z, project, focal, width, height)


def image_rng(seed: int, domain: str, cls: str, index: int) -> np.random.Generator:
    """Each image has its own stream, so any image can be regenerated alone, in any order."""
    return np.random.default_rng([seed, DOMAINS.index(domain), CLASSES.index(cls), index])


def generate_dataset(root, per_class_domain: int, size: int = 64, seed: int = 0,
                     progress: bool = True, classes: Sequence[str] = CLASSES,
                     domains: Sequence[str] = DOMAINS) -> Path:
    """Write `root/<domain>/<class>/<i>.png` (the layout the training code reads)."""
    from tqdm import tqdm

    root = Path(root)
    jobs = [(d, c, i) for d in domains for c in classes for i in range(per_class_domain)]
    for domain, cls in {(d, c) for d, c, _ in jobs}:
        (root / domain / cls).mkdir(parents=True, exist_ok=True)
    for domain, cls, i in tqdm(jobs, desc=f"world {root.name}", disable=not progress, unit="img"):
        image = render_object(cls, domain, image_rng(seed, domain, cls, i), size)
        cv2.imwrite(str(root / domain / cls / f"{i:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


# --------------------------------------------------------------------------- drive
# A forward-looking camera on a straight road: pinhole projection of ground points
# (lateral x, depth z) in metres. Road users are side views (they cross or stand at the
# kerb); billboards stand beside the road and show vehicle ads.
_HEIGHT_M = {"car": 1.5, "truck": 3.4, "bus": 3.2, "pedestrian": 1.75, "bicycle": 1.1, "traffic_sign": 2.6}
_SPEED = 2.0            # metres the camera moves per frame (a frame every 0.1 s at 72 km/h)
_CAMERA_HEIGHT = 1.5
_CONTEXT = 0.75         # the object fills this much of its region, as in the training images
_MIN_REGION = 0.12      # regions smaller than this fraction of the frame height are not reported
_MAX_OCCLUDED = 0.2     # nor objects whose box is covered more than this by nearer ones
KERB = ("pedestrian", "bicycle", "traffic_sign")
# Where the drive shows each kind of object: lateral offset from the road's centre and the
# depths at which it is on screen (m). The world's roadside images use the same places.
LANE_X, LANE_Z = 2.2, (20, 44)
KERB_X, KERB_Z = (5.5, 6.5), (9, 27)
BILLBOARD_X, BILLBOARD_Z = (8.5, 10), (26, 56)
# Training images framed as the drive frames its objects: a share of the photos and billboards
# are cut from a road scene (a smaller frame than the drive's, so cheaper; the same optics).
ROADSIDE_SHARE = 0.5
ROADSIDE_FRAME = (960, 540)


@dataclass
class _Actor:
    """A stream of road users (or billboards) at one lateral position, coming toward the camera.

    Each time one has passed, the next one appears far ahead (a new cycle) with a new look
    and the next class of `classes` in turn, so a short drive still shows every class.
    """
    key: int
    domain: str
    x: float                      # lateral position (m)
    z_range: Tuple[float, float]  # depths (m) at which it is on screen
    z0: float                     # depth at frame 0, before wrapping
    speed: float = _SPEED         # approach speed (m per frame): oncoming traffic is faster
    classes: Sequence[str] = VEHICLES
    first: int = 0                # index in `classes` of the class at cycle 0

    def depth(self, t):
        """(depth, cycle)."""
        low, high = self.z_range
        travelled = self.z0 - low - self.speed * t
        cycle = int(np.floor(travelled / (high - low)))
        return low + travelled - cycle * (high - low), cycle

    def cls(self, cycle):
        return self.classes[(self.first - cycle) % len(self.classes)]


def _square_box(x0, y0, x1, y1, frame_w, frame_h, context=_CONTEXT, top=None):
    """A square region around a box, as the training crops frame objects, kept inside the frame."""
    side = min(max(x1 - x0, y1 - y0) / context, frame_w, frame_h)
    left = np.clip((x0 + x1) / 2 - side / 2, 0, frame_w - side)
    upper = (y0 + y1) / 2 - side / 2 if top is None else top
    upper = np.clip(upper, 0, frame_h - side)
    return int(left), int(upper), int(side), int(side)


def _covered(box, nearer) -> float:
    """Fraction of `box` (x0, y0, x1, y1) covered by the union of the `nearer` boxes
    (on a coarse grid: exact enough for a 20 % rule)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0 or not nearer:
        return 0.0
    xs, ys = np.meshgrid(np.linspace(x0, x1, 24), np.linspace(y0, y1, 24))
    hidden = np.zeros(xs.shape, bool)
    for a0, b0, a1, b1 in nearer:
        hidden |= (xs >= a0) & (xs <= a1) & (ys >= b0) & (ys <= b1)
    return float(hidden.mean())


def _road_scene(rng, size):
    """The drive camera's view of an empty straight road: sky and skyline, verges, pavement,
    asphalt. Returns (canvas float32 HxWx3, project(x, z, up) -> pixel, depth at the bottom
    row, focal length in pixels)."""
    width, height = size
    focal, horizon = 0.8 * width, int(height * rng.uniform(0.4, 0.46))
    canvas = np.zeros((height, width, 3), np.float32)
    _sky_and_skyline(canvas, rng, horizon)
    canvas[horizon:] = _pick(rng, [(85, 120, 60), (120, 115, 80)], 8)  # verges

    def project(x, z, up=0.0):
        return np.array([width / 2 + focal * x / z, horizon + focal * (_CAMERA_HEIGHT - up) / z])

    near = focal * _CAMERA_HEIGHT / (height - horizon)  # depth at the bottom row
    far = 400.0
    for half, colour in ((9.0, (165, 165, 160)), (7.0, (90, 90, 92))):  # pavement, then asphalt
        road = np.array([project(-half, far), project(half, far), project(half, near), project(-half, near)])
        _blend(canvas, road, colour)
    canvas[horizon:] += _mottle(rng, height - horizon, width, 6)
    return canvas, project, near, focal


def render_drive(n_frames: int, seed: int, size=(1280, 720)):
    """Frames of a road scene with real road users and roadside billboards of vehicles.

    Returns a list of (frame HxWx3 uint8 RGB, objects); each object is {class, domain
    ('photo' or 'billboard'), box (x, y, w, h)} with box a square region of interest inside
    the frame, framed like the training images. Like a labelled driving dataset, the objects
    list leaves out what is drawn but cut by the frame edge, too small (a region under
    12 % of the frame height) or more than 20 % hidden behind nearer objects. Every frame
    holds real road users and nearly every one a billboard (a near truck can hide both);
    over 24 frames every class appears.
    """
    width, height = size
    rng = np.random.default_rng([seed, 1])
    background, project, near, focal = _road_scene(rng, size)

    side = rng.choice([-1, 1])
    phase = lambda span: rng.uniform(0, span)
    first = lambda: int(rng.integers(3))  # every class list here has 3 classes
    # Billboards half a range apart on either side, so one is always in view; vehicles in
    # the two lanes (the oncoming one faster); people, bicycles and signs at both kerbs.
    actors = [_Actor(0, "billboard", side * rng.uniform(*BILLBOARD_X), BILLBOARD_Z, 26 + phase(15), first=first()),
              _Actor(1, "billboard", -side * rng.uniform(*BILLBOARD_X), BILLBOARD_Z, 41 + phase(15), first=first()),
              _Actor(2, "photo", side * LANE_X, LANE_Z, 20 + phase(24), speed=1.2, first=first()),
              _Actor(3, "photo", -side * LANE_X, LANE_Z, 20 + phase(24), speed=3.0, first=first()),
              _Actor(4, "photo", side * rng.uniform(*KERB_X), KERB_Z, 9 + phase(18), classes=KERB, first=first()),
              _Actor(5, "photo", -side * rng.uniform(*KERB_X), KERB_Z, 9 + phase(18), classes=KERB, first=first())]
    frames = []
    for t in range(n_frames):
        canvas = background.copy()
        offset = (_SPEED * t) % 10
        for k in range(1, 40):  # centre-line dashes sliding toward the camera
            z0, z1 = max(k * 10 - offset, near), k * 10 - offset + 4
            if z1 > near:
                _blend(canvas, np.array([project(-0.1, z1), project(0.1, z1), project(0.1, z0), project(-0.1, z0)]),
                       (225, 225, 220))
        drawn = []
        for actor in sorted(actors, key=lambda a: -a.depth(t)[0]):  # far to near
            z, cycle = actor.depth(t)
            look = np.random.default_rng([seed, 2, actor.key, cycle + 10_000])
            cls = actor.cls(cycle)
            bounds, box = _draw_road_object(canvas, cls, actor.domain, object_parts(cls, look), look,
                                            actor.x, z, project, focal)
            drawn.append((bounds, box, {"class": cls, "domain": actor.domain, "box": box}))
        objects = []
        for i, (bounds, box, obj) in enumerate(drawn):
            nearer = [b for b, _, _ in drawn[i + 1:]]
            if box is not None and box[2] >= _MIN_REGION * height and _covered(bounds, nearer) <= _MAX_OCCLUDED:
                objects.append(obj)
        frames.append((_sensor(canvas, np.random.default_rng([seed, 3, t])), objects))
    return frames


def _drive_object(canvas, parts, size, rng, cls, x, z, project, focal, width, height):
    w, h = size
    scale = focal * _HEIGHT_M[cls] / z / h
    anchor = project(x, z)
    placed = _place(parts, size, scale, anchor, flip=rng.random() < 0.5)
    shadow = np.zeros(canvas.shape[:2], np.float32)
    cv2.ellipse(shadow, tuple(int(v) for v in anchor), (int(w * scale * 0.55), int(max(2, 0.05 * h * scale))),
                0, 0, 360, 1.0, -1)
    canvas *= 1 - 0.5 * cv2.GaussianBlur(shadow, (0, 0), 2)[..., None]
    _draw_photo(canvas, placed, _photo_palette(rng), rng, scale)
    (x0, y0), (x1, y1) = _bounds(placed)
    bounds = (x0, y0, x1, y1)
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return bounds, None  # cut by the frame edge: drawn but not reported
    return bounds, _square_box(x0, y0, x1, y1, width, height)


def _drive_billboard(canvas, parts, size, rng, x, z, project, width, height):
    """A 6 m x 3 m board on 4.5 m posts (above the traffic), turned slightly toward the road."""
    turn = -np.sign(x) * 1.5  # the far edge is nearer the road
    left, right = project(x - 3, z - turn / 2, 7.5), project(x + 3, z + turn / 2, 7.5)
    left_low, right_low = project(x - 3, z - turn / 2, 4.5), project(x + 3, z + turn / 2, 4.5)
    quad = np.array([left, right, right_low, left_low])
    board_w = quad[:, 0].max() - quad[:, 0].min()
    frame = 0.04 * board_w
    poster = _poster(parts, size, rng, max(8, int(board_w - 2 * frame)), max(4, int(board_w / 2 - 2 * frame)))
    _draw_billboard(canvas, quad, poster, frame, rng, project(x, z)[1])
    (x0, y0), (x1, y1) = quad.min(0), quad.max(0)
    bounds = (x0, y0, x1, y1)
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return bounds, None
    side = board_w / 0.83  # the board spans most of the region's width, posts below, as in training
    return bounds, _square_box(x0, y0, x1, y1, width, height, context=board_w / side, top=y0 - 0.1 * side)
