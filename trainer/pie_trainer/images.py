"""Reading the user's images and masks, with the checks that give specific messages.

Nothing here imports torch, so bad input is refused before torch is loaded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 32          # smallest width or height the trainer accepts
MAX_WORK_SIDE = 2048   # larger images are downscaled (never refused) to this long side on load
MAX_PIXELS = 1_000_000_000
MIN_MASK_BOX = 8       # smallest subject box (width and height) a mask may select  # beyond this an image cannot be decoded in reasonable memory


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
    try:
        return p.read_bytes()
    except OSError as exc:
        raise_bad(f"cannot read {what} {path!r}: {exc.strerror or exc}")
    raise AssertionError("unreachable")


def raise_bad(message: str) -> None:
    from .errors import BadInput
    raise BadInput(message)


def _decode(data: bytes, path: str, what: str) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise_bad(f"{what} {path!r} is {w}x{h} pixels, more than the {MAX_PIXELS // 1_000_000} megapixels "
                          "the trainer can decode")
            if im.format == "JPEG":
                im.draft("RGB", (MAX_WORK_SIDE, MAX_WORK_SIDE))  # cheap DCT downscale of huge JPEGs
            im.load()
        except UnidentifiedImageError:
            raise_bad(f"{what} {path!r} is not an image file the trainer can read (PNG, JPEG, WebP, TIFF, ...)")
        except Image.DecompressionBombError:
            raise_bad(f"{what} {path!r} is too large to decode (over {MAX_PIXELS // 1_000_000} megapixels)")
        except (OSError, SyntaxError, ValueError) as exc:
            raise_bad(f"{what} {path!r} is damaged or truncated and cannot be decoded: {exc}")
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    return im


def load_image(path: str, what: str = "image") -> LoadedImage:
    """Load an RGB(A) image; refuse unreadable and too small ones; downscale huge ones."""
    data = _read_bytes(path, what)
    im = _decode(data, path, what)
    declared = Image.open(io.BytesIO(data)).size  # before draft() may have shrunk a JPEG
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


def load_mask(path: str, image: LoadedImage) -> np.ndarray:
    """The subject mask as float32 [h, w] in 0..1 at the working size of `image`.

    The mask must have the image's size as given. Its alpha channel is used when
    it has a non-opaque one, its grey level otherwise.
    """
    data = _read_bytes(path, "mask")
    m = ImageOps.exif_transpose(_decode(data, path, "mask"))
    if m.size != image.source_size:
        raise_bad(f"mask {path!r} is {m.size[0]}x{m.size[1]} pixels but the image is "
                  f"{image.source_size[0]}x{image.source_size[1]}; they must be the same size")
    if m.mode in ("RGBA", "LA", "PA") or (m.mode == "P" and "transparency" in m.info):
        alpha = m.convert("RGBA").getchannel("A")
        grey = alpha if alpha.getextrema()[0] < 255 else m.convert("L")
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
