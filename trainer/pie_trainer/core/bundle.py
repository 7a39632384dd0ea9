"""Writing a bundle atomically, validating manifests, and reading the Stage I bundle a subject grows from.

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
from .images import LoadedImage
from .library import LibraryFileError, already_exists, open_library_file, read_library_json, read_manifest

# Files every backbone's bundles may hold; a backbone's own files are named in its package.
MANIFEST = "bundle.json"
PREVIEW = "preview.png"
SUBJECT = "subject.png"    # Stage II: the subject cut out by its mask
SCENE = "scene.png"        # Stage I: the scene at its working scale, for Stage II's replay


def schema_path(name: str) -> Path:
    """The contract file: the installed copy inside the package, else the repository's schema/."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "schema" / name, package.parent.parent / "schema" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"cannot find the contract {name} (looked in {package / 'schema'} and "
                            f"{package.parent.parent / 'schema'})")


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

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def commit(self, manifest: dict[str, Any], file_names: list[str], force: bool) -> Path:
        """Hash, fsync, validate, rename into place. Returns the bundle folder."""
        entries: list[dict[str, Any]] = []
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
                raise already_exists(self.name, self.library)
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
    """The Stage I bundle a subject grows from, checked."""
    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    files: set[str]        # listed in its manifest, each present and matching its sha256

    @property
    def scene_concept(self) -> dict[str, Any]:
        return next(c for c in self.manifest["tokens"]["concepts"] if c["role"] == "scene")

    def parent_record(self) -> dict[str, str]:
        """The `parent` of a bundle grown from this one."""
        return {"name": self.manifest["name"], "manifest_sha256": self.manifest_sha256}


def load_scene_bundle(library: Path, scene: str, backbone: str, needed: tuple[str, ...], train_hint: str,
                      optional: tuple[str, ...] = ()) -> SceneBundle:
    """The Stage I bundle `scene` of `backbone` with every check that has its own message. `needed`:
    the files a subject is grown from, each present and undamaged, as `optional` ones must be where
    the manifest lists them; `train_hint`: the command that trains such a scene."""
    folder = library / scene
    mpath = folder / MANIFEST
    if not os.path.lexists(mpath):
        raise BadInput(f"there is no scene bundle named {scene!r} in {library}; train the scene first "
                       f"({train_hint})")
    try:
        manifest, raw = read_library_json(mpath, library)
    except LibraryFileError as exc:
        raise BadInput(f"the scene bundle {scene!r} cannot be used: {exc}") from None
    if not isinstance(manifest, dict):
        raise BadInput(f"the scene bundle {scene!r} has an unreadable bundle.json (not a JSON object)")
    if manifest.get("backbone") != backbone:
        raise BadInput(f"the scene bundle {scene!r} uses the backbone {manifest.get('backbone')!r}, not "
                       f"{backbone!r}; a subject grows on its scene's backbone")
    if manifest.get("stage") != 1:
        parent = (manifest.get("parent") or {}).get("name") if isinstance(manifest.get("parent"), dict) else None
        hint = f" (it grew from the scene {parent!r})" if parent else ""
        raise BadInput(f"{scene!r} is a subject (Stage II) bundle, not a scene{hint}; "
                       "a subject must grow from a scene bundle")
    errors = schema_errors(manifest)
    if errors:
        raise BadInput(f"the scene bundle {scene!r} is not a valid bundle: {errors[0]}")
    listed = {e["path"]: e for e in manifest["files"]}
    used = needed + tuple(name for name in optional if name in listed)
    for name in used:
        if name not in listed or not os.path.lexists(folder / name):
            raise BadInput(f"the scene bundle {scene!r} has no {name} (it was not written by this trainer), "
                           "so it cannot be fine-tuned further")
        try:
            digest = sha256_library_file(folder / name, library)
        except LibraryFileError as exc:
            raise BadInput(f"the scene bundle {scene!r} cannot be used: {exc}") from None
        if digest != listed[name]["sha256"]:
            raise BadInput(f"the scene bundle {scene!r} is damaged: {name} does not match its recorded sha256")
    return SceneBundle(path=folder, manifest=manifest, manifest_sha256=hashlib.sha256(raw).hexdigest(),
                       files=set(used))


def concept(ident: str, name: str, role: str, stage: int, img: LoadedImage, token: int,
            **more: Any) -> dict[str, Any]:
    """One entry of the manifest's `tokens.concepts`; `more`: the backbone's own fields."""
    return {"id": token, "identifier": ident, "name": name, "role": role, "stage": stage,
            "source_sha256": img.sha256, "source_size": [img.source_size[0], img.source_size[1]], **more}


def manifest(name: str, stage: int, backbone: str, parent: dict[str, str] | None, model: dict[str, Any],
             schedule: dict[str, Any], tokens: dict[str, Any], body: dict[str, Any],
             training: dict[str, Any]) -> dict[str, Any]:
    """bundle.json without its `files` (the commit adds them): the fields every backbone writes,
    with `body` (its graphs and whatever else it needs) between `tokens` and `training`."""
    import torch

    from .. import TRAINER_NAME, __version__
    return {
        "format": "pie-bundle", "format_version": 1, "name": name, "stage": stage, "backbone": backbone,
        "parent": parent, "model": model, "schedule": schedule, "tokens": tokens, **body,
        "training": training,
        "trainer": {"name": TRAINER_NAME, "version": __version__, "torch": torch.__version__},
        "created": utc_now(),
    }
