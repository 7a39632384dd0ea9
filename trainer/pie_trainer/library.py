"""The concept library on disk: where it is, what names and identifiers it holds.

Layout (schema/README.md): `<library>/<name>/bundle.json` per concept,
`<library>/.partial-<name>-<random>/` while a bundle is being written,
`<library>/.checkpoints/<name>/` for resumable checkpoints and previews.
A folder whose name starts with `.` is never a concept.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

from .errors import BadInput

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
IDENTIFIER_RE = re.compile(r"^[a-z]{3,8}$")
# Rare non-words: consonant-only strings, minus the few that are words or common abbreviations.
_CONSONANTS = "bcdfghjklmnpqrstvwxz"
_NOT_RARE = {"hmm", "brr", "shh", "psst", "pst", "tsk", "nth", "cwm", "crwth", "pfft", "zzz", "mmm", "hmmm",
             "www", "xxx", "bbc", "cnn", "dvd", "html", "http", "pdf", "png", "jpg", "gif", "mp", "npm", "sql",
             "ssh", "tcp", "xml", "kg", "km", "lbs", "mph", "nyc", "std", "sks", "vst", "mgmt", "bldg", "pkg",
             "src", "lib", "cfg", "msg", "img", "txt", "rgb", "cmd", "dll", "ftp", "css", "bmp", "mkv", "ltd"}


def library_path(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser()
    if os.environ.get("PIE_HOME"):
        return Path(os.environ["PIE_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "pie"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise BadInput(f"concept name {name!r} is not allowed: use 1-64 characters of a-z, 0-9, '_' and '-', "
                       "starting with a letter or digit")
    return name


def checkpoint_dir(library: Path, name: str) -> Path:
    return library / ".checkpoints" / name


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        with open(folder / "bundle.json", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def taken_identifiers(library: Path) -> set[str]:
    """Identifiers used by any bundle in the library, or reserved by a checkpoint in progress."""
    taken: set[str] = set()
    if not library.is_dir():
        return taken
    for entry in library.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        manifest = read_manifest(entry)
        if not manifest:
            continue
        for concept in (manifest.get("tokens") or {}).get("concepts") or []:
            ident = concept.get("identifier") if isinstance(concept, dict) else None
            if isinstance(ident, str):
                taken.add(ident)
    ckpts = library / ".checkpoints"
    if ckpts.is_dir():
        for entry in ckpts.iterdir():
            try:
                meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
                taken.add(str(meta["identifier"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
    return taken


def new_identifier(seed: int, taken: set[str]) -> str:
    """A rare consonant-only non-word of 3-5 letters, not in `taken`; reproducible from the seed."""
    rng = random.Random(f"pie-identifier-{seed}")
    for attempt in range(100000):
        length = 3 if attempt < 2000 else 4 if attempt < 20000 else 5
        ident = "".join(rng.choice(_CONSONANTS) for _ in range(length))
        if ident not in taken and ident not in _NOT_RARE and IDENTIFIER_RE.match(ident):
            return ident
    raise RuntimeError("no free identifier left")  # 20^5 candidates: cannot happen
