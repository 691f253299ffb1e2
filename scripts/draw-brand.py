#!/usr/bin/env python3
"""Draw SAT Audio's icon and logo PNGs: the add-on's and the integration's brand images.

The design is the project's own: a house whose walls hold a sound wave, on a blue tile, and the
words "SAT Audio". Every shape is a union of round-capped strokes, drawn from its distance field
with elementwise arithmetic only (no trigonometry on the pixel grid, no sums), so a run gives the
same pixels on any machine, and the PNG writer below gives the same bytes for the same pixels.

Usage: .venv/bin/python scripts/draw-brand.py [--check]
  --check  write nothing; exit 1 naming every committed image that differs from a fresh drawing.
"""

import argparse
import itertools
import math
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

Color = tuple[float, float, float]
Stroke = tuple[float, float, float, float, float]  # ax, ay, bx, by, radius

TILE_TOP: Color = (0.23, 0.51, 0.96)
TILE_BOTTOM: Color = (0.11, 0.30, 0.75)
WHITE: Color = (1.0, 1.0, 1.0)
INK: Color = (0.12, 0.16, 0.24)  # the word "Audio" on a light background
INK_DARK: Color = (0.93, 0.95, 0.98)  # ... on a dark one
BLUE: Color = (0.15, 0.39, 0.88)  # the word "SAT" on a light background
BLUE_DARK: Color = (0.45, 0.68, 1.0)  # ... on a dark one


# --- geometry -----------------------------------------------------------------------------------


def _q(x: float) -> float:
    """Round a coordinate to a micro-unit, so libm's last bit in cos/sin never reaches a pixel."""
    return round(x, 6)


def polyline(points: list[tuple[float, float]], width: float, closed: bool = False) -> list[Stroke]:
    """Round-capped, round-joined strokes along the points."""
    if closed:
        points = [*points, points[0]]
    return [(*a, *b, width / 2) for a, b in itertools.pairwise(points)]


def arc(
    cx: float, cy: float, rx: float, ry: float, start: float, end: float, width: float
) -> list[Stroke]:
    """An elliptic arc from angle start to end (degrees, counter-clockwise on screen, 0 = right)."""
    steps = max(2, math.ceil(abs(end - start) / 4))
    points = []
    for i in range(steps + 1):
        t = math.radians(start + (end - start) * i / steps)
        points.append((_q(cx + rx * math.cos(t)), _q(cy - ry * math.sin(t))))
    return polyline(points, width)


def moved(strokes: list[Stroke], dx: float, dy: float, scale: float) -> list[Stroke]:
    """Strokes scaled about the origin, then shifted."""
    return [
        (
            _q(ax * scale + dx),
            _q(ay * scale + dy),
            _q(bx * scale + dx),
            _q(by * scale + dy),
            _q(r * scale),
        )
        for ax, ay, bx, by, r in strokes
    ]


# --- the mark: a house that holds a sound wave, on a rounded tile ------------------------------


def mark() -> list[Stroke]:
    """The house and its wave in a unit square (y down)."""
    house = polyline(
        [(0.16, 0.82), (0.16, 0.48), (0.5, 0.17), (0.84, 0.48), (0.84, 0.82)], 0.08, True
    )
    wave = []
    for x, half in ((0.29, 0.04), (0.395, 0.09), (0.5, 0.125), (0.605, 0.07), (0.71, 0.035)):
        wave += polyline([(x, 0.59 - half), (x, 0.59 + half)], 0.07)
    return house + wave


# --- the words: a stroke font of the seven letters "SAT Audio" needs ---------------------------
# Font units: capitals 1 high, the x-height 0.64; the baseline at y = 1.

