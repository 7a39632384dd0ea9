# Headless end-to-end run of pie's GIMP plug-in, executed by GIMP 3's
# Python-Fu batch interpreter (gimp-console-3.0 --batch-interpreter=python-fu-eval)
# inside the GIMP 3 host. tests/gimp/run.sh starts it and checks the files it
# writes; this script only drives GIMP and records what GIMP reports.
#
# Environment: PIE_TEST_DIR (the test folder as seen inside the host, with
# data/scene.png, data/subject.*), PIE_TEST_RECT "x,y,w,h" (the selection),
# PIE_TEST_TRAIN_STEPS, PIE_TEST_ADD_STEPS.
import json
import os
import sys
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

sys.path.insert(0, "/pie/tests/gimp")   # exec'd by python-fu-eval: no __file__
from gimpkit import layer_info, load, save_flat  # noqa: E402

T = os.environ["PIE_TEST_DIR"]
OUT = os.path.join(T, "out")
TRAIN_STEPS = int(os.environ.get("PIE_TEST_TRAIN_STEPS", "40"))
ADD_STEPS = int(os.environ.get("PIE_TEST_ADD_STEPS", "12"))
X, Y, W, H = (int(v) for v in os.environ["PIE_TEST_RECT"].split(","))
SUBJECT = os.environ["PIE_TEST_SUBJECT"]
R = {"steps": {}, "times": {}}
PDB = Gimp.get_pdb()


def last_error():
    try:
        return PDB.get_last_error()
    except Exception:  # noqa: BLE001 - only for the report
        return "?"


def call(proc_name, image, drawables, **args):
    proc = PDB.lookup_procedure(proc_name)
    if proc is None:
        raise RuntimeError(f"{proc_name} is not registered: the plug-in was not installed or did not register")
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
    R["steps"][f"{proc_name} {args.get('name') or args.get('seed') or ''}".strip()] = {
        "ok": ok,
        "status": status.value_name,
        "error": None if ok else last_error(),
        "seconds": round(time.time() - t0, 2),
    }
    if not ok:
        raise RuntimeError(f"{proc_name} failed: {status.value_name}: {last_error()}")
    return time.time() - t0


