"""Writing a bundle atomically, validating manifests, and reading the Stage I bundle.

The bundle is built in `<library>/.partial-<name>-<random>/`; every file is
fsynced and re-hashed, the manifest is validated against
schema/bundle.schema.json, and only then is the folder renamed to
`<library>/<name>`: nothing that looks like a bundle exists before that
rename, whenever the process dies. With `force`, the old bundle is moved aside,
the new one renamed in, and only then is the old one deleted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput
from .library import MAX_JSON_BYTES, LibraryFileError, open_library_file, read_library_bytes, read_manifest

MANIFEST = "bundle.json"
WEIGHTS = "weights.pt"
DENOISER = "denoiser.onnx"
PREVIEW = "preview.png"
SUBJECT = "subject.png"
SCENE = "scene.png"        # the scene at its working scale, for Stage II's replay
EXCLUDE = "exclude.png"    # Stage I with --exclude: white = never learned, at scene.png's size
BACKBONE = "pixel-unet"


def schema_path(name: str) -> Path:
    """The contract file: the installed copy inside the package, else the repository's schema/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schema" / name, here.parent.parent / "schema" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"cannot find the contract {name} (looked in {here / 'schema'} and "
                            f"{here.parent.parent / 'schema'})")


def load_schema(name: str) -> dict[str, Any]:
    with open(schema_path(name), encoding="utf-8") as f:
        return json.load(f)


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    import jsonschema
    validator = jsonschema.Draft202012Validator(load_schema("bundle.schema.json"))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in validator.iter_errors(manifest)]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_library_file(path: Path, library: Path) -> str:
    h = hashlib.sha256()
    with open_library_file(path, library) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def remove_stale_partials(library: Path, name: str) -> None:
    """Leftovers of this name from a killed run: never bundles, safe to remove."""
    if not library.is_dir():
        return
    for entry in library.iterdir():
        if entry.name.startswith((f".partial-{name}-", f".old-{name}-")) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


class Staging:
    """A `.partial-<name>-<random>` folder that becomes `<name>` on `commit`, or disappears."""

    def __init__(self, library: Path, name: str) -> None:
        self.library = library
        self.name = name
        library.mkdir(parents=True, exist_ok=True)
        self.path = library / f".partial-{name}-{secrets.token_hex(4)}"
        self.path.mkdir()
        self.committed = False

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def commit(self, manifest: dict[str, Any], file_names: list[str], force: bool) -> Path:
        """Hash, fsync, validate, rename into place. Returns the bundle folder."""
        entries = []
        # Some writers (safetensors, ONNX external data) create their files
        # owner-only; every file of a bundle gets the mode the user's umask gives.
        umask = os.umask(0)
        os.umask(umask)
        for fname in file_names:
            p = self.path / fname
            os.chmod(p, 0o666 & ~umask)
            fsync_path(p)
            entries.append({"path": fname, "sha256": sha256_file(p), "bytes": p.stat().st_size})
        manifest = dict(manifest, files=entries)
        errors = schema_errors(manifest)
        if errors:
            raise RuntimeError("the manifest does not match schema/bundle.schema.json: " + "; ".join(errors))
        mpath = self.path / MANIFEST
        with open(mpath, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # Verify what is on disk, not what we meant to write.
        reread = read_manifest(self.path)
        if reread != manifest:
            raise RuntimeError("bundle.json did not read back as written")
        for e in entries:
            if sha256_file(self.path / e["path"]) != e["sha256"]:
                raise RuntimeError(f"{e['path']} changed while the bundle was written")
        fsync_path(self.path)
        target = self.library / self.name
        if target.exists():
            if not force:
                raise BadInput(f"a concept named {self.name!r} already exists in {self.library}; "
                               "choose another name or pass --force to replace it")
            aside = self.library / f".old-{self.name}-{secrets.token_hex(4)}"
            os.rename(target, aside)
            try:
                os.rename(self.path, target)
            except OSError:
                os.rename(aside, target)
                raise
            self.committed = True
            fsync_path(self.library)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(self.path, target)
            self.committed = True
        fsync_path(self.library)
        return target


@dataclass
class SceneBundle:
    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    weights: Path
    scene_image: Path
    exclude_image: Path | None = None   # the scene's exclude mask, when it was trained with one


def load_scene_bundle(library: Path, scene: str) -> SceneBundle:
    """The Stage I bundle a subject grows from, with every check that has its own message."""
    folder = library / scene
    mpath = folder / MANIFEST
    if not os.path.lexists(mpath):
        raise BadInput(f"there is no scene bundle named {scene!r} in {library}; train the scene first "
                       "(python -m pie_trainer scene IMAGE --name NAME)")
    try:
        raw = read_library_bytes(mpath, library, MAX_JSON_BYTES)
        manifest = json.loads(raw)
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except LibraryFileError as exc:
        raise BadInput(f"the scene bundle {scene!r} cannot be used: {exc}") from None
    except RecursionError:
        raise BadInput(f"the scene bundle {scene!r} has an unreadable bundle.json (nested too deeply)") from None
    except ValueError as exc:
        raise BadInput(f"the scene bundle {scene!r} has an unreadable bundle.json ({exc})") from None
    backbone = manifest.get("backbone")
    if backbone != BACKBONE:
        raise BadInput(f"the scene bundle {scene!r} uses the backbone {backbone!r}; this trainer grows subjects "
                       f"only on {BACKBONE!r} scenes")
    if manifest.get("stage") != 1:
        parent = (manifest.get("parent") or {}).get("name") if isinstance(manifest.get("parent"), dict) else None
        hint = f" (it grew from the scene {parent!r})" if parent else ""
        raise BadInput(f"{scene!r} is a subject (Stage II) bundle, not a scene{hint}; "
                       "a subject must grow from a scene bundle")
    errors = schema_errors(manifest)
    if errors:
        raise BadInput(f"the scene bundle {scene!r} is not a valid bundle: {errors[0]}")
    listed = {e["path"]: e for e in manifest["files"]}
    for needed in (WEIGHTS, SCENE) + ((EXCLUDE,) if EXCLUDE in listed else ()):
        if needed not in listed or not os.path.lexists(folder / needed):
            raise BadInput(f"the scene bundle {scene!r} has no {needed} (it was not written by this trainer), "
                           "so it cannot be fine-tuned further")
        try:
            digest = sha256_library_file(folder / needed, library)
        except LibraryFileError as exc:
            raise BadInput(f"the scene bundle {scene!r} cannot be used: {exc}") from None
        if digest != listed[needed]["sha256"]:
            raise BadInput(f"the scene bundle {scene!r} is damaged: {needed} does not match its recorded sha256")
    return SceneBundle(path=folder, manifest=manifest, manifest_sha256=hashlib.sha256(raw).hexdigest(),
                       weights=folder / WEIGHTS, scene_image=folder / SCENE,
                       exclude_image=folder / EXCLUDE if EXCLUDE in listed else None)