FONT_STROKE = 0.17
LETTER_GAP = 0.24
GLYPHS: dict[str, tuple[float, Callable[[float], list[Stroke]]]] = {
    "S": (
        0.56,
        lambda w: (
            arc(0.28, 0.25, 0.25, 0.25, 28, 270, w) + arc(0.28, 0.75, 0.28, 0.25, 90, -152, w)
        ),
    ),
    "A": (
        0.78,
        lambda w: (
            polyline([(0, 1), (0.39, 0), (0.78, 1)], w) + polyline([(0.16, 0.64), (0.62, 0.64)], w)
        ),
    ),
    "T": (0.7, lambda w: polyline([(0, 0), (0.7, 0)], w) + polyline([(0.35, 0), (0.35, 1)], w)),
    "u": (
        0.5,
        lambda w: (
            polyline([(0, 0.36), (0, 0.75)], w)
            + arc(0.25, 0.75, 0.25, 0.25, 180, 360, w)
            + polyline([(0.5, 0.36), (0.5, 1)], w)
        ),
    ),
    "d": (
        0.56,
        lambda w: arc(0.28, 0.68, 0.28, 0.32, 0, 360, w) + polyline([(0.56, 0), (0.56, 1)], w),
    ),
    "i": (
        0.0,
        lambda w: polyline([(0, 0.36), (0, 1)], w) + polyline([(0, 0.08), (0, 0.08)], w * 1.15),
    ),
    "o": (0.6, lambda w: arc(0.3, 0.68, 0.3, 0.32, 0, 360, w)),
}


def text(word: str, x: float, top: float, cap: float) -> list[Stroke]:
    """The word's strokes, its capitals cap high, from x with their tops at top."""
    strokes: list[Stroke] = []
    for letter in word:
        width, draw = GLYPHS[letter]
        strokes += moved(draw(FONT_STROKE), x, top, cap)
        x += (width + LETTER_GAP) * cap
    return strokes


# --- rendering ----------------------------------------------------------------------------------