try:
    os.makedirs(OUT, exist_ok=True)
    R["menus"] = {}
    for n in ("plug-in-pie-learn-scene", "plug-in-pie-learn-subject", "plug-in-pie-add-subject",
              "plug-in-pie-forget-concept", "plug-in-pie-blend-subject"):
        p = PDB.lookup_procedure(n)
        R["menus"][n] = None if p is None else {
            "label": p.get_menu_label(), "paths": list(p.get_menu_paths()), "blurb": p.get_blurb(),
            "help": p.get_help(), "authors": p.get_authors(), "copyright": p.get_copyright(),
            "date": p.get_date(), "image_types": p.get_image_types(),
            "arguments": [a.name for a in p.get_arguments()]}
    scene = load(os.path.join(T, "data", "scene.png"))
    scene_layer = scene.get_layers()[0]
    R["times"]["learn_scene"] = call(
        "plug-in-pie-learn-scene", scene, [scene_layer],
        name="scene", preset="quick", device="cpu", steps=TRAIN_STEPS, replace=True)

    subject = load(SUBJECT)
    subject_layer = subject.get_layers()[0]
    sw, sh = subject.get_width(), subject.get_height()
    # the subject's mask: an ellipse around the middle of the photo
    subject.select_ellipse(Gimp.ChannelOps.REPLACE, sw * 0.1, sh * 0.08, sw * 0.8, sh * 0.84)
    R["times"]["learn_subject"] = call(
        "plug-in-pie-learn-subject", subject, [subject_layer],
        scene="scene", name="subj", preset="quick", device="cpu", steps=TRAIN_STEPS, replace=True,
        minutes=30.0)
    subject.delete()

    scene.select_rectangle(Gimp.ChannelOps.REPLACE, X, Y, W, H)
    R["layers_before"] = len(scene.get_layers())
    R["times"]["add"] = call(
        "plug-in-pie-add-subject", scene, [scene_layer],
        concept="subj", seed=1234, steps=ADD_STEPS, strength=0.7, guidance=3.0, concept_defaults=False, variants=1, device="cpu")
    layers = scene.get_layers()
    R["layers_after"] = len(layers)
    R["layers"] = [layer_info(l) for l in layers]
    R["source_position"] = scene.get_item_position(scene_layer)
    R["selected"] = [l.get_name() for l in scene.get_selected_layers()]
    save_flat(scene, os.path.join(OUT, "flat.png"))
    save_flat(scene, os.path.join(OUT, "source.png"), hide=[0])

    # K variants: K layers, named after their seeds
    before = {l.get_id() for l in scene.get_layers()}
    R["times"]["add_variants"] = call(
        "plug-in-pie-add-subject", scene, [scene_layer],
        concept="subj", seed=50, steps=ADD_STEPS, strength=0.7, guidance=3.0, concept_defaults=False, variants=2, device="cpu")
    layers = scene.get_layers()
    R["variant_layers"] = [layer_info(l) for l in layers if l.get_id() not in before]

    # Other precisions and modes, and a layer that is offset on the canvas:
    # each is flattened before and after Add, for run.sh to compare.
    R["formats"] = {}
    for kind in ("u16", "float-linear", "gray", "offset-layer"):
        img = load(os.path.join(T, "data", "scene.png"))
        layer = img.get_layers()[0]
        if kind == "u16":
            img.convert_precision(Gimp.Precision.U16_NON_LINEAR)
        elif kind == "float-linear":
            img.convert_precision(Gimp.Precision.FLOAT_LINEAR)
        elif kind == "gray":
            img.convert_grayscale()
        elif kind == "offset-layer":
            layer.add_alpha()
            layer.resize(layer.get_width() - 30, layer.get_height() - 20, 0, 0)
            layer.set_offsets(30, 20)
        layer = img.get_layers()[0]
        img.select_rectangle(Gimp.ChannelOps.REPLACE, X, Y, W, H)
        save_flat(img, os.path.join(OUT, f"{kind}-before.png"))
        call("plug-in-pie-add-subject", img, [layer],
             concept="subj", seed=7, steps=ADD_STEPS, strength=0.7, guidance=3.0, concept_defaults=False, variants=1, device="cpu")
        save_flat(img, os.path.join(OUT, f"{kind}-after.png"))
        layers = img.get_layers()
        R["formats"][kind] = {"layers": [layer_info(l) for l in layers],
                              "precision": img.get_precision().value_name, "base_type": img.get_base_type().value_name}
        img.delete()
    # Blend Pasted Subject: a red disc pasted as its own layer over the scene
    img = load(os.path.join(T, "data", "scene.png"))
    base = img.get_layers()[0]
    pasted = Gimp.Layer.new(img, "pasted", img.get_width(), img.get_height(), Gimp.ImageType.RGBA_IMAGE, 100.0,
                            Gimp.LayerMode.NORMAL)
    img.insert_layer(pasted, None, 0)
    img.select_ellipse(Gimp.ChannelOps.REPLACE, X + W * 0.3, Y + H * 0.2, W * 0.4, H * 0.5)
    Gimp.context_set_foreground(Gegl.Color.new("red"))
    pasted.edit_fill(Gimp.FillType.FOREGROUND)
    Gimp.Selection.none(img)
    save_flat(img, os.path.join(OUT, "blend-before.png"))
    call("plug-in-pie-blend-subject", img, [pasted], concept="scene", seed=3, steps=ADD_STEPS, device="cpu")
    R["blend"] = {"layers": [layer_info(l) for l in img.get_layers()]}
    save_flat(img, os.path.join(OUT, "blend-after.png"))
    save_flat(img, os.path.join(OUT, "blend-untouched.png"), hide=[0])
    # the bottom layer has no scene below it: refused, nothing added
    try:
        call("plug-in-pie-blend-subject", img, [base], concept="scene", seed=3, steps=ADD_STEPS, device="cpu")
        R["blend"]["bottom_error"] = None
    except RuntimeError as e:
        R["blend"]["bottom_error"] = str(e)
    R["blend"]["layers_after_refusal"] = len(img.get_layers())
    # the subject concept learned in that scene blends too, with its own token at the edge
    call("plug-in-pie-blend-subject", img, [pasted], concept="subj", seed=3, steps=ADD_STEPS, device="cpu")
    R["blend"]["with_subject"] = [layer_info(l) for l in img.get_layers()]
    save_flat(img, os.path.join(OUT, "blend-subject-after.png"), hide=[0])
    # learn the scene from the layer below first: a new concept, then the blend into it
    before_learn = len(img.get_layers())
    try:  # a name the library has already: refused before any learning, nothing added
        call("plug-in-pie-blend-subject", img, [pasted], learn_scene_first=True, new_scene="scene", seed=3,
             steps=ADD_STEPS, device="cpu")
        R["blend"]["existing_name_error"] = None
    except RuntimeError as e:
        R["blend"]["existing_name_error"] = str(e)
    R["blend"]["layers_after_existing_name"] = len(img.get_layers()) - before_learn
    R["times"]["blend_learning_first"] = call(
        "plug-in-pie-blend-subject", img, [pasted], learn_scene_first=True, new_scene="below", learn_preset="quick",
        learn_steps=TRAIN_STEPS, seed=3, steps=ADD_STEPS, device="cpu")
    R["blend"]["learned_first"] = [layer_info(l) for l in img.get_layers()]
    save_flat(img, os.path.join(OUT, "blend-learned-first.png"), hide=[0, 1])
    img.delete()
    R["done"] = True
finally:
    R["traceback"] = traceback.format_exc() if not R.get("done") else None
    with open(os.path.join(OUT, "e2e.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)

if not R.get("done"):
    raise SystemExit("pie GIMP e2e: failed, see e2e.json")
