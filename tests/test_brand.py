"""The add-on's and the integration's icons and logos: the sizes Home Assistant asks for, and
exactly what scripts/draw-brand.py draws (so the committed images are the script's, not edits)."""

import importlib.util
import struct
import zlib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BRAND = ROOT / "custom_components" / "sat_audio" / "brand"
# Home Assistant's brand images (home-assistant/brands README; custom integrations since 2026.3).
BRAND_NAMES = {
    f"{dark}{kind}{hdpi}.png"
    for dark in ("", "dark_")
    for kind in ("icon", "logo")
    for hdpi in ("", "@2x")
}


def _draw_brand() -> ModuleType:
    spec = importlib.util.spec_from_file_location("draw_brand", ROOT / "scripts" / "draw-brand.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _header(data: bytes) -> tuple[int, int, int, int]:
    """Width, height, bit depth and colour type of a PNG, from its IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, color


def _pixels(data: bytes) -> bytes:
    """The PNG's decompressed image data (its filtered rows)."""
    out, at = b"", 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT":
            out += data[at + 8 : at + 8 + length]
        at += 12 + length
    return zlib.decompress(out)


def _size(path: Path) -> tuple[int, int]:
    width, height, depth, color = _header(path.read_bytes())
    assert (depth, color) == (8, 6), f"{path.name}: 8-bit RGBA expected"
    return width, height


def test_addon_images():
    """The add-on store shows icon.png at 128x128 and logo.png at 250x100."""
    assert _size(ROOT / "addon" / "icon.png") == (128, 128)
    assert _size(ROOT / "addon" / "logo.png") == (250, 100)


def test_brand_icons():
    assert _size(BRAND / "icon.png") == (256, 256)
    assert _size(BRAND / "icon@2x.png") == (512, 512)


@pytest.mark.parametrize("dark", ["", "dark_"])
def test_brand_logos(dark: str):
    """Landscape; the short side 128-256 pixels, 256-512 for hDPI, which is twice the other."""
    width, height = _size(BRAND / f"{dark}logo.png")
    assert width >= height and 128 <= height <= 256
    assert _size(BRAND / f"{dark}logo@2x.png") == (2 * width, 2 * height)


def test_brand_folder_holds_only_brand_images():
    names = {path.name for path in BRAND.iterdir()}
    assert names <= BRAND_NAMES, f"Home Assistant reads none of {sorted(names - BRAND_NAMES)}"


def test_script_draws_every_image_byte_for_byte():
    drawn = _draw_brand().render_all()
    on_disk = {str(p.relative_to(ROOT)) for p in [*BRAND.iterdir(), *ROOT.glob("addon/*.png")]}
    assert set(drawn) == on_disk
    for path, data in drawn.items():
        committed = (ROOT / path).read_bytes()
        if committed == data:
            continue
        if _pixels(committed) == _pixels(data):
            pytest.fail(f"{path}: same pixels, other bytes: zlib {zlib.ZLIB_RUNTIME_VERSION}")
        pytest.fail(f"{path} is not what scripts/draw-brand.py draws: run it and commit")
