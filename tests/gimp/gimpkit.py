"""Helpers shared by the Python-Fu batches (e2e.py, sd.py) that tests/gimp/run.sh
runs inside GIMP 3: loading a file, saving a flattened copy, describing a layer.
The batches are exec'd by GIMP's python-fu-eval, so they import this from /pie/tests/gimp."""

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402


def load(path):
    return Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))


def save_flat(image, path, hide=()):
    """A flattened copy of `image` (the layers at `hide` made invisible) saved to `path`;
    the image itself is left as it is."""
    dup = image.duplicate()
    layers = dup.get_layers()
    for i in hide:
        layers[i].set_visible(False)
    dup.flatten()
    Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, dup, Gio.File.new_for_path(path), None)
    dup.delete()


def layer_info(layer):
    # GI returns (ok, x, y) or (x, y) depending on the binding.
    off = list(layer.get_offsets())[-2:]
    return {"name": layer.get_name(), "x": off[0], "y": off[1], "w": layer.get_width(), "h": layer.get_height()}
