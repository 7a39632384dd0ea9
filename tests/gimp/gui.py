# The interactive half of the GIMP tests, run by GIMP 3 (the GUI, under Xvfb)
# as a Python-Fu batch while tests/gimp/gui.sh drives the screen with xdotool:
#
# 1. Add Subject runs INTERACTIVE: its dialog (generated from the declared
#    arguments) appears; gui.sh screenshots it and presses Return.
# 2. Run again WITH_LAST_VALS and a different seed argument: the dialog's
#    values are remembered, so the layer carries the dialog's seed.
# 3. Run NONINTERACTIVE with 2 variants, then write "undo-ready": gui.sh
#    presses Ctrl+Z in the image window, and one undo must remove both layers.
# 4. Learn Subject INTERACTIVE: gui.sh screenshots its dialog (the scene list
#    comes from the library) and presses Escape: cancelled, nothing learned.
# 5. Forget Concept INTERACTIVE on a copy of the subject: gui.sh screenshots
#    its dialog and presses Return: the copy is deleted, nothing else.
# 6. Learn Scene with the display open: gui.sh screenshots the progress.
#
# Writes $PIE_TEST_DIR/out/gui.json; the checks are in tests/gimp/run.sh.
import json
import os
import shutil
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

T = os.environ["PIE_TEST_DIR"]
OUT = os.path.join(T, "out")
ADD_STEPS = int(os.environ.get("PIE_TEST_ADD_STEPS", "12"))
X, Y, W, H = (int(v) for v in os.environ["PIE_TEST_RECT"].split(","))
PDB = Gimp.get_pdb()
R = {}


def marker(name):
    with open(os.path.join(OUT, name), "w") as f:
        f.write("1")


def call(mode, image, drawables, proc_name="plug-in-pie-add-subject", **args):
    proc = PDB.lookup_procedure(proc_name)
    cfg = proc.create_config()
    cfg.set_property("run-mode", mode)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", drawables)
    for k, v in args.items():
        cfg.set_property(k, v)
    res = proc.run(cfg)
    status = res.index(0)
    err = None
    if status != Gimp.PDBStatusType.SUCCESS:
        try:
            err = PDB.get_last_error()
        except Exception:  # noqa: BLE001
            err = "?"
    return status.value_name, err


def names(image):
    return [l.get_name() for l in image.get_layers()]


try:
    os.makedirs(OUT, exist_ok=True)
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(os.path.join(T, "data", "scene.png")))
    Gimp.Display.new(image)
    layer = image.get_layers()[0]
    image.select_rectangle(Gimp.ChannelOps.REPLACE, X, Y, W, H)
    Gimp.displays_flush()
    R["layers_0"] = names(image)

    marker("dialog-expected")
    R["interactive"] = call(Gimp.RunMode.INTERACTIVE, image, [layer],
                            concept="subj", seed=777, steps=ADD_STEPS, device="cpu")
    R["layers_1"] = names(image)

    R["last_vals"] = call(Gimp.RunMode.WITH_LAST_VALS, image, [layer],
                          concept="subj", seed=5, steps=ADD_STEPS, device="cpu")
    R["layers_2"] = names(image)

    R["variants"] = call(Gimp.RunMode.NONINTERACTIVE, image, [layer],
                         concept="subj", seed=42, steps=ADD_STEPS, variants=2, device="cpu")
    R["layers_3"] = names(image)
    Gimp.displays_flush()

    marker("undo-ready")
    n = len(R["layers_3"])
    deadline = time.time() + 60
    while time.time() < deadline and len(image.get_layers()) == n:
        time.sleep(0.2)
    time.sleep(1.0)  # an undo that wrongly removed one layer at a time would show now
    R["layers_4"] = names(image)

    # Learn Subject's dialog lists the library's scenes; Escape cancels it
    marker("learn-dialog-expected")
    R["learn_cancel"] = call(Gimp.RunMode.INTERACTIVE, image, [layer],
                             proc_name="plug-in-pie-learn-subject", name="never-learned")[0]
    R["library_after_cancel"] = sorted(os.listdir(os.path.join(os.environ["HOME"], ".local", "share", "pie")))

    # Learn Scene's dialog with the model sd: the checkpoint folder and class
    # word beside the model (gui.sh takes a screenshot); Escape cancels it
    marker("learn-scene-dialog-expected")
    R["learn_scene_cancel"] = call(Gimp.RunMode.INTERACTIVE, image, [layer],
                                   proc_name="plug-in-pie-learn-scene", name="never-learned-scene",
                                   backbone="sd")[0]
    R["library_after_scene_cancel"] = sorted(os.listdir(os.path.join(os.environ["HOME"], ".local", "share", "pie")))

    # Forget Concept's dialog lists the library with sizes and starts at the
    # concept argument's entry (a copy of "subj", last in the list, so the
    # dialog's first entry would be a different one); gui.sh takes a screenshot
    # and presses Return: that copy, and only it, is deleted
    lib = os.path.join(os.environ["HOME"], ".local", "share", "pie")
    shutil.copytree(os.path.join(lib, "subj"), os.path.join(lib, "z-forget-me"))
    marker("forget-dialog-expected")
    R["forget"] = call(Gimp.RunMode.INTERACTIVE, image, [layer],
                       proc_name="plug-in-pie-forget-concept", concept="z-forget-me")
    R["library_after_forget"] = sorted(os.listdir(lib))

    # Learning with GIMP's progress bar showing stage, step and time left
    # (gui.sh takes a screenshot while it runs)
    marker("learning")
    R["learn_progress"] = call(Gimp.RunMode.NONINTERACTIVE, image, [layer],
                               proc_name="plug-in-pie-learn-scene", name="gui-scene", device="cpu",
                               steps=int(os.environ.get("PIE_TEST_TRAIN_STEPS", "60")) * 2)[0]
    image.clean_all()
    R["done"] = True
finally:
    R["traceback"] = None if R.get("done") else traceback.format_exc()
    with open(os.path.join(OUT, "gui.json"), "w") as f:
        json.dump(R, f, indent=1)
    marker("gui-finished")
