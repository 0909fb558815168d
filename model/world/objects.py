"""Procedural objects: each category is a drawing with jittered shape, palette and proportions.

A drawer takes (rng, height_px) and returns an RGBA sprite whose alpha is the object's exact mask.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

Drawer = Callable[[np.random.Generator, int], Image.Image]

SKIN = [(255, 220, 190), (235, 190, 150), (200, 150, 110), (150, 100, 70), (100, 65, 45)]
CLOTHES = [(200, 40, 40), (40, 80, 190), (40, 150, 70), (230, 200, 40), (120, 60, 160),
           (30, 30, 30), (240, 240, 240), (240, 130, 30), (90, 90, 100)]


def _jitter(rng: np.random.Generator, colour, amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _pick(rng: np.random.Generator, palette, amount: int = 25) -> tuple[int, int, int]:
    return _jitter(rng, palette[rng.integers(len(palette))], amount)


def _canvas(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGBA", (max(2, int(width)), max(2, int(height))), (0, 0, 0, 0))
    return image, ImageDraw.Draw(image)


def _textured(rng: np.random.Generator, sprite: Image.Image, strength: float = 0.12) -> Image.Image:
    """Modulate the flat colours with smooth noise so surfaces look like material, not paint."""
    rgba = np.asarray(sprite).astype(np.float32)
    h, w = rgba.shape[:2]
    coarse = rng.standard_normal((max(2, h // 8), max(2, w // 8))).astype(np.float32)
    noise = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR))
    fine = rng.standard_normal((h, w)).astype(np.float32) * 0.3
    rgba[..., :3] *= (1 + strength * (noise + fine))[..., None]
    return Image.fromarray(np.clip(rgba, 0, 255).astype(np.uint8), "RGBA")


def person(rng, h):
    w = h * rng.uniform(0.32, 0.42)
    image, d = _canvas(w, h)
    skin, shirt, pants = _pick(rng, SKIN, 10), _pick(rng, CLOTHES), _pick(rng, CLOTHES)
    head = h * rng.uniform(0.11, 0.14)
    cx = w / 2
    d.ellipse([cx - head * 0.8, 0, cx + head * 0.8, head * 2], fill=skin)
    d.chord([cx - head * 0.85, -head * 0.1, cx + head * 0.85, head * 1.2], 180, 360, fill=_pick(rng, [(40, 25, 10), (120, 80, 30), (200, 170, 90), (20, 20, 20)]))
    top, waist = head * 2, h * rng.uniform(0.5, 0.58)
    d.polygon([(cx - w * 0.3, top), (cx + w * 0.3, top), (cx + w * 0.24, waist), (cx - w * 0.24, waist)], fill=shirt)
    arm = w * 0.1
    d.polygon([(0, top + arm), (w * 0.2, top), (w * 0.2 + arm, top + arm), (arm, waist)], fill=shirt)
    d.polygon([(w, top + arm), (w * 0.8, top), (w * 0.8 - arm, top + arm), (w - arm, waist)], fill=shirt)
    d.polygon([(cx - w * 0.24, waist), (cx - 2, waist), (cx - w * 0.05, h), (cx - w * 0.25, h)], fill=pants)
    d.polygon([(cx + 2, waist), (cx + w * 0.24, waist), (cx + w * 0.25, h), (cx + w * 0.05, h)], fill=pants)
    return _textured(rng, image)


def baby(rng, h):
    w = h * rng.uniform(0.75, 0.95)
    image, d = _canvas(w, h)
    skin, suit = _pick(rng, SKIN, 10), _pick(rng, [(250, 200, 220), (190, 220, 250), (250, 250, 200), (220, 250, 220)], 15)
    head = h * rng.uniform(0.22, 0.27)
    cx = w / 2
    d.ellipse([w * 0.05, h * 0.38, w * 0.95, h], fill=suit)                         # round, sitting body
    d.ellipse([cx - head, 0, cx + head, head * 2], fill=skin)                        # big head
    d.ellipse([w * 0.02, h * 0.45, w * 0.25, h * 0.65], fill=skin)                   # hands
    d.ellipse([w * 0.75, h * 0.45, w * 0.98, h * 0.65], fill=skin)
    eye = head * 0.12
    for ex in (cx - head * 0.4, cx + head * 0.4):
        d.ellipse([ex - eye, head * 0.8, ex + eye, head * 0.8 + 2 * eye], fill=(40, 30, 30))
    d.ellipse([cx - head * 0.3, head * 1.3, cx + head * 0.3, head * 1.7], fill=(150, 40, 50))   # crying mouth
    return _textured(rng, image, 0.08)


def dog(rng, h):
    w = h * rng.uniform(1.3, 1.7)
    image, d = _canvas(w, h)
    fur = _pick(rng, [(120, 70, 30), (30, 25, 20), (220, 180, 110), (240, 235, 225), (160, 110, 60)])
    body_top, body_bottom = h * 0.35, h * 0.72
    d.ellipse([w * 0.15, body_top, w * 0.8, body_bottom], fill=fur)
    leg = w * 0.07
    for x in (w * 0.2, w * 0.32, w * 0.62, w * 0.72):
        d.rectangle([x, body_bottom - h * 0.1, x + leg, h], fill=fur)
    head = h * rng.uniform(0.18, 0.24)
    hx, hy = w * 0.8, h * 0.3
    d.ellipse([hx - head, hy - head, hx + head, hy + head], fill=fur)
    d.ellipse([hx, hy - head * 0.3, hx + head * 1.6, hy + head * 0.6], fill=fur)   # snout
    d.ellipse([hx + head * 1.3, hy - head * 0.25, hx + head * 1.6, hy + head * 0.1], fill=(20, 20, 20))
    ear = _jitter(rng, tuple(int(c * 0.6) for c in fur), 10)
    d.polygon([(hx - head * 0.8, hy - head * 0.3), (hx - head * 0.2, hy - head * 0.9), (hx - head * 0.5, hy + head * 0.8)], fill=ear)
    d.line([(w * 0.17, h * 0.45), (0, h * rng.uniform(0.1, 0.4))], fill=fur, width=max(2, int(h * 0.06)))
    return _textured(rng, image)


def car(rng, h):
    w = h * rng.uniform(2.0, 2.6)
    image, d = _canvas(w, h)
    paint = _pick(rng, [(200, 30, 30), (30, 60, 160), (230, 230, 230), (30, 30, 30), (150, 150, 160), (230, 190, 30), (30, 120, 60)])
    body_top = h * rng.uniform(0.38, 0.48)
    d.rounded_rectangle([0, body_top, w, h * 0.82], radius=h * 0.12, fill=paint)
    cab_left, cab_right = w * rng.uniform(0.18, 0.3), w * rng.uniform(0.68, 0.8)
    d.polygon([(cab_left, body_top), (cab_left + w * 0.1, h * 0.05), (cab_right - w * 0.08, h * 0.05), (cab_right, body_top)], fill=paint)
    glass = _jitter(rng, (150, 190, 220), 15)
    mid = (cab_left + cab_right) / 2
    d.polygon([(cab_left + w * 0.04, body_top - 2), (cab_left + w * 0.11, h * 0.12), (mid - 3, h * 0.12), (mid - 3, body_top - 2)], fill=glass)
    d.polygon([(mid + 3, body_top - 2), (mid + 3, h * 0.12), (cab_right - w * 0.09, h * 0.12), (cab_right - w * 0.03, body_top - 2)], fill=glass)
    wheel = h * 0.2
    for x in (w * 0.2, w * 0.8):
        d.ellipse([x - wheel, h - 2 * wheel, x + wheel, h], fill=(20, 20, 20))
        d.ellipse([x - wheel * 0.45, h - wheel * 1.45, x + wheel * 0.45, h - wheel * 0.55], fill=(170, 170, 170))
    d.ellipse([w - w * 0.05, body_top + h * 0.05, w - 1, body_top + h * 0.15], fill=(255, 240, 180))
    return _textured(rng, image, 0.06)


def waterfall(rng, h):
    w = h * rng.uniform(0.55, 0.85)
    image, d = _canvas(w, h)
    rock = _pick(rng, [(90, 85, 80), (110, 100, 85), (70, 70, 75)], 15)
    d.polygon([(0, 0), (w * 0.3, 0), (w * 0.25, h), (0, h)], fill=rock)
    d.polygon([(w * 0.7, 0), (w, 0), (w, h), (w * 0.75, h)], fill=rock)
    d.rectangle([w * 0.25, 0, w * 0.75, h], fill=(200, 225, 240))
    for _ in range(int(w * 0.6)):                                  # vertical streaks of falling water
        x = rng.uniform(w * 0.26, w * 0.74)
        y = rng.uniform(0, h * 0.8)
        shade = int(rng.uniform(150, 255))
        d.line([(x, y), (x, y + rng.uniform(h * 0.1, h * 0.4))], fill=(shade - 30, shade - 10, 255), width=1)
    d.ellipse([w * 0.1, h * 0.85, w * 0.9, h], fill=(245, 250, 255))   # foam
    return _textured(rng, image, 0.08)


def bird(rng, h):
    w = h * rng.uniform(1.1, 1.5)
    image, d = _canvas(w, h)
    plume = _pick(rng, [(200, 40, 30), (40, 90, 200), (240, 200, 40), (60, 50, 45), (240, 240, 240), (40, 140, 60)])
    d.ellipse([w * 0.15, h * 0.35, w * 0.75, h * 0.85], fill=plume)
    d.ellipse([w * 0.6, h * 0.2, w * 0.9, h * 0.55], fill=plume)
    d.polygon([(w * 0.88, h * 0.32), (w, h * 0.4), (w * 0.88, h * 0.46)], fill=(240, 150, 30))
    d.ellipse([w * 0.75, h * 0.3, w * 0.8, h * 0.36], fill=(10, 10, 10))
    wing = _jitter(rng, tuple(int(c * 0.65) for c in plume), 10)
    d.polygon([(w * 0.3, h * 0.5), (w * 0.6, h * 0.5), (w * 0.35, h * rng.uniform(0.0, 0.3))], fill=wing)
    d.polygon([(w * 0.2, h * 0.55), (0, h * 0.45), (0, h * 0.7)], fill=wing)
    d.line([(w * 0.45, h * 0.85), (w * 0.42, h)], fill=(200, 120, 40), width=2)
    d.line([(w * 0.55, h * 0.85), (w * 0.58, h)], fill=(200, 120, 40), width=2)
    return _textured(rng, image, 0.08)


def crowd(rng, h):
    w = h * rng.uniform(1.8, 2.6)
    image, d = _canvas(w, h)
    count = int(rng.integers(6, 13))
    for i in sorted(range(count), key=lambda _: rng.random()):
        cx = rng.uniform(0.08, 0.92) * w
        top = rng.uniform(0.0, 0.3) * h
        head = h * rng.uniform(0.08, 0.11)
        shirt = _pick(rng, CLOTHES)
        d.rounded_rectangle([cx - head * 1.9, top + head * 1.8, cx + head * 1.9, h], radius=head, fill=shirt)
        d.ellipse([cx - head, top, cx + head, top + head * 2.1], fill=_pick(rng, SKIN, 10))
    return _textured(rng, image)


def tree(rng, h):
    w = h * rng.uniform(0.55, 0.85)
    image, d = _canvas(w, h)
    bark = _pick(rng, [(100, 70, 40), (80, 60, 45), (120, 90, 60)], 10)
    leaves = _pick(rng, [(40, 120, 40), (60, 140, 50), (30, 90, 40), (90, 150, 60)], 15)
    cx = w / 2
    d.rectangle([cx - w * 0.07, h * 0.5, cx + w * 0.07, h], fill=bark)
    if rng.random() < 0.35:                                     # conifer
        for k in range(3):
            top = h * (0.0 + 0.18 * k)
            d.polygon([(cx, top), (cx + w * (0.3 + 0.07 * k), top + h * 0.35), (cx - w * (0.3 + 0.07 * k), top + h * 0.35)], fill=leaves)
    else:
        for _ in range(int(rng.integers(4, 8))):
            r = w * rng.uniform(0.2, 0.3)
            x, y = cx + rng.uniform(-0.2, 0.2) * w, h * rng.uniform(0.18, 0.45)
            d.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, leaves, 12))
    return _textured(rng, image, 0.2)


def lamp(rng, h):
    w = h * rng.uniform(0.35, 0.5)
    image, d = _canvas(w, h)
    shade = _pick(rng, [(250, 230, 180), (240, 240, 230), (200, 60, 50), (60, 100, 160)], 15)
    metal = _pick(rng, [(60, 60, 60), (180, 160, 110), (200, 200, 200)], 10)
    cx = w / 2
    shade_h = h * rng.uniform(0.2, 0.3)
    d.polygon([(cx - w * 0.25, 0), (cx + w * 0.25, 0), (cx + w * 0.5, shade_h), (cx - w * 0.5, shade_h)], fill=shade)
    d.rectangle([cx - w * 0.03, shade_h, cx + w * 0.03, h * 0.95], fill=metal)
    d.ellipse([cx - w * 0.3, h * 0.9, cx + w * 0.3, h], fill=metal)
    return _textured(rng, image, 0.05)


def windowpane(rng, h):
    w = h * rng.uniform(0.6, 1.1)
    image, d = _canvas(w, h)
    frame = _pick(rng, [(245, 245, 240), (130, 90, 50), (60, 60, 60)], 10)
    d.rectangle([0, 0, w, h], fill=frame)
    cols, rows = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    bar = max(2, int(h * 0.05))
    sky_top, sky_bottom = np.array(_jitter(rng, (110, 160, 230), 20)), np.array(_jitter(rng, (200, 225, 245), 15))
    pane_w, pane_h = (w - bar * (cols + 1)) / cols, (h - bar * (rows + 1)) / rows
    for r in range(rows):
        for c in range(cols):
            x0, y0 = bar + c * (pane_w + bar), bar + r * (pane_h + bar)
            for k in range(8):                                    # sky seen through the glass: a gradient
                colour = tuple(int(v) for v in sky_top + (sky_bottom - sky_top) * (r * 8 + k) / (rows * 8))
                d.rectangle([x0, y0 + pane_h * k / 8, x0 + pane_w, y0 + pane_h * (k + 1) / 8], fill=colour)
    return _textured(rng, image, 0.04)


def chair(rng, h):
    w = h * rng.uniform(0.5, 0.7)
    image, d = _canvas(w, h)
    wood = _pick(rng, [(150, 100, 50), (110, 70, 40), (200, 160, 100), (200, 40, 40), (40, 40, 40), (230, 230, 230)], 15)
    seat_y = h * rng.uniform(0.5, 0.6)
    leg = max(2, w * 0.08)
    d.rectangle([0, 0, leg, h], fill=wood)                                    # back leg + back post
    d.rectangle([0, h * 0.05, w * 0.35, h * 0.35], fill=wood)                 # backrest
    d.rectangle([0, seat_y, w, seat_y + h * 0.08], fill=wood)                 # seat
    d.rectangle([w - leg, seat_y, w, h], fill=wood)
    d.rectangle([w * 0.5, seat_y, w * 0.5 + leg, h * 0.97], fill=_jitter(rng, wood, 15))
    return _textured(rng, image)


def building(rng, h):
    w = h * rng.uniform(0.45, 0.8)
    image, d = _canvas(w, h)
    wall = _pick(rng, [(170, 80, 60), (200, 190, 170), (150, 150, 155), (220, 210, 180), (120, 110, 100)])
    d.rectangle([0, 0, w, h], fill=wall)
    glass = _pick(rng, [(60, 80, 110), (150, 180, 210), (40, 40, 50)], 15)
    cols, rows = int(rng.integers(3, 6)), int(rng.integers(5, 10))
    cell_w, cell_h = w / cols, h / rows
    for r in range(rows - 1):
        for c in range(cols):
            d.rectangle([c * cell_w + cell_w * 0.2, r * cell_h + cell_h * 0.25,
                         (c + 1) * cell_w - cell_w * 0.2, (r + 1) * cell_h - cell_h * 0.15], fill=_jitter(rng, glass, 10))
    d.rectangle([w * 0.4, h - cell_h * 0.9, w * 0.6, h], fill=(60, 45, 35))
    return _textured(rng, image, 0.1)


def mountain(rng, h):
    w = h * rng.uniform(1.4, 2.2)
    image, d = _canvas(w, h)
    rock = _pick(rng, [(110, 110, 130), (130, 110, 90), (90, 100, 110), (100, 120, 100)], 15)
    peak_x = w * rng.uniform(0.35, 0.65)
    ridge = [(0, h), (w * rng.uniform(0.1, 0.25), h * rng.uniform(0.4, 0.6)), (peak_x, 0),
             (w * rng.uniform(0.7, 0.85), h * rng.uniform(0.35, 0.6)), (w, h)]
    d.polygon(ridge, fill=rock)
    snow = rng.uniform(0.15, 0.3)
    left, right = ridge[1], ridge[3]
    d.polygon([(peak_x, 0), (peak_x + (right[0] - peak_x) * snow / right[1] * h, snow * h),
               (peak_x, snow * h * 0.8), (peak_x + (left[0] - peak_x) * snow / left[1] * h, snow * h)], fill=(245, 245, 250))
    return _textured(rng, image, 0.15)


def flower(rng, h):
    w = h * rng.uniform(0.5, 0.8)
    image, d = _canvas(w, h)
    petal = _pick(rng, [(230, 40, 60), (250, 220, 40), (240, 240, 250), (200, 80, 200), (250, 140, 30), (80, 100, 230)])
    cx, cy, r = w / 2, h * 0.3, w * rng.uniform(0.3, 0.45)
    d.line([(cx, cy), (cx + rng.uniform(-0.1, 0.1) * w, h)], fill=(50, 130, 40), width=max(2, int(w * 0.06)))
    d.ellipse([cx, h * 0.6, cx + w * 0.3, h * 0.72], fill=(60, 150, 50))
    n_petals = int(rng.integers(5, 9))
    for k in range(n_petals):
        a = 2 * np.pi * k / n_petals
        px, py = cx + np.cos(a) * r * 0.6, cy + np.sin(a) * r * 0.6
        d.ellipse([px - r * 0.4, py - r * 0.4, px + r * 0.4, py + r * 0.4], fill=_jitter(rng, petal, 10))
    d.ellipse([cx - r * 0.3, cy - r * 0.3, cx + r * 0.3, cy + r * 0.3], fill=(240, 190, 40))
    return _textured(rng, image, 0.06)


def bench(rng, h):
    w = h * rng.uniform(1.8, 2.5)
    image, d = _canvas(w, h)
    wood = _pick(rng, [(150, 100, 50), (110, 70, 40), (60, 110, 60), (180, 60, 40)], 15)
    iron = _pick(rng, [(40, 40, 40), (90, 90, 90)], 10)
    for k in range(2):                                                        # backrest slats
        d.rectangle([0, h * (0.05 + 0.17 * k), w, h * (0.15 + 0.17 * k)], fill=wood)
    d.rectangle([0, h * 0.52, w, h * 0.64], fill=wood)                        # seat
    for x in (w * 0.08, w * 0.88):
        d.rectangle([x, 0, x + w * 0.04, h], fill=iron)
    return _textured(rng, image)


DRAWERS: dict[str, Drawer] = {
    "person": person, "baby": baby, "dog": dog, "car": car, "waterfall": waterfall, "bird": bird,
    "crowd": crowd, "tree": tree, "lamp": lamp, "windowpane": windowpane, "chair": chair,
    "building": building, "mountain": mountain, "flower": flower, "bench": bench,
}