class Canvas:
    """Premultiplied RGBA in float64; shapes come in as distance fields (negative inside)."""

    def __init__(self, width: int, height: int, unit: float) -> None:
        self.unit = unit  # pixels per drawing unit
        self.rgba = np.zeros((height, width, 4))
        ys, xs = np.mgrid[0:height, 0:width]
        self.x = (xs + 0.5) / unit  # pixel centres in drawing units
        self.y = (ys + 0.5) / unit

    def strokes_distance(self, strokes: list[Stroke]) -> np.ndarray:
        """Distance to the union of the strokes, each computed only near its own box."""
        height, width = self.x.shape
        dist = np.full((height, width), np.inf)
        for ax, ay, bx, by, r in strokes:
            reach = r + 2 / self.unit
            x0 = max(0, math.floor((min(ax, bx) - reach) * self.unit))
            x1 = min(width, math.ceil((max(ax, bx) + reach) * self.unit) + 1)
            y0 = max(0, math.floor((min(ay, by) - reach) * self.unit))
            y1 = min(height, math.ceil((max(ay, by) + reach) * self.unit) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            px = self.x[y0:y1, x0:x1] - ax
            py = self.y[y0:y1, x0:x1] - ay
            dx, dy = bx - ax, by - ay
            length2 = dx * dx + dy * dy
            h = np.clip((px * dx + py * dy) / length2, 0.0, 1.0) if length2 else np.zeros_like(px)
            ex, ey = px - dx * h, py - dy * h
            d = np.sqrt(ex * ex + ey * ey) - r
            np.minimum(dist[y0:y1, x0:x1], d, out=dist[y0:y1, x0:x1])
        return dist

    def rounded_rect_distance(
        self, x0: float, y0: float, x1: float, y1: float, radius: float
    ) -> np.ndarray:
        """Distance to a rectangle with rounded corners."""
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        qx = np.abs(self.x - cx) - ((x1 - x0) / 2 - radius)
        qy = np.abs(self.y - cy) - ((y1 - y0) / 2 - radius)
        outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0.0) - radius

    def fill(self, dist: np.ndarray, color: Color | np.ndarray) -> None:
        """Paint color over the canvas where dist < 0, anti-aliased over one pixel."""
        alpha = np.clip(0.5 - dist * self.unit, 0.0, 1.0)[..., None]
        paint = np.concatenate([np.broadcast_to(color, (*alpha.shape[:2], 3)) * alpha, alpha], -1)
        self.rgba = paint + self.rgba * (1.0 - alpha)

    def gradient(self, y0: float, y1: float, top: Color, bottom: Color) -> np.ndarray:
        """A vertical gradient from top at y0 to bottom at y1, as a color per pixel."""
        t = np.clip((self.y - y0) / (y1 - y0), 0.0, 1.0)[..., None]
        return np.array(top) * (1.0 - t) + np.array(bottom) * t

    def to_rgba8(self) -> np.ndarray:
        """Straight (not premultiplied) 8-bit RGBA, as PNG stores it."""
        alpha = self.rgba[..., 3:]
        color = np.divide(
            self.rgba[..., :3], alpha, out=np.zeros_like(self.rgba[..., :3]), where=alpha > 0
        )
        out = np.concatenate([color, alpha], -1)
        return np.floor(np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def draw_tile(canvas: Canvas, x: float, y: float, size: float) -> None:
    """The icon: the mark in white on a blue rounded tile, size units wide at (x, y)."""
    tile = canvas.rounded_rect_distance(x, y, x + size, y + size, 0.22 * size)
    canvas.fill(tile, canvas.gradient(y, y + size, TILE_TOP, TILE_BOTTOM))
    canvas.fill(canvas.strokes_distance(moved(mark(), x, y, size)), WHITE)


def icon(size: int) -> np.ndarray:
    """A square icon size pixels wide."""
    canvas = Canvas(size, size, size)
    draw_tile(canvas, 0.0, 0.0, 1.0)
    return canvas.to_rgba8()


def logo(width: int, dark: bool = False) -> np.ndarray:
    """The tile and the words, 2.5:1, on a transparent background (dark: for a dark one)."""
    canvas = Canvas(width, round(width / 2.5), width / 2.5)
    draw_tile(canvas, 0.0, 0.0, 1.0)
    canvas.fill(canvas.strokes_distance(text("SAT", 1.17, 0.1, 0.34)), BLUE_DARK if dark else BLUE)
    canvas.fill(canvas.strokes_distance(text("Audio", 1.17, 0.56, 0.34)), INK_DARK if dark else INK)
    return canvas.to_rgba8()


# --- PNG ----------------------------------------------------------------------------------------


def png(pixels: np.ndarray) -> bytes:
    """8-bit RGBA PNG bytes, sRGB, each row filtered as the difference from the row above."""
    height, width, _ = pixels.shape
    rows = pixels.reshape(height, width * 4).astype(np.int16)
    up = np.diff(rows, axis=0, prepend=np.zeros((1, width * 4), np.int16)).astype(np.uint8)
    raw = np.concatenate([np.full((height, 1), 2, np.uint8), up], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        + chunk(b"sRGB", b"\x00")
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


# --- the files ----------------------------------------------------------------------------------

BRAND = "custom_components/sat_audio/brand"
IMAGES: dict[str, Callable[[], np.ndarray]] = {
    # The add-on store's icon (128x128) and logo (250x100).
    "addon/icon.png": lambda: icon(128),
    "addon/logo.png": lambda: logo(250),
    # Home Assistant's brand images: icons 256 and 512 square; logos with their short side
    # 128-256 (and 256-512 for @2x); dark_ variants for the dark theme.
    f"{BRAND}/icon.png": lambda: icon(256),
    f"{BRAND}/icon@2x.png": lambda: icon(512),
    f"{BRAND}/logo.png": lambda: logo(320),
    f"{BRAND}/logo@2x.png": lambda: logo(640),
    f"{BRAND}/dark_logo.png": lambda: logo(320, dark=True),
    f"{BRAND}/dark_logo@2x.png": lambda: logo(640, dark=True),
}


def render_all() -> dict[str, bytes]:
    """Every image's PNG bytes, by its path in the repository."""
    return {path: png(draw()) for path, draw in IMAGES.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for path, data in render_all().items():
        target = ROOT / path
        if args.check:
            if not target.is_file() or target.read_bytes() != data:
                stale.append(path)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        print(f"{path}: {len(data)} bytes")
    for path in stale:
        print(f"draw-brand: {path} differs from a fresh drawing", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
