"""Checks for tests/gimp/run.sh, run with the trainer venv's Python (numpy,
Pillow). Each sub-command exits 0 when the check holds, else prints why and
exits 1.

  mask SCENE X,Y,W,H OUT      write the selection rectangle as a mask PNG
  layer E2E_JSON X,Y,W,H [SUBJECT SEED]   the new layer: on top, named after subject+seed
                              (default subj, 1234), in the selection
  outside SCENE RESULT MASK   pixels outside the mask are bit-identical
  changed SCENE RESULT MASK   the masked region changed
  same A B                    two images are bit-identical (RGB and alpha)
  variants E2E_JSON           two variant layers named after seeds 50 and 51
  format E2E_JSON KIND X,Y,W,H BEFORE AFTER MASK   other precisions/modes/offsets
  menus E2E_JSON              the three procedures: labels, Filters > Personalize, help, attribution
  arguments E2E_JSON          the sd arguments come after the older ones (positional scripts keep working)
  sd-bundle BUNDLE_JSON RES SCENE_WORD SUBJECT_WORD   an sd subject bundle: backbone, resolution, class words
  sdxl-scene BUNDLE_JSON RES                         an sdxl scene bundle: backbone, conditioning, resolution
  sd-bad-prompt SD_JSON       Add Subject refused a prompt with an unknown placeholder, named it, added no layer
  why E2E_JSON                print the failure recorded by e2e.py
  gui-dialog | gui-last-values | gui-undo | gui-cancel | gui-cancel-scene | gui-forget GUI_JSON
"""
import json
import os
import sys

import numpy as np
from PIL import Image


def rgb(path):
    im = Image.open(path)
    a = np.asarray(im.convert("RGBA"))
    return a


def fail(msg):
    print(msg)
    sys.exit(1)


def rect(s):
    return tuple(int(v) for v in s.split(","))


