"""Synthetic number plates with known truth: Pakistani and Brazilian layouts, drawn by our own code.

`render_plate` draws one plate face-on — Punjab's older district plate
(white, green left strip, ``LEB-09`` over ``6881``), Punjab's newer
``AAA 999``/``AAA 9999`` and its government ``G`` series (green strip),
Sindh's yellow ``AAA-999``, Islamabad's white ``AAA-999`` with a blue strip
and ``ICT-ISLAMABAD`` under it, white Khyber Pakhtunkhwa and Balochistan
plates with the province's name under the number, Brazil's grey
``AAA-9999`` and Mercosur ``AAA9A99`` — with DejaVu fonts from Debian's
``fonts-dejavu-core``/``fonts-dejavu-extra`` packages (free licence; no
font is bundled). `render_scene` puts a plate onto a synthetic background
(a vehicle-coloured body, clutter, a road-grey ground) with a perspective
tilt, uneven lighting, blur and sensor noise, and returns the image and
its truth (canonical key, layout, province, the plate's box).

Everything is pure: the caller passes a `random.Random` (or a seed) and
gets the same image for the same seed, so tests and scenarios that use
these frames are repeatable. Images are numpy arrays, H x W x 3, uint8,
BGR, like camera frames.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.anpr.types import Box

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]

__all__ = [
    "LAYOUTS",
    "PlateRenderError",
    "PlateTruth",
    "font_path",
    "random_plate",
    "render_plate",
    "render_scene",
]

# Pakistani letter series avoid I, O and U (the rules file says so too).
_PK_LETTERS = "ABCDEFGHJKLMNPQRSTVWXYZ"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"
_DISTRICTS = ("LEA", "LEB", "LEC", "LED", "LEE", "LEF", "LEH", "LE", "FDA", "GA", "MNA")
_BR_CITIES = ("SP-SAO PAULO", "BA-SALVADOR", "RJ-RIO DE JANEIRO", "MG-BELO HORIZONTE")

# Plates about twice as wide as tall (a caption or a second row under the number).
_SQUARISH = ("punjab-district", "sindh", "islamabad", "khyber-pakhtunkhwa", "balochistan")
# Province names printed under the number on white plates whose shape is shared.
_CAPTIONS = {
    "islamabad": "ICT-ISLAMABAD",
    "khyber-pakhtunkhwa": "KHYBER PAKHTUNKHWA",
    "balochistan": "BALOCHISTAN",
}

# layout -> (province, country)
LAYOUTS: dict[str, tuple[str | None, str]] = {
    "punjab-district": ("Punjab", "PK"),
    "punjab-car": ("Punjab", "PK"),
    "punjab-motorcycle": ("Punjab", "PK"),
    "sindh": ("Sindh", "PK"),
    "punjab-government": ("Punjab", "PK"),
    "islamabad": ("Islamabad", "PK"),
    "khyber-pakhtunkhwa": ("Khyber Pakhtunkhwa", "PK"),
    "balochistan": ("Balochistan", "PK"),
    "br-old": (None, "BR"),
    "mercosur": (None, "BR"),
}

_FONT_FILES = {
    "condensed": ("DejaVuSansCondensed.ttf", "DejaVu Sans Condensed"),
    "condensed-bold": ("DejaVuSansCondensed-Bold.ttf", "DejaVu Sans Condensed:bold"),
    "bold": ("DejaVuSans-Bold.ttf", "DejaVu Sans:bold"),
}
_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))


class PlateRenderError(Exception):
    """A plate cannot be drawn here (a font or Pillow is missing, an unknown layout)."""


@dataclass(frozen=True)
class PlateTruth:
    """What a rendered image shows: the plate's key and layout, and where it is."""

    canonical: str
    rows: tuple[str, ...]
    layout: str
    province: str | None
    country: str
    box: Box
    year: str | None = None


