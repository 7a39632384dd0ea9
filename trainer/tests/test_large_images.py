"""Very large images: downscaled on load (never refused) up to 1000 megapixels, refused above
that or when the file cannot hold what its header claims, in bounded memory either way."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import TRAINER, bundle_problems, run_trainer
from PIL import Image, ImageDraw

# What decoding in a subprocess may take in address space: Python with numpy and PIL is
# about 120 MB; a decoded 20000x10000 greyscale image alone is 200 MB.
LIMIT_SMALL = 400 << 20
LIMIT_BIG = 900 << 20

_PROBE = r"""
import json, resource, sys
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.path.insert(0, sys.argv[1])
from PIL import Image
from pie_trainer.core.errors import BadInput
from pie_trainer.core.images import load_image
before = Image.MAX_IMAGE_PIXELS
try:
    im = load_image(sys.argv[2], "scene image")
    out = {"size": list(im.image.size), "source_size": list(im.source_size), "downscaled": im.downscaled}
except BadInput as exc:
    out = {"refused": str(exc)}
out["limit_kept"] = Image.MAX_IMAGE_PIXELS == before
print(json.dumps(out))
"""


def probe(path: Path, limit: int) -> dict:
    p = subprocess.run([sys.executable, "-c", _PROBE, str(TRAINER), str(path), str(limit)], capture_output=True,
                       text=True, timeout=120, env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


def big_png(path: Path) -> Path:
    """200 megapixels, beyond PIL's own bomb limit (179), in a 1-bit PNG of a few tens of kB."""
    im = Image.new("1", (20000, 10000), 0)
    ImageDraw.Draw(im).rectangle([5000, 2000, 15000, 8000], fill=1)
    im.save(path)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h greyscale pixels, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _chunk(b"IEND", b""))
    return path


def jpeg_header(path: Path, w: int, h: int) -> Path:
    """A small real JPEG whose frame header is rewritten to claim w x h (the data stays small)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 60)).save(buf, "JPEG", quality=80)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(data))
    return path


def test_200_megapixel_png_is_downscaled_in_bounded_memory(tmp_path: Path) -> None:
    out = probe(big_png(tmp_path / "big.png"), LIMIT_BIG)
    assert out == {"size": [2048, 1024], "source_size": [20000, 10000], "downscaled": True, "limit_kept": True}


def test_200_megapixel_scene_trains(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    run = run_trainer("scene", str(big_png(tmp_path / "big.png")), "--name", "big", "--library", str(lib),
                      "--steps", "2", "--resolution", "16", "--threads", "1", "--precision", "fp32",
                      "--preview-every", "0")
    assert run.rc == 0, run.stderr[-2000:]
    m = json.loads((lib / "big" / "bundle.json").read_text())
    assert m["tokens"]["concepts"][0]["source_size"] == [20000, 10000]
    assert m["training"]["source_downscaled"] is True and m["training"]["working_size"] == [2048, 1024]
    assert bundle_problems(lib / "big") == []


@pytest.mark.parametrize("kind,w,h,words", [
    ("png", 65000, 65000, ("65000x65000", "more than the 1000 megapixels")),
    ("png", 40000, 30000, ("40000x30000", "more than the 1000 megapixels")),
    ("png", 30000, 30000, ("damaged or truncated", "far too short for 30000x30000")),
    ("jpeg", 65000, 65000, ("65000x65000", "more than the 1000 megapixels")),
])
def test_header_bombs_are_refused_without_a_big_allocation(tmp_path: Path, kind: str, w: int, h: int,
                                                          words: tuple[str, ...]) -> None:
    # 30000x30000 is under the cap: the PNG is refused as too short for its pixels before they are
    # allocated (900 MB).
    make = png_header if kind == "png" else jpeg_header
    out = probe(make(tmp_path / f"bomb.{kind}", w, h), LIMIT_SMALL)
    assert "refused" in out, out
    for word in words:
        assert word in out["refused"], out["refused"]
    assert out["limit_kept"]


def test_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path) -> None:
    # A 900-megapixel JPEG would take 2.7 GB decoded in full; at libjpeg's 1/8 scale it is 42 MB.
    # (Its data ends early, which libjpeg fills in grey; what matters here is the memory.)
    out = probe(jpeg_header(tmp_path / "wide.jpg", 30000, 30000), LIMIT_SMALL)
    assert out == {"size": [2048, 2048], "source_size": [30000, 30000], "downscaled": True, "limit_kept": True}
