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
import stat
from pathlib import Path
from typing import IO, Any

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


def already_exists(name: str, library: Path) -> BadInput:
    return BadInput(f"a concept named {name!r} already exists in {library}; "
                    "choose another name or pass --force to replace it")


def checkpoint_dir(library: Path, name: str) -> Path:
    return library / ".checkpoints" / name


MAX_JSON_BYTES = 1 << 20   # a bundle.json or meta.json is a few kB; anything over this is not one


class LibraryFileError(BadInput):
    """A file in the library that must not be read: not a regular file, outside the library,
    too large, or not the JSON it should be."""


def open_library_file(path: Path, library: Path, max_bytes: int | None = None) -> IO[bytes]:
    """Open a file of the library for reading, refusing what would hang or mislead a reader.

    The file (after symlinks) must lie inside the library, be a regular file (a FIFO
    would block the open or the read for ever: it is opened non-blocking and then
    refused), and be at most `max_bytes` long. The checks are made on the opened
    descriptor, so the file cannot be swapped between check and read.
    """
    real = os.path.realpath(path)
    root = os.path.realpath(library)
    if os.path.commonpath([real, root]) != root:
        raise LibraryFileError(f"{path} points outside the library ({real})")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise LibraryFileError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LibraryFileError(f"{path} is not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise LibraryFileError(f"{path} is {st.st_size} bytes, more than the {max_bytes} bytes such a file "
                                   "may have")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_library_bytes(path: Path, library: Path, max_bytes: int) -> bytes:
    with open_library_file(path, library, max_bytes) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:   # it grew after the check
        raise LibraryFileError(f"{path} is more than the {max_bytes} bytes such a file may have")
    return data


def read_library_json(path: Path, library: Path, max_bytes: int = MAX_JSON_BYTES) -> tuple[Any, bytes]:
    """The parsed JSON and its bytes. Deep nesting, bad UTF-8 and bad JSON are LibraryFileErrors."""
    raw = read_library_bytes(path, library, max_bytes)
    try:
        return json.loads(raw), raw
    except RecursionError:
        raise LibraryFileError(f"{path} is nested too deeply to be a pie file") from None
    except ValueError as exc:
        raise LibraryFileError(f"{path} is not valid JSON ({exc})") from None


def read_manifest_checked(folder: Path, library: Path | None = None) -> dict[str, Any]:
    """`folder`/bundle.json as an object; `library` defaults to the folder's parent."""
    path = folder / "bundle.json"
    data, _ = read_library_json(path, folder.parent if library is None else library)
    if not isinstance(data, dict):
        raise LibraryFileError(f"{path} is not a JSON object")
    return data


def read_manifest(folder: Path, library: Path | None = None, quiet: bool = False) -> dict[str, Any] | None:
    """The manifest, or None (with the reason on stderr unless `quiet` or it does not exist)."""
    try:
        return read_manifest_checked(folder, library)
    except LibraryFileError as exc:
        if not quiet and (folder / "bundle.json").exists():
            from .progress import log
            log(f"skipping {folder.name!r}: {exc}")
        return None


def taken_identifiers(library: Path) -> set[str]:
    """Identifiers used by any bundle in the library, or reserved by a checkpoint in progress."""
    taken: set[str] = set()
    if not library.is_dir():
        return taken
    for entry in sorted(library.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        manifest = read_manifest(entry, library)
        if not manifest:
            continue
        for concept in (manifest.get("tokens") or {}).get("concepts") or []:
            ident = concept.get("identifier") if isinstance(concept, dict) else None
            if isinstance(ident, str):
                taken.add(ident)
    ckpts = library / ".checkpoints"
    if ckpts.is_dir():
        for entry in sorted(ckpts.iterdir()):
            meta = read_checkpoint_meta(library, entry.name)
            if meta is not None and isinstance(meta.get("identifier"), str):
                taken.add(meta["identifier"])
    return taken


def read_checkpoint_meta(library: Path, name: str) -> dict[str, Any] | None:
    """`.checkpoints/<name>/meta.json`, or None when absent or unusable (reported on stderr)."""
    path = checkpoint_dir(library, name) / "meta.json"
    if not os.path.lexists(path):
        return None
    try:
        meta, _ = read_library_json(path, library)
    except LibraryFileError as exc:
        from .progress import log
        log(f"ignoring the checkpoint {name!r}: {exc}")
        return None
    return meta if isinstance(meta, dict) else None


def new_identifier(seed: int, taken: set[str]) -> str:
    """A rare consonant-only non-word of 3-5 letters, not in `taken`; reproducible from the seed."""
    rng = random.Random(f"pie-identifier-{seed}")
    for attempt in range(100000):
        length = 3 if attempt < 2000 else 4 if attempt < 20000 else 5
        ident = "".join(rng.choice(_CONSONANTS) for _ in range(length))
        if ident not in taken and ident not in _NOT_RARE and IDENTIFIER_RE.match(ident):
            return ident
    raise RuntimeError("no free identifier left")  # 20^5 candidates: cannot happen
