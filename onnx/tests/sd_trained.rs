//! `pie learn-scene/learn-subject --backbone sd` with the real trainer on its
//! tiny checkpoints, then `pie add` on what it wrote (real exported graphs,
//! the real CLIP tokenizer files the trainer ships into the bundle).

mod common;

use std::process::{Command, Output};

use common::*;

fn pie(lib: &std::path::Path, args: &[&str]) -> Output {
    ort();
    Command::new(env!("CARGO_BIN_EXE_pie"))
        .arg("--library")
        .arg(lib)
        .args(args)
        .env_remove("PIE_HOME")
        .output()
        .expect("run pie")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A 96x72 scene and a rectangular selection in a folder of their own.
struct Photo {
    dir: tempfile::TempDir,
    scene: std::path::PathBuf,
    mask: std::path::PathBuf,
}

impl Photo {
    fn new() -> Photo {
        let dir = tempfile::tempdir().unwrap();
        let (scene, mask) = (dir.path().join("scene.png"), dir.path().join("sel.png"));
        scene_rgb8(96, 72).save(&scene).unwrap();
        rect_mask(96, 72, 30, 20, 32, 28, 1).save(&mask).unwrap();
        Photo { dir, scene, mask }
    }

    /// `pie add` of `concept` (4 steps, seed 1, then `extra`): the pixels outside
    /// the selection exactly the scene's, more than 100 inside changed; the file's bytes.
    fn add(&self, lib: &std::path::Path, concept: &str, out: &str, extra: &[&str]) -> Vec<u8> {
        let out = self.dir.path().join(out);
        let mut a = vec![
            "add",
            self.scene.to_str().unwrap(),
            "--selection",
            self.mask.to_str().unwrap(),
            "--concept",
            concept,
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "4",
            "--device",
            "cpu",
            "--seed",
            "1",
        ];
        a.extend_from_slice(extra);
        let o = pie(lib, &a);
        assert!(o.status.success(), "{concept} {extra:?}: {}", text(&o));
        let (img, scene) =
            (image::open(&out).unwrap().to_rgb8(), image::open(&self.scene).unwrap().to_rgb8());
        let sel = image::open(&self.mask).unwrap().to_luma8();
        let mut inside_changed = 0;
        for (x, y, p) in img.enumerate_pixels() {
            if sel.get_pixel(x, y).0[0] == 0 {
                assert_eq!(p, scene.get_pixel(x, y), "{concept}: outside the selection at {x},{y}");
            } else if p != scene.get_pixel(x, y) {
                inside_changed += 1;
            }
        }
        assert!(inside_changed > 100, "{concept} {extra:?}: only {inside_changed} pixels changed inside");
        std::fs::read(&out).unwrap()
    }
}

#[test]
fn trained_sd_bundles_load_and_add_keeps_the_outside() {
    let Some(lib) = trained_sd_library() else { return };
    let o = pie(&lib, &["concepts", "show", "subject"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("backbone sd at") && text(&o).contains("precision float32"), "{}", text(&o));
    let b = pie::Library::open(Some(lib.clone())).unwrap().load("inpaint-scene").unwrap();
    match &b.manifest.model {
        pie::manifest::Model::Sd(m) => assert_eq!(m.unet_in_channels, 9),
        _ => panic!("not sd"),
    }

    let photo = Photo::new();
    let run = |concept: &str, out: &str, extra: &[&str]| photo.add(&lib, concept, out, extra);
    let a = run("subject", "a.png", &[]);
    let b = run("subject", "b.png", &[]);
    assert_eq!(a, b, "same seed, different bytes");
    run("subject", "c.png", &["--scheduler", "dpm++2m", "--prompt", "a photo of {subject} in {scene}"]);
    run("scene", "d.png", &["--strength", "1"]);
    run("inpaint-scene", "e.png", &["--scheduler", "dpm++2m"]);
}

#[test]
fn a_scene_learned_from_a_single_file_checkpoint_adds_what_its_folder_gives() {
    let Some(lib) = trained_sd_library() else { return };
    let file_lib = lib.parent().unwrap().join("library-file");
    let o = pie(&file_lib, &["concepts", "show", "scene"]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("scene.png");
    let mask = dir.path().join("sel.png");
    scene_rgb8(80, 64).save(&scene).unwrap();
    rect_mask(80, 64, 20, 16, 32, 24, 1).save(&mask).unwrap();
    let add = |lib: &std::path::Path, out: &str| {
        let out = dir.path().join(out);
        let o = pie(
            lib,
            &[
                "add",
                scene.to_str().unwrap(),
                "--selection",
                mask.to_str().unwrap(),
                "--concept",
                "scene",
                "--out",
                out.to_str().unwrap(),
                "--steps",
                "3",
                "--device",
                "cpu",
                "--seed",
                "2",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read(&out).unwrap()
    };
    assert_eq!(
        add(&file_lib, "file.png"),
        add(&lib, "folder.png"),
        "the single file's scene adds other pixels"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(file_lib.join("scene/bundle.json")).unwrap()).unwrap();
    let base = &m["model"]["base"];
    assert_eq!(base["name"], "tiny");
    assert!(base["path"].as_str().unwrap().ends_with("tiny.safetensors"), "{base}");
}

#[test]
fn trained_sdxl_bundles_show_their_conditioning_and_add_keeps_the_outside() {
    let Some(lib) = trained_sd_library() else { return };
    let o = pie(&lib, &["concepts", "show", "xl-subject"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("backbone sdxl at") && t.contains("two text encoders"), "{t}");
    let photo = Photo::new();
    let run = |concept: &str, out: &str, extra: &[&str]| photo.add(&lib, concept, out, extra);
    let a = run("xl-subject", "a.png", &[]);
    assert_eq!(a, run("xl-subject", "b.png", &[]), "same seed, different bytes");
    run("xl-subject", "d.png", &["--scheduler", "dpm++2m", "--prompt", "a photo of {subject} in {scene}"]);
    run("xl-scene", "e.png", &["--strength", "1"]);
}
