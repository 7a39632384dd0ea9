"""Fast checks of the pieces, no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pie_trainer.core.errors import BadInput
from pie_trainer.core.images import load_image, load_mask
from pie_trainer.core.library import IDENTIFIER_RE, check_name, new_identifier
from pie_trainer.core.views import SceneCrops, SubjectViews, cutout_rgba
from pie_trainer.pixel.diffusion import Schedule, ddim_timesteps
from pie_trainer.pixel.model import TinyUNet, UNetConfig


def test_identifiers_are_rare_unique_and_reproducible() -> None:
    taken: set[str] = set()
    for _ in range(50):
        ident = new_identifier(0, taken)
        assert IDENTIFIER_RE.match(ident) and ident not in taken
        assert not set(ident) & set("aeiouy")
        taken.add(ident)
    assert new_identifier(3, set()) == new_identifier(3, set())


def test_names() -> None:
    assert check_name("my-dog_2") == "my-dog_2"
    for bad in ("", "Dog", "-x", "a/b", ".x", "x" * 65):
        with pytest.raises(BadInput):
            check_name(bad)


def test_schedule_matches_the_manifest_definition() -> None:
    s = Schedule()
    betas = np.linspace(1e-4, 0.02, 1000)
    assert np.allclose(s.alphas_cumprod().numpy(), np.cumprod(1 - betas))
    ts = ddim_timesteps(1000, 50)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 50


def test_model_is_fully_convolutional_and_starts_at_zero() -> None:
    m = TinyUNet(UNetConfig(base_channels=16))
    for h, w in ((16, 16), (24, 40)):
        out = m(torch.randn(2, 3, h, w), torch.tensor([0, 999]), torch.tensor([0, 2]))
        assert out.shape == (2, 3, h, w)
        assert float(out.detach().abs().max()) == 0.0   # zero-initialised output conv


def test_scene_crops_and_subject_views() -> None:
    scene = Image.new("RGB", (100, 60), (10, 20, 30))
    crops = SceneCrops(scene, 16, 32)
    gen = torch.Generator().manual_seed(0)
    x = crops.sample(5, gen)
    assert x.shape == (5, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    mask = np.zeros((60, 100), np.float32)
    mask[10:50, 30:50] = 1
    views = SubjectViews(scene, mask, 16)
    xs, ws = views.sample(3, gen)
    assert xs.shape == (3, 3, 16, 16) and ws.shape == (3, 1, 16, 16)
    assert 0.2 < float(ws.mean()) < 0.9     # the box fills the view; outside the mask weighs nothing
    assert views.box == (30, 10, 50, 50)
    cut = cutout_rgba(scene, mask)
    assert cut.size == (20, 40) and cut.mode == "RGBA"
    assert cutout_rgba(scene, None).getchannel("A").getextrema() == (255, 255)


def test_mask_from_alpha_or_grey(tmp_path: Path) -> None:
    img = tmp_path / "i.png"
    Image.new("RGB", (40, 40)).save(img)
    loaded = load_image(str(img))
    m = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    m.paste((0, 0, 0, 255), (0, 0, 20, 20))
    m.save(tmp_path / "a.png")
    assert load_mask(str(tmp_path / "a.png"), loaded).mean() == pytest.approx(0.25)
    Image.new("L", (40, 40), 0).save(tmp_path / "empty.png")
    with pytest.raises(BadInput, match="selects nothing"):
        load_mask(str(tmp_path / "empty.png"), loaded)


def test_tiny_mask_and_16_bit_images(tmp_path: Path) -> None:
    img = tmp_path / "i.png"
    Image.new("RGB", (40, 40)).save(img)
    loaded = load_image(str(img))
    m = Image.new("L", (40, 40), 0)
    m.paste(255, (5, 5, 9, 30))
    m.save(tmp_path / "thin.png")
    with pytest.raises(BadInput, match="4x25 pixel area"):
        load_mask(str(tmp_path / "thin.png"), loaded)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((40, 40), 32768, np.uint16)).save(deep)
    rgb = np.asarray(load_image(str(deep)).image)
    assert rgb.shape == (40, 40, 3) and 120 < rgb.mean() < 136


def test_every_package_of_the_trainer_is_installed_by_install_sh() -> None:
    """install.sh pip-installs trainer/ by pyproject.toml's package list: a package missing there works
    from the source tree and fails only in the installed pie (`No module named ...`)."""
    import ast
    import re

    root = Path(__file__).resolve().parent.parent
    # tomllib is Python 3.11+, and the trainer supports 3.10: the one line is read as a Python list.
    line = re.search(r"^packages = (\[.*\])$", (root / "pyproject.toml").read_text(), re.M)
    assert line is not None, "pyproject.toml has no [tool.setuptools] packages line"
    listed = set(ast.literal_eval(line[1]))
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "pie_trainer").rglob("__init__.py")}
    assert listed == found
