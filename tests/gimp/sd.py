# Headless run of the plug-in's Stable Diffusion (sd) backbone, executed by
# GIMP 3's Python-Fu batch interpreter inside the GIMP 3 host: Learn Scene with
# the model "sd" on the trainer's tiny checkpoint (2 steps, --resolution 64),
# Learn Subject on that scene, then Add Subject with the concept's own strength
# and guidance, the DPM++ 2M scheduler and a prompt and negative prompt of its
# own, and once with a prompt the engine refuses. tests/gimp/run.sh starts it and
# checks the files it writes (sd.json, sd-flat.png, sd-source.png). With
# PIE_TEST_SDXL_BASE (the trainer's tiny SDXL checkpoint) also Learn Scene with
# the model "sdxl", Learn Subject on it and Add Subject (sdxl-flat.png).
#
# Environment: as e2e.py, plus PIE_TEST_SD_BASE (the tiny checkpoint folder)
# PIE_TEST_SD_SEED, PIE_TEST_SD_PROMPT, PIE_TEST_SD_NEGATIVE and PIE_TEST_SDXL_BASE.
import json
import os
import sys
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

sys.path.insert(0, "/pie/tests/gimp")   # exec'd by python-fu-eval: no __file__
from gimpkit import layer_info, load, save_flat  # noqa: E402

T = os.environ["PIE_TEST_DIR"]
OUT = os.path.join(T, "out")
X, Y, W, H = (int(v) for v in os.environ["PIE_TEST_RECT"].split(","))
SUBJECT = os.environ["PIE_TEST_SUBJECT"]
BASE = os.environ["PIE_TEST_SD_BASE"]
SEED = int(os.environ.get("PIE_TEST_SD_SEED", "3"))
R = {"steps": {}}
PDB = Gimp.get_pdb()


def call(proc_name, image, drawables, **args):
    proc = PDB.lookup_procedure(proc_name)
    if proc is None:
        raise RuntimeError(f"{proc_name} is not registered")
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", drawables)
    for k, v in args.items():
        cfg.set_property(k.replace("_", "-"), v)
    t0 = time.time()
    res = proc.run(cfg)
    status = res.index(0)
    ok = status == Gimp.PDBStatusType.SUCCESS
    err = None if ok else PDB.get_last_error()
    R["steps"][f"{proc_name} {args.get('name') or args.get('seed') or ''}".strip()] = {
        "ok": ok, "status": status.value_name, "error": err, "seconds": round(time.time() - t0, 2)}
    if not ok:
        raise RuntimeError(f"{proc_name} failed: {status.value_name}: {err}")


try:
    os.makedirs(OUT, exist_ok=True)
    scene = load(os.path.join(T, "data", "scene.png"))
    scene_layer = scene.get_layers()[0]
    call("plug-in-pie-learn-scene", scene, [scene_layer],
         name="sd-scene", backbone="sd", base=Gio.File.new_for_path(BASE), class_word="landscape",
         preset="quick", device="cpu", steps=2, trainer_args="--resolution 64", replace=True)

    subject = load(SUBJECT)
    sw, sh = subject.get_width(), subject.get_height()
    subject.select_ellipse(Gimp.ChannelOps.REPLACE, sw * 0.1, sh * 0.08, sw * 0.8, sh * 0.84)
    # no backbone here: the subject takes its scene's
    call("plug-in-pie-learn-subject", subject, [subject.get_layers()[0]],
         scene="sd-scene", name="sd-subj", class_word="ball", preset="quick", device="cpu", steps=2, replace=True)
    subject.delete()

    scene.select_rectangle(Gimp.ChannelOps.REPLACE, X, Y, W, H)
    R["layers_before"] = len(scene.get_layers())
    # concept-defaults is TRUE by default: the sd concept's strength and
    # guidance (0.7, 7.5), whatever the strength and guidance arguments say
    call("plug-in-pie-add-subject", scene, [scene_layer],
         concept="sd-subj", seed=SEED, steps=4, scheduler="dpm++2m", variants=1, device="cpu",
         prompt=os.environ["PIE_TEST_SD_PROMPT"], negative_prompt=os.environ["PIE_TEST_SD_NEGATIVE"])
    # A placeholder the engine does not know: a PDB error naming it, no layer added.
    before = len(scene.get_layers())
    try:
        call("plug-in-pie-add-subject", scene, [scene_layer],
             concept="sd-subj", seed=SEED + 1, steps=4, variants=1, device="cpu", prompt="a photo of {subjcet}")
        R["bad_prompt"] = {"refused": False}
    except RuntimeError as e:
        R["bad_prompt"] = {"refused": True, "error": str(e), "layers_added": len(scene.get_layers()) - before}
    layers = scene.get_layers()
    R["layers_after"] = len(layers)
    R["layers"] = [layer_info(l) for l in layers]
    R["source_position"] = scene.get_item_position(scene_layer)
    save_flat(scene, os.path.join(OUT, "sd-flat.png"))
    save_flat(scene, os.path.join(OUT, "sd-source.png"), hide=[0])
    scene.delete()
    if os.environ.get("PIE_TEST_SDXL_BASE"):
        # The sdxl model from the same dialogs: its scene, a subject on it, then Add Subject.
        scene = load(os.path.join(T, "data", "scene.png"))
        scene_layer = scene.get_layers()[0]
        call("plug-in-pie-learn-scene", scene, [scene_layer], name="sdxl-scene", backbone="sdxl",
             base=Gio.File.new_for_path(os.environ["PIE_TEST_SDXL_BASE"]), class_word="landscape",
             preset="quick", device="cpu", steps=2, trainer_args="--resolution 64", replace=True)
        subject = load(SUBJECT)
        subject.select_ellipse(Gimp.ChannelOps.REPLACE, sw * 0.1, sh * 0.08, sw * 0.8, sh * 0.84)
        call("plug-in-pie-learn-subject", subject, [subject.get_layers()[0]], scene="sdxl-scene",
             name="sdxl-subj", class_word="ball", preset="quick", device="cpu", steps=2, replace=True)
        subject.delete()
        scene.select_rectangle(Gimp.ChannelOps.REPLACE, X, Y, W, H)
        call("plug-in-pie-add-subject", scene, [scene_layer], concept="sdxl-subj", seed=SEED, steps=4,
             variants=1, device="cpu")
        R["sdxl_layers"] = [layer_info(layer) for layer in scene.get_layers()]
        save_flat(scene, os.path.join(OUT, "sdxl-flat.png"))
        scene.delete()
    R["done"] = True
finally:
    R["traceback"] = traceback.format_exc() if not R.get("done") else None
    with open(os.path.join(OUT, "sd.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)

if not R.get("done"):
    raise SystemExit("pie GIMP sd: failed, see sd.json")