def main(argv):
    cmd = argv[0]
    if cmd == "mask":
        scene, r, out = argv[1], rect(argv[2]), argv[3]
        w, h = Image.open(scene).size
        m = np.zeros((h, w), np.uint8)
        x, y, rw, rh = r
        m[y:y + rh, x:x + rw] = 255
        Image.fromarray(m, "L").save(out)
    elif cmd == "layer":
        r = json.load(open(argv[1]))
        x, y, w, h = rect(argv[2])
        subj, seed = (argv[3], argv[4]) if len(argv) > 4 else ("subj", "1234")
        if r["layers_after"] != r["layers_before"] + 1:
            fail(f"{r['layers_before']} layers before, {r['layers_after']} after (want one more)")
        top = r["layers"][0]
        if subj not in top["name"] or seed not in top["name"]:
            fail(f"the new layer is named {top['name']!r}: want the subject {subj!r} and the seed {seed} in it")
        if r["source_position"] != 1:
            fail(f"the source layer is at position {r['source_position']}, want 1 (right under the new layer)")
        if not (top["x"] >= x and top["y"] >= y and top["x"] + top["w"] <= x + w and top["y"] + top["h"] <= y + h):
            fail(f"the new layer {top} is not inside the selection {x},{y} {w}x{h}")
        if top["w"] <= 0 or top["h"] <= 0:
            fail(f"the new layer is empty: {top}")
    elif cmd in ("outside", "changed"):
        a, b = rgb(argv[1]), rgb(argv[2])
        m = np.asarray(Image.open(argv[3]).convert("L")) > 0
        if a.shape != b.shape:
            fail(f"sizes differ: {a.shape} vs {b.shape}")
        if cmd == "outside":
            diff = np.any(a != b, axis=2) & ~m
            if diff.any():
                ys, xs = np.nonzero(diff)
                fail(f"{diff.sum()} pixels outside the selection changed, e.g. at ({xs[0]},{ys[0]})")
        else:
            d = np.abs(a[m][:, :3].astype(int) - b[m][:, :3].astype(int)).mean()
            if d < 2.0:
                fail(f"the selected region barely changed (mean abs difference {d:.2f})")
            print(f"mean abs difference inside: {d:.1f}")
    elif cmd == "same":
        a, b = rgb(argv[1]), rgb(argv[2])
        if a.shape != b.shape:
            fail(f"sizes differ: {a.shape} vs {b.shape}")
        diff = np.any(a != b, axis=2)
        if diff.any():
            ys, xs = np.nonzero(diff)
            fail(f"{diff.sum()} pixels differ (max {np.abs(a.astype(int) - b.astype(int)).max()}), "
                 f"e.g. at ({xs[0]},{ys[0]}): {a[ys[0], xs[0]]} vs {b[ys[0], xs[0]]}")
    elif cmd == "variants":
        r = json.load(open(argv[1]))
        v = r.get("variant_layers", [])
        names = [l["name"] for l in v]
        if len(v) != 2 or not any("50" in n for n in names) or not any("51" in n for n in names):
            fail(f"variant layers: {names} (want two, seeds 50 and 51)")
    elif cmd == "format":
        r = json.load(open(argv[1]))
        f = r.get("formats", {}).get(argv[2])
        if not f:
            fail(f"no result for {argv[2]}")
        x, y, w, h = rect(argv[3])
        if len(f["layers"]) < 2:
            fail(f"no new layer: {f['layers']}")
        top = f["layers"][0]
        if not (top["x"] >= x and top["y"] >= y and top["x"] + top["w"] <= x + w and top["y"] + top["h"] <= y + h):
            fail(f"the new layer {top} is not inside the selection {x},{y} {w}x{h}")
        a, b = rgb(argv[4]), rgb(argv[5])
        m = np.asarray(Image.open(argv[6]).convert("L")) > 0
        diff = np.any(a != b, axis=2) & ~m
        if diff.any():
            fail(f"{diff.sum()} pixels outside the selection changed ({f['precision']})")
        d = np.abs(a[m][:, :3].astype(int) - b[m][:, :3].astype(int)).mean()
        if d < 2.0:
            fail(f"the selected region barely changed (mean abs difference {d:.2f})")
    elif cmd == "menus":
        r = json.load(open(argv[1]))
        want = {"plug-in-pie-learn-scene": "Learn Scene", "plug-in-pie-learn-subject": "Learn Subject",
                "plug-in-pie-add-subject": "Add Subject to Selection", "plug-in-pie-forget-concept": "Forget Concept",
                "plug-in-pie-blend-subject": "Blend Pasted Subject"}
        for name, label in want.items():
            m = r.get("menus", {}).get(name)
            if not m:
                fail(f"{name} is not registered")
            if m["label"].replace("_", "").rstrip(".") != label:
                fail(f"{name}: menu label {m['label']!r}, want {label}")
            if "<Image>/Filters/Personalize" not in m["paths"]:
                fail(f"{name}: menu paths {m['paths']}")
            for k in ("blurb", "help", "authors", "copyright", "date"):
                if not m.get(k):
                    fail(f"{name}: no {k}")
    elif cmd == "arguments":
        r = json.load(open(argv[1]))
        args = {n: (m or {}).get("arguments", []) for n, m in r.get("menus", {}).items()}
        want = {
            "plug-in-pie-learn-scene": (["name", "preset", "device", "steps", "replace"],
                                        ["backbone", "base", "class-word", "trainer-args", "resume", "minutes",
                                         "base-file"]),
            "plug-in-pie-learn-subject": (["scene", "name", "preset", "device", "steps", "replace"],
                                          ["class-word", "trainer-args", "resume", "minutes"]),
            "plug-in-pie-add-subject": (["concept", "seed", "steps", "strength", "guidance", "variants", "device"],
                                        ["concept-defaults", "scheduler", "prompt", "negative-prompt", "scale", "anchor",
                                         "flip", "harmonize", "shadow", "match-grain"]),
            "plug-in-pie-blend-subject": (["concept", "seed", "steps", "device", "harmonize", "shadow", "match-grain"],
                                          ["learn-scene-first", "new-scene", "learn-preset", "learn-steps"]),
        }
        for name, (old, new) in want.items():
            a = [x for x in args.get(name, []) if x not in ("run-mode", "image", "drawables")]
            if a[:len(old) + len(new)] != old + new:
                fail(f"{name}: arguments {a}, want {old + new} first")
    elif cmd == "blend":
        # blend E2E_JSON BEFORE AFTER UNTOUCHED WITH_SUBJECT: one new layer on top; the pasted layer and the
        # scene unchanged; the pasted subject adapted; the bottom layer refused with a reason
        r = json.load(open(argv[1]))["blend"]
        before, after, untouched = (rgb(p) for p in argv[2:5])
        names = [x["name"] for x in r["layers"]]
        if len(names) != 3 or "blended" not in names[0] or names[1] != "pasted":
            fail(f"layers {names}: want the blended result on top of 'pasted' and the scene")
        if (untouched != before).any():
            fail("the pasted layer or the scene changed (without the result layer the image differs)")
        changed = np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 2
        if changed.sum() < 100:
            fail(f"only {changed.sum()} pixels differ: the subject was not blended")
        if not r.get("bottom_error") or "below" not in r["bottom_error"] or r["layers_after_refusal"] != 3:
            fail(f"Blend on the bottom layer: {r.get('bottom_error')!r}, layers {r.get('layers_after_refusal')}")
        # with the subject concept: a fourth layer, just above 'pasted', and a result of its own
        names = [x["name"] for x in r["with_subject"]]
        if len(names) != 4 or "blended" not in names[1] or names[2] != "pasted":
            fail(f"layers after Blend with the subject concept {names}: want its result just above 'pasted'")
        with_subject = rgb(argv[5])
        # same seed and inputs, another concept: any difference is the subject concept's doing
        if not (with_subject != after).any():
            fail("Blend with the subject concept gave the scene concept's result: the subject was not used")
        if (np.abs(with_subject.astype(int) - before.astype(int)).max(axis=2) > 2).sum() < 100:
            fail("Blend with the subject concept did not blend the subject")
    elif cmd == "blend-learned":
        # blend-learned E2E_JSON BEFORE LEARNED_FIRST LIBRARY: Blend that learns the scene from the layer below
        # first refuses a name the library has (nothing added), then learns a new scene and blends into it
        r = json.load(open(argv[1]))["blend"]
        err = r.get("existing_name_error") or ""
        if "already exists" not in err or r.get("layers_after_existing_name") != 0:
            fail(f"learning first under an existing name: {err!r}, {r.get('layers_after_existing_name')} layers added")
        names = [x["name"] for x in r.get("learned_first", [])]
        if len(names) != 5 or "blended" not in names[2] or names[3] != "pasted":
            fail(f"layers {names}: want the result of learning first just above 'pasted'")
        bundle = os.path.join(argv[4], "below", "bundle.json")
        if not os.path.isfile(bundle) or json.load(open(bundle)).get("stage") != 1:
            fail(f"no scene 'below' learned into the library ({bundle})")
        before, learned = rgb(argv[2]), rgb(argv[3])
        if (np.abs(learned.astype(int) - before.astype(int)).max(axis=2) > 2).sum() < 100:
            fail("Blend after learning the scene first did not blend the subject")
    elif cmd == "sdxl-scene":
        m = json.load(open(argv[1]))
        if m.get("backbone") != "sdxl" or m.get("stage") != 1 or "conditioning" not in m.get("model", {}):
            fail(f"backbone {m.get('backbone')!r}, stage {m.get('stage')}: want an sdxl scene with its conditioning")
        if m["model"]["resolution"] != int(argv[2]):
            fail(f"resolution {m['model']['resolution']}, want {argv[2]} (the trainer-args argument)")
    elif cmd == "sd-bundle":
        m = json.load(open(argv[1]))
        if m.get("backbone") != "sd" or m.get("stage") != 2:
            fail(f"backbone {m.get('backbone')!r}, stage {m.get('stage')}: want an sd subject")
        if m["model"]["resolution"] != int(argv[2]):
            fail(f"resolution {m['model']['resolution']}, want {argv[2]} (the trainer-args argument)")
        words = {c["role"]: c.get("class_word") for c in m["tokens"]["concepts"]}
        if words != {"scene": argv[3], "subject": argv[4]}:
            fail(f"class words {words}, want scene {argv[3]!r} and subject {argv[4]!r} (the class-word arguments)")
    elif cmd == "sd-bad-prompt":
        b = json.load(open(argv[1])).get("bad_prompt")
        if not b or not b.get("refused"):
            fail(f"Add Subject ran with an unknown placeholder in its prompt: {b}")
        if "unknown placeholder {subjcet}" not in (b.get("error") or ""):
            fail(f"the error does not name the unknown placeholder: {b.get('error')!r}")
        if b.get("layers_added"):
            fail(f"a refused Add Subject still added {b['layers_added']} layer(s)")
    elif cmd == "why":
        r = json.load(open(argv[1]))
        bad = {k: s for k, s in r.get("steps", {}).items() if not s["ok"]}
        print(json.dumps(bad) if bad else (r.get("traceback") or "no failure recorded").strip().splitlines()[-1])
        sys.exit(1)
    elif cmd.startswith("gui-"):
        r = json.load(open(argv[1]))
        if r.get("traceback"):
            fail(r["traceback"].strip().splitlines()[-1])
        n0 = len(r["layers_0"])
        if cmd == "gui-dialog":
            st, err = r["interactive"]
            if "SUCCESS" not in st or len(r["layers_1"]) != n0 + 1:
                fail(f"interactive run: {st} {err}; layers {r['layers_1']}")
            if "777" not in r["layers_1"][0]:
                fail(f"the dialog's run made {r['layers_1'][0]!r}, want seed 777")
        elif cmd == "gui-last-values":
            st, err = r["last_vals"]
            if "SUCCESS" not in st or len(r["layers_2"]) != n0 + 2:
                fail(f"WITH_LAST_VALS run: {st} {err}; layers {r['layers_2']}")
            if "777" not in r["layers_2"][0]:
                fail(f"WITH_LAST_VALS made {r['layers_2'][0]!r}: want the remembered seed 777, not the argument 5")
        elif cmd == "gui-undo":
            st, err = r["variants"]
            if "SUCCESS" not in st or len(r["layers_3"]) != n0 + 4:
                fail(f"variants run: {st} {err}; layers {r['layers_3']}")
            if r["layers_4"] != r["layers_2"]:
                fail(f"after one undo the layers are {r['layers_4']}, want {r['layers_2']}")
        elif cmd == "gui-cancel":
            if "CANCEL" not in r.get("learn_cancel", ""):
                fail(f"Learn Subject after Escape returned {r.get('learn_cancel')}, want CANCEL")
            if "never-learned" in r.get("library_after_cancel", []):
                fail("the cancelled Learn Subject left a concept in the library")
        elif cmd == "gui-cancel-scene":
            if "CANCEL" not in r.get("learn_scene_cancel", ""):
                fail(f"Learn Scene after Escape returned {r.get('learn_scene_cancel')}, want CANCEL")
            if "never-learned-scene" in r.get("library_after_scene_cancel", []):
                fail("the cancelled Learn Scene left a concept in the library")
        elif cmd == "gui-forget":
            st, err = r.get("forget", ["(not run)", None])
            lib = r.get("library_after_forget", [])
            if "SUCCESS" not in st:
                fail(f"Forget Concept confirmed with Return returned {st} {err}")
            if "z-forget-me" in lib or "subj" not in lib:
                fail(f"after Forget Concept the library holds {lib}: want z-forget-me gone and subj kept")
    else:
        fail(f"unknown check {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
