"""Reading the user's images and masks, with the checks that give specific messages.

Nothing here imports torch, so bad input is refused before torch is loaded.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, cast

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

MIN_SIDE = 32          # smallest width or height the trainer accepts
MAX_WORK_SIDE = 2048   # larger images are downscaled (never refused) to this long side on load
MAX_PIXELS = 1_000_000_000  # beyond this an image cannot be decoded in reasonable memory: refused
MIN_MASK_BOX = 8       # smallest subject box (width and height) a mask may select
# zlib cannot shrink data by more than about 1032:1, so a PNG whose file is smaller than
# its declared pixels / this ratio is truncated; it is refused before its pixels are allocated.
_PNG_MAX_RATIO = 1100
_PIXEL_LIMIT_LOCK = threading.Lock()


@dataclass
class LoadedImage:
    image: Image.Image          # RGB or RGBA, at most MAX_WORK_SIDE on its long side
    sha256: str                 # of the file's bytes
    source_size: tuple[int, int]  # (width, height) as given (EXIF orientation applied)
    downscaled: bool
    path: str


def _read_bytes(path: str, what: str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise_bad(f"{what} {path!r} does not exist")
    if p.is_dir():
        raise_bad(f"{what} {path!r} is a folder, not an image file")
    if not p.is_file():
        # A FIFO or a device would block or never end: only regular files are images.
        raise_bad(f"{what} {path!r} is not a regular file")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise_bad(f"cannot read {what} {path!r}: {exc.strerror or exc}")
    raise AssertionError("unreachable")


def raise_bad(message: str) -> NoReturn:
    from .errors import BadInput
    raise BadInput(message)


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """PIL's decompression-bomb check switched off for the duration of one decode, because the
    caller checks the header's size itself (and names it in its message).

    PIL only has a module-wide limit; it is changed here and restored on exit (under a
    lock, so concurrent decodes cannot leave it changed), and no other code changes it.
    """
    with _PIXEL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _png_too_short(im: Image.Image, data_len: int) -> bool:
    w, h = im.size
    bits = {"1": 1, "L": 8, "P": 8, "LA": 16, "RGB": 24, "RGBA": 32, "I;16": 16, "I": 32}.get(im.mode, 64)
    raw = h * (1 + (w * bits + 7) // 8)
    return data_len * _PNG_MAX_RATIO < raw


def decode_image(data: bytes, path: str, what: str, max_side: int | None = MAX_WORK_SIDE,
                 threshold: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode once: returns the image and its declared (header) size, before any reduction.

    The header is read first: more than MAX_PIXELS is refused before any pixel is
    allocated. A JPEG is decoded at a reduced DCT scale when that still gives at
    least `max_side` on the long side; other formats larger than `max_side` are
    reduced by an integer factor straight after decoding, before any conversion
    multiplies their size. `max_side=None` keeps the full resolution. With
    `threshold`, the image becomes a greyscale 0/255 mask (grey > threshold: 255)
    before that reduction, so a reduced pixel is non-zero wherever any of its
    source pixels was above the threshold.
    """
    declared = (0, 0)
    try:
        with _own_pixel_limit():
            im: Image.Image = Image.open(io.BytesIO(data))
            declared = im.size
            w, h = declared
            if w * h > MAX_PIXELS:
                raise_bad(f"{what} {path!r} is {w}x{h} pixels, more than the {MAX_PIXELS // 1_000_000} "
                          "megapixels the trainer can decode")
            if im.format == "PNG" and _png_too_short(im, len(data)):
                raise_bad(f"{what} {path!r} is damaged or truncated and cannot be decoded: its file is far "
                          f"too short for {w}x{h} pixels")
            if im.format == "JPEG" and max_side is not None:
                im.draft(im.mode if im.mode in ("L", "RGB") else "RGB", (max_side, max_side))
            im.load()
    except UnidentifiedImageError:
        raise_bad(f"{what} {path!r} is not an image file the trainer can read (PNG, JPEG, WebP, TIFF, ...)")
    except MemoryError:
        raise_bad(f"{what} {path!r} ({declared[0]}x{declared[1]} pixels) does not fit in memory")
    except (OSError, SyntaxError, ValueError) as exc:
        raise_bad(f"{what} {path!r} is damaged or truncated and cannot be decoded: {exc}")
    if threshold is not None:
        im = im.convert("L").point(lambda v: 255 if v > threshold else 0)   # keeps the EXIF orientation
    if max_side is not None and max(im.size) >= 2 * max_side:
        im = _reducible(im).reduce(max(im.size) // max_side)   # box filter; the exact size comes later
    return im, declared


def _reducible(im: Image.Image) -> Image.Image:
    """The image in a mode whose pixels can be averaged (reduce() refuses 1 and I;16, and would
    average palette indices)."""
    if im.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        return im
    if im.mode == "1":
        return im.convert("L")
    if im.mode.startswith("I;16"):
        return im.convert("I")
    has_alpha = im.mode in ("PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    return im.convert("RGBA" if has_alpha else "RGB")


MAX_LIBRARY_IMAGE_BYTES = 256 << 20   # scene.png / exclude.png of a bundle: a few MB at most


def open_library_image(path: Path, library: Path) -> Image.Image:
    """An image of a bundle in the library (checked like every library file), at full size:
    it was written at its working size."""
    from .library import LibraryFileError, read_library_bytes
    try:
        data = read_library_bytes(path, library, MAX_LIBRARY_IMAGE_BYTES)
    except LibraryFileError as exc:
        raise_bad(f"the scene bundle cannot be used: {exc}")
    return decode_image(data, str(path), f"the scene bundle's {path.name}", max_side=None)[0]


def load_image(path: str, what: str = "image") -> LoadedImage:
    """Load an RGB(A) image; refuse unreadable and too small ones; downscale huge ones."""
    data = _read_bytes(path, what)
    im, declared = decode_image(data, path, what)
    if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that swap the axes
        declared = (declared[1], declared[0])
    im = ImageOps.exif_transpose(im)
    w, h = declared
    if w < MIN_SIDE or h < MIN_SIDE:
        raise_bad(f"{what} {path!r} is {w}x{h} pixels; the smallest the trainer accepts is {MIN_SIDE}x{MIN_SIDE}")
    if im.mode.startswith("I") or im.mode == "F":
        # 16-bit or float greyscale: scale to 8 bits (convert("RGB") would clip it to white).
        arr = np.asarray(im, dtype=np.float64)
        top = 1.0 if im.mode == "F" and arr.max() <= 1.0 else 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray((arr / top * 255.0).clip(0, 255).round().astype(np.uint8))
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    im = im.convert("RGBA" if has_alpha else "RGB")
    downscaled = False
    if max(im.size) > MAX_WORK_SIDE or im.size != declared:
        scale = MAX_WORK_SIDE / max(declared)
        target = (max(1, round(declared[0] * min(1.0, scale))), max(1, round(declared[1] * min(1.0, scale))))
        im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        downscaled = True
    return LoadedImage(image=im, sha256=hashlib.sha256(data).hexdigest(), source_size=(w, h),
                       downscaled=downscaled, path=path)


def _oriented(im: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """The declared size as shown: EXIF orientations 5-8 swap the axes."""
    return (size[1], size[0]) if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else size


def _same_size(path: str, what: str, size: tuple[int, int], image: LoadedImage) -> None:
    if size != image.source_size:
        raise_bad(f"{what} {path!r} is {size[0]}x{size[1]} pixels but the image is "
                  f"{image.source_size[0]}x{image.source_size[1]}; they must be the same size")


def load_mask(path: str, image: LoadedImage) -> np.ndarray:
    """The subject mask as float32 [h, w] in 0..1 at the working size of `image`.

    The mask must have the image's size as given. Its alpha channel is used when
    it has a non-opaque one, its grey level otherwise.
    """
    data = _read_bytes(path, "mask")
    m, declared = decode_image(data, path, "mask")
    _same_size(path, "mask", _oriented(m, declared), image)
    m = ImageOps.exif_transpose(m)
    if m.mode in ("RGBA", "LA", "PA") or (m.mode == "P" and "transparency" in m.info):
        alpha = m.convert("RGBA").getchannel("A")
        lowest = cast("tuple[int, int]", alpha.getextrema())[0]   # one band: (min, max)
        grey = alpha if lowest < 255 else m.convert("L")
    else:
        grey = m.convert("L")
    if grey.size != image.image.size:
        grey = grey.resize(image.image.size, Image.Resampling.BILINEAR)
    arr = np.asarray(grey, dtype=np.float32) / 255.0
    if float(arr.max()) < 0.5:
        raise_bad(f"mask {path!r} selects nothing (no pixel is at least half white)")
    ys, xs = np.nonzero(arr >= 0.5)
    bw, bh = int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
    if min(bw, bh) < MIN_MASK_BOX:
        raise_bad(f"mask {path!r} selects only a {bw}x{bh} pixel area; the subject must span at least "
                  f"{MIN_MASK_BOX}x{MIN_MASK_BOX} pixels")
    return arr


def alpha_mask(image: LoadedImage) -> np.ndarray | None:
    """The image's own alpha as a mask when it has a meaningful one."""
    if image.image.mode != "RGBA":
        return None
    a = np.asarray(image.image.getchannel("A"), dtype=np.float32) / 255.0
    if float(a.min()) >= 1.0 or float(a.max()) < 0.5:
        return None
    return a


def rgb_array(im: Image.Image) -> np.ndarray:
    """uint8 [h, w, 3]."""
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


MAX_EXCLUDED = 0.95   # an exclude mask may hide at most this fraction of the scene


@dataclass
class ExcludeMask:
    """Scene pixels that must never be learned (--exclude): True = excluded, at the working size."""
    excluded: np.ndarray   # bool [h, w]
    fraction: float        # of the source pixels that are excluded
    sha256: str            # of the mask file's bytes


def load_exclude(path: str, image: LoadedImage) -> ExcludeMask:
    """A greyscale image the size of the scene; pixels above 127 are excluded.

    At the working size a pixel is excluded when any source pixel it covers is,
    and once more around that when the scene was downscaled (the downscaling
    filter spreads each source pixel over its neighbours).
    """
    data = _read_bytes(path, "exclude mask")
    m, declared = decode_image(data, path, "exclude mask", threshold=127)
    _same_size(path, "exclude mask", _oriented(m, declared), image)
    m = ImageOps.exif_transpose(m)
    arr = np.asarray(m, dtype=np.float32) / 255.0
    fraction = float(arr.mean())   # exact: reduce() averages whole boxes of the 0/1 source pixels
    if fraction <= 0.0:
        from .progress import log
        log(f"exclude mask {path!r} excludes nothing (no pixel above 127): the whole scene is learned")
    if fraction > MAX_EXCLUDED:
        raise_bad(f"exclude mask {path!r} excludes {fraction:.1%} of the scene; at most "
                  f"{MAX_EXCLUDED:.0%} may be excluded (white = excluded, black = learned)")
    if m.size != image.image.size:
        m = m.resize(image.image.size, Image.Resampling.BOX)
        # Bleed of the image's own downscaling filter: one working pixel more on each side.
        m = m.filter(ImageFilter.MaxFilter(3))
    excluded = np.asarray(m, dtype=np.uint8) > 0
    if float(excluded.mean()) >= 1.0:
        raise_bad(f"exclude mask {path!r} leaves no scene pixel to learn at the working size")
    return ExcludeMask(excluded=excluded, fraction=fraction, sha256=hashlib.sha256(data).hexdigest())


@dataclass
class TrainInputs:
    """What a `scene` or `subject` run learns from, loaded and checked (no torch needed)."""
    stage: int
    name: str                  # the concept's name, checked
    library: Path
    image: LoadedImage         # the scene (Stage I) or the subject (Stage II)
    mask: np.ndarray | None = None      # Stage II: the subject's mask at the image's working size
    mask_sha256: str | None = None      # ... of the --mask file, when one was given