@lru_cache(maxsize=8)
def font_path(style: str = "condensed") -> Path:
    """A DejaVu font file from the system's Debian packages (fc-match as a fallback)."""
    name, pattern = _FONT_FILES[style]
    for folder in _FONT_DIRS:
        if (folder / name).is_file():
            return folder / name
    if shutil.which("fc-match"):
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", pattern], capture_output=True, text=True, check=False
        ).stdout.strip()
        if found and Path(found).is_file() and "DejaVu" in found:
            return Path(found)
    raise PlateRenderError(
        f"font {name} not found: install fonts-dejavu-core and fonts-dejavu-extra "
        "(scripts/ensure-system-packages.sh)"
    )


def _pick(rng: random.Random, chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def random_plate(layout: str, rng: random.Random) -> tuple[tuple[str, ...], str, str | None]:
    """Printed rows, canonical key and year of a random plate in `layout`."""
    if layout == "punjab-district":
        series = rng.choice(_DISTRICTS)
        year = f"{rng.randint(5, 20):02d}"
        number = str(rng.randint(1, 9999))
        return (f"{series}-{year}", number), series + number, year
    if layout == "punjab-car":
        letters, digits = _pick(rng, _PK_LETTERS, 3), _pick(rng, _DIGITS, 3)
        return (f"{letters} {digits}",), letters + digits, None
    if layout == "punjab-motorcycle":
        letters, digits = _pick(rng, _PK_LETTERS, 3), _pick(rng, _DIGITS, 4)
        return (f"{letters} {digits}",), letters + digits, None
    if layout in ("sindh", "islamabad"):
        letters, digits = _pick(rng, _PK_LETTERS, 3), _pick(rng, _DIGITS, 3)
        return (f"{letters}-{digits}",), letters + digits, None
    if layout == "punjab-government":
        letters, digits = "G" + _pick(rng, _PK_LETTERS, 2), _pick(rng, _DIGITS, rng.choice((3, 4)))
        return (f"{letters} {digits}",), letters + digits, None
    if layout in ("khyber-pakhtunkhwa", "balochistan"):
        letters = _pick(rng, _PK_LETTERS, rng.choice((2, 3)))
        digits = _pick(rng, _DIGITS, rng.choice((3, 4)))
        return (f"{letters}-{digits}",), letters + digits, None
    if layout == "br-old":
        letters, digits = _pick(rng, _LETTERS, 3), _pick(rng, _DIGITS, 4)
        return (f"{letters}-{digits}",), letters + digits, None
    if layout == "mercosur":
        text = (
            _pick(rng, _LETTERS, 3)
            + rng.choice(_DIGITS)
            + rng.choice(_LETTERS)
            + _pick(rng, _DIGITS, 2)
        )
        return (text,), text, None
    raise PlateRenderError(f"unknown layout {layout!r} (have {', '.join(LAYOUTS)})")


def _font(style: str, size: int) -> Any:
    try:
        from PIL import ImageFont
    except ImportError as exc:
        raise PlateRenderError("Pillow is not installed (pip install nigehbaan[anpr])") from exc
    return ImageFont.truetype(str(font_path(style)), size)


def _text_fit(draw: Any, text: str, style: str, box: tuple[int, int, int, int]) -> None:
    """Draw `text` as large as fits in `box` (x0, y0, x1, y1), centred, in black."""
    x0, y0, x1, y1 = box
    size = max(6, y1 - y0)
    font = _font(style, size)
    while size > 6:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= x1 - x0 and bottom - top <= y1 - y0:
            break
        size -= 2
        font = _font(style, size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = x0 + (x1 - x0 - (right - left)) // 2 - left
    y = y0 + (y1 - y0 - (bottom - top)) // 2 - top
    draw.text((x, y), text, font=font, fill=(20, 20, 20))


def render_plate(layout: str, rows: tuple[str, ...], *, height: int = 120) -> Image:
    """One plate, face-on, `height` pixels tall, with `rows` printed in `layout`'s style."""
    import numpy as np
    from PIL import Image as PilImage
    from PIL import ImageDraw

    if layout not in LAYOUTS:
        raise PlateRenderError(f"unknown layout {layout!r} (have {', '.join(LAYOUTS)})")
    h = height
    if layout == "punjab-district":
        w = 2 * h
        plate = PilImage.new("RGB", (w, h), (245, 245, 240))
        draw = ImageDraw.Draw(plate)
        strip = int(0.24 * w)
        draw.rectangle((0, 0, strip, h), fill=(40, 150, 80))
        _text_fit(draw, "PUNJAB", "bold", (4, int(0.82 * h), strip - 4, h - 4))
        series, _, year = rows[0].partition("-")
        _text_fit(draw, f"{series}-", "condensed", (strip + 8, 6, int(0.78 * w), int(0.48 * h)))
        _text_fit(draw, year, "condensed", (int(0.8 * w), 10, w - 8, int(0.32 * h)))
        _text_fit(draw, rows[1], "condensed", (strip + 8, int(0.52 * h), w - 10, h - 8))
    elif layout in ("punjab-car", "punjab-motorcycle"):
        w = int(4.2 * h)
        plate = PilImage.new("RGB", (w, h), (248, 248, 248))
        draw = ImageDraw.Draw(plate)
        _text_fit(draw, "PUNJAB", "bold", (int(0.4 * w), 4, int(0.6 * w), int(0.18 * h)))
        _text_fit(draw, rows[0], "condensed-bold", (12, int(0.22 * h), w - 12, h - 10))
    elif layout == "punjab-government":
        # The newer Punjab plate with its green strip; a G series marks a government car.
        w = int(4.2 * h)
        plate = PilImage.new("RGB", (w, h), (248, 248, 248))
        draw = ImageDraw.Draw(plate)
        strip = int(0.14 * w)
        draw.rectangle((0, 0, strip, h), fill=(40, 150, 80))
        _text_fit(draw, "PUNJAB", "bold", (4, int(0.75 * h), strip - 4, h - 6))
        _text_fit(draw, rows[0], "condensed-bold", (strip + 12, int(0.12 * h), w - 12, h - 10))
    elif layout in _CAPTIONS:
        # White, the number large, the province under it; Islamabad's newer plates
        # have a blue strip on the left.
        w = 2 * h
        plate = PilImage.new("RGB", (w, h), (248, 248, 246))
        draw = ImageDraw.Draw(plate)
        left = 10
        if layout == "islamabad":
            left = int(0.2 * w)
            draw.rectangle((0, 0, left, h), fill=(170, 90, 30)[::-1])
            left += 8
        _text_fit(draw, rows[0], "condensed", (left, int(0.1 * h), w - 10, int(0.7 * h)))
        _text_fit(
            draw, _CAPTIONS[layout], "bold", (int(0.12 * w), int(0.76 * h), int(0.88 * w), h - 6)
        )
    elif layout == "sindh":
        w = 2 * h
        plate = PilImage.new("RGB", (w, h), (30, 200, 245)[::-1])
        draw = ImageDraw.Draw(plate)
        _text_fit(draw, rows[0], "condensed", (10, int(0.12 * h), w - 10, int(0.72 * h)))
        _text_fit(draw, "SINDH", "bold", (int(0.35 * w), int(0.78 * h), int(0.65 * w), h - 6))
    elif layout == "br-old":
        w = int(3.1 * h)
        plate = PilImage.new("RGB", (w, h), (200, 200, 195))
        draw = ImageDraw.Draw(plate)
        _text_fit(draw, "SP-SAO PAULO", "bold", (int(0.2 * w), 4, int(0.8 * w), int(0.2 * h)))
        _text_fit(draw, rows[0], "condensed", (10, int(0.24 * h), w - 10, h - 8))
    else:  # mercosur
        w = int(3.1 * h)
        plate = PilImage.new("RGB", (w, h), (250, 250, 250))
        draw = ImageDraw.Draw(plate)
        draw.rectangle((0, 0, w, int(0.2 * h)), fill=(160, 60, 20))
        draw.text((int(0.42 * w), 2), "BRASIL", font=_font("bold", int(0.15 * h)), fill="white")
        _text_fit(draw, rows[0], "condensed-bold", (10, int(0.26 * h), w - 10, h - 8))
    draw.rectangle((0, 0, w - 1, h - 1), outline=(30, 30, 30), width=max(1, h // 60))
    rgb = np.asarray(plate, dtype=np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def render_scene(
    rng: random.Random | int,
    *,
    layout: str | None = None,
    size: tuple[int, int] = (640, 360),
    plate_height: tuple[int, int] = (40, 70),
    clean: bool = False,
) -> tuple[Image, PlateTruth]:
    """A frame of `size` (width, height) with one plate on it, and the truth about it.

    `clean` draws the plate face-on with no lighting, blur or noise (for
    tests that check the reader reads what was drawn).
    """
    import cv2
    import numpy as np

    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    layout = layout or rng.choice(list(LAYOUTS))
    rows, canonical, year = random_plate(layout, rng)
    province, country = LAYOUTS[layout]
    nrng = np.random.default_rng(rng.getrandbits(32))
    width, height = size
    # Ground, a vehicle body around the plate, and clutter (shapes, not text).
    frame = np.full((height, width, 3), rng.randint(70, 130), dtype=np.uint8)
    frame += nrng.integers(0, 12, size=frame.shape, dtype=np.uint8)
    for _ in range(rng.randint(3, 8)):
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        x0, y0 = rng.randint(0, width), rng.randint(0, height)
        cv2.rectangle(
            frame, (x0, y0), (x0 + rng.randint(20, 200), y0 + rng.randint(10, 120)), colour, -1
        )
    plate = render_plate(layout, rows, height=rng.randint(*plate_height) * 2)
    ph = rng.randint(*plate_height)
    if layout in _SQUARISH:
        ph = round(ph * 1.6)  # two-row plates are taller for the same character height
    ph = min(ph, height - 44)
    pw = round(plate.shape[1] * ph / plate.shape[0])
    if pw > width - 44:  # a narrow frame: shrink the plate, keep its shape
        pw = width - 44
        ph = round(plate.shape[0] * pw / plate.shape[1])
    px, py = rng.randint(20, width - pw - 20), rng.randint(20, height - ph - 20)
    body = tuple(rng.randint(20, 230) for _ in range(3))
    cv2.rectangle(
        frame,
        (max(0, px - pw // 2), max(0, py - ph)),
        (min(width, px + pw + pw // 2), min(height, py + 2 * ph)),
        body,
        -1,
    )
    src = np.array(
        [[0, 0], [plate.shape[1], 0], [plate.shape[1], plate.shape[0]], [0, plate.shape[0]]],
        dtype=np.float32,
    )
    dst = np.array([[px, py], [px + pw, py], [px + pw, py + ph], [px, py + ph]], dtype=np.float32)
    if not clean:
        # A tilt: corners moved by up to 3 % of the width and 8 % of the height.
        jitter = nrng.uniform(-1, 1, size=(4, 2)) * np.array([0.03 * pw, 0.08 * ph])
        dst += jitter.astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(plate, matrix, (width, height))
    mask = cv2.warpPerspective(np.full(plate.shape[:2], 255, np.uint8), matrix, (width, height))
    frame[mask > 127] = warped[mask > 127]
    if not clean:
        # Light falling off across the frame, a little blur, sensor noise.
        gain = np.linspace(rng.uniform(0.55, 1.0), rng.uniform(0.8, 1.25), width)
        lit: Any = frame.astype(np.float32) * gain[None, :, None]
        sigma = rng.uniform(0.0, 1.2)
        if sigma > 0.3:
            lit = cv2.GaussianBlur(lit, (0, 0), sigma)
        lit += nrng.normal(0, rng.uniform(1, 6), size=lit.shape)
        frame = np.clip(lit, 0, 255).astype(np.uint8)
    xs, ys = dst[:, 0], dst[:, 1]
    x0, y0 = max(0, int(xs.min())), max(0, int(ys.min()))
    box = Box(
        x0, y0, min(width, int(np.ceil(xs.max()))) - x0, min(height, int(np.ceil(ys.max()))) - y0
    )
    truth = PlateTruth(
        canonical=canonical,
        rows=rows,
        layout=layout,
        province=province,
        country=country,
        box=box,
        year=year,
    )
    return frame, truth
