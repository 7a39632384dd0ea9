//! Shared set-up for the integration tests: the ONNX Runtime library,
//! synthetic bundles (exact, known denoisers written as real ONNX graphs)
//! and a bundle made by the real trainer, cached under target/.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use pie::testkit::{write_bundle, Synthetic};

pub const SCENE_RGB: [f32; 3] = [0.2, 0.5, 0.8];
pub const SUBJECT_RGB: [f32; 3] = [0.9, 0.2, 0.1];

/// Points ORT_DYLIB_PATH at the CPU library when the caller did not choose one,
/// so runs here are not cluttered by a CUDA build that cannot start.
pub fn ort() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("ORT_DYLIB_PATH").is_none() {
            let v = pie::locations::ORT_VERSION;
            let cache = pie::locations::Context::current().cache().map(|c| c.path).unwrap_or_default();
            let cpu = cache.join(format!("onnxruntime/cpu-{v}/libonnxruntime.so.{v}"));
            if cpu.is_file() {
                std::env::set_var("ORT_DYLIB_PATH", cpu);
            }
        }
    });
}

/// A library with "ball" (stage 2: scene + subject) and "meadow" (stage 1).
pub fn synthetic_library() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    write_bundle(d.path(), &Synthetic { name: "ball".into(), ..Default::default() }).expect("write ball");
    write_bundle(
        d.path(),
        &Synthetic { name: "meadow".into(), stage: pie::Stage::Scene, ..Default::default() },
    )
    .expect("write meadow");
    d
}

/// A scene of the synthetic scene colour with mild texture.
pub fn scene_rgb8(w: u32, h: u32) -> image::RgbImage {
    let c = SCENE_RGB.map(|v| v * 255.0);
    image::RgbImage::from_fn(w, h, |x, y| {
        let t = ((x * 7 + y * 13) % 17) as f32 - 8.0;
        image::Rgb(c.map(|v| (v + t).clamp(0.0, 255.0) as u8))
    })
}

/// A rectangle selection, feathered over `feather` pixels inside its edge.
pub fn rect_mask(w: u32, h: u32, x0: u32, y0: u32, rw: u32, rh: u32, feather: u32) -> image::GrayImage {
    image::GrayImage::from_fn(w, h, |x, y| {
        if x < x0 || y < y0 || x >= x0 + rw || y >= y0 + rh {
            return image::Luma([0]);
        }
        let d = (x - x0).min(y - y0).min(x0 + rw - 1 - x).min(y0 + rh - 1 - y) + 1;
        let v = (255 * d.min(feather)).checked_div(feather).map_or(255, |v| v as u8);
        image::Luma([v.max(1)])
    })
}

pub fn target_dir() -> PathBuf {
    // tests run with the package folder as working directory; target/ is the workspace's.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or(manifest.join("../target"))
}

pub fn trainer_source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../trainer")
}

/// A library holding "scene" and "subject" learned by the real trainer with
/// tiny settings; made once and cached under target/ (keyed by the trainer's
/// sources). `None`, with the reason printed, where the trainer cannot run.
pub fn trained_library() -> Option<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if std::env::var_os("PIE_TRAINER_PATH").is_none() {
        std::env::set_var("PIE_TRAINER_PATH", trainer_source());
    }
    if let Err(e) = pie::train::find_trainer() {
        eprintln!("SKIP (no trainer environment): {e}");
        return None;
    }
    let key = trainer_tree_key();
    let lib = target_dir().join(format!("pie-test-bundles/{key}"));
    if lib.join("subject/bundle.json").is_file() {
        return Some(lib);
    }
    let _ = std::fs::remove_dir_all(&lib);
    std::fs::create_dir_all(&lib).ok()?;
    let img = lib.join("scene-source.png");
    let subj = lib.join("subject-source.png");
    write_sources(&img, &subj)?;
    let tiny = [
        "--steps",
        "20",
        "--bench-steps",
        "0",
        "--preview-every",
        "0",
        "--checkpoint-every",
        "0",
        "--resolution",
        "16",
        "--threads",
        "1",
    ];
    let pie = env!("CARGO_BIN_EXE_pie");
    let mut args: Vec<String> = vec![
        "--library".into(),
        lib.display().to_string(),
        "learn-scene".into(),
        img.display().to_string(),
        "--name".into(),
        "scene".into(),
        "--device".into(),
        "cpu".into(),
    ];
    args.extend(tiny.iter().map(|a| format!("--trainer-arg={a}")));
    run_ok(pie, &args);
    let mut args: Vec<String> = vec![
        "--library".into(),
        lib.display().to_string(),
        "learn-subject".into(),
        subj.display().to_string(),
        "--scene".into(),
        "scene".into(),
        "--name".into(),
        "subject".into(),
        "--device".into(),
        "cpu".into(),
    ];
    args.extend(tiny.iter().map(|a| format!("--trainer-arg={a}")));
    run_ok(pie, &args);
    Some(lib)
}

fn run_ok(exe: &str, args: &[String]) {
    let out = Command::new(exe).args(args).output().expect("run pie");
    assert!(
        out.status.success(),
        "pie {:?} failed: {}\n{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files in `dir` (names), for "nothing was written" checks.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Mean RGB (0-255) of the pixels where the mask is 255.
pub fn mean_inside(img: &image::RgbImage, mask: &image::GrayImage) -> [f64; 3] {
    let mut s = [0.0; 3];
    let mut n = 0.0;
    for (x, y, p) in img.enumerate_pixels() {
        if mask.get_pixel(x, y).0[0] == 255 {
            for (sc, v) in s.iter_mut().zip(p.0) {
                *sc += f64::from(v);
            }
            n += 1.0;
        }
    }
    s.map(|v| v / n)
}

pub fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

/// Key of everything the trainer runs, sd included (sources of pie_trainer and its sub-packages).
fn trainer_tree_key() -> String {
    use sha2::{Digest, Sha256};
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "py" || e == "json") {
                out.push(p);
            }
        }
    }
    let root = trainer_source().join("pie_trainer");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.strip_prefix(&root).map(|p| p.display().to_string()).unwrap_or_default());
        h.update(std::fs::read(&f).unwrap_or_default());
    }
    pie::bundle::hex(&h.finalize())[..16].to_string()
}

/// A library with sd concepts learned by the real trainer on its tiny
/// checkpoints (`python -m pie_trainer.sd.tiny`), 2 steps each: "scene" and
/// "subject" (4-channel UNet) and "inpaint-scene" (9-channel); made once
/// and cached under target/ (keyed by the trainer's sources). `None`, with
/// the reason printed, where the trainer cannot run sd.
pub fn trained_sd_library() -> Option<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if std::env::var_os("PIE_TRAINER_PATH").is_none() {
        std::env::set_var("PIE_TRAINER_PATH", trainer_source());
    }
    let env = match pie::train::find_trainer() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("SKIP (no trainer environment): {e}");
            return None;
        }
    };
    let probe = env.python_code("import diffusers, transformers, peft, pie_trainer.sd.tiny").output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP (the trainer's environment cannot run the sd backbone): {:?}",
            probe.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        );
        return None;
    }
    let root = target_dir().join(format!("pie-test-sd-bundles/{}", trainer_tree_key()));
    let lib = root.join("library");
    if lib.join("xl-subject/bundle.json").is_file() {
        return Some(lib);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&lib).ok()?;
    for (dir, extra) in [("tiny", None), ("tiny-inpaint", Some("--inpainting"))] {
        let mut c = env.python_code(
            "import runpy; runpy.run_module('pie_trainer.sd.tiny', run_name='__main__', alter_sys=True)",
        );
        c.arg(root.join(dir));
        if let Some(e) = extra {
            c.arg(e);
        }
        let out = c.output().expect("run the trainer's python");
        assert!(out.status.success(), "pie_trainer.sd.tiny failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let img = root.join("scene-source.png");
    let subj = root.join("subject-source.png");
    write_sources(&img, &subj)?;
    let pie = env!("CARGO_BIN_EXE_pie");
    let l = lib.display().to_string();
    let tiny = ["--steps", "2", "--device", "cpu", "--trainer-arg=--resolution", "--trainer-arg=64"];
    let base = root.join("tiny").display().to_string();
    let inpaint_base = root.join("tiny-inpaint").display().to_string();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let (img_arg, subj_arg) = (img.display().to_string(), subj.display().to_string());
    let learn_scene = |name: &str, backbone: &str, base: &str| {
        let mut a = s(&["--library", &l, "learn-scene", &img_arg, "--name", name, "--backbone", backbone]);
        a.extend(s(&["--base", base]));
        a.extend(s(&tiny));
        run_ok(pie, &a);
    };
    let learn_subject = |scene: &str, name: &str| {
        let mut a = s(&["--library", &l, "learn-subject", &subj_arg, "--scene", scene, "--name", name]);
        a.extend(s(&["--class-word", "ball"]));
        a.extend(s(&tiny));
        run_ok(pie, &a);
    };
    learn_scene("scene", "sd", &base);
    learn_subject("scene", "subject");
    // The tiny checkpoint again as ONE file in the original (LDM) layout, learned into a library of
    // its own, where its scene gets the identifier "scene" got: same weights, same pixels expected.
    let single = root.join("tiny.safetensors");
    let mut c = env.python_code(
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
    );
    let out = c
        .arg(trainer_source().join("tests/ldm_layout.py"))
        .arg(root.join("tiny"))
        .arg(&single)
        .output()
        .expect("run the trainer's python");
    assert!(out.status.success(), "ldm_layout.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let file_lib = root.join("library-file");
    let mut a = s(&[
        "--library",
        &file_lib.display().to_string(),
        "learn-scene",
        &img.display().to_string(),
        "--name",
        "scene",
        "--backbone",
        "sd",
        "--base",
        &single.display().to_string(),
    ]);
    a.extend(s(&tiny));
    let out = Command::new(pie).args(&a).env("PIE_CACHE", root.join("cache")).output().expect("run pie");
    assert!(
        out.status.success(),
        "pie {a:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    learn_scene("inpaint-scene", "sd", &inpaint_base);
    // A tiny SDXL checkpoint, its scene and subject (the last bundle written: the marker above).
    let out = env
        .python_code(
            "import runpy; runpy.run_module('pie_trainer.sdxl.tiny', run_name='__main__', alter_sys=True)",
        )
        .arg(root.join("tiny-xl"))
        .output()
        .expect("run the trainer's python");
    assert!(out.status.success(), "pie_trainer.sdxl.tiny failed: {}", String::from_utf8_lossy(&out.stderr));
    let xl_base = root.join("tiny-xl").display().to_string();
    learn_scene("xl-scene", "sdxl", &xl_base);
    learn_subject("xl-scene", "xl-subject");
    Some(lib)
}

/// The photos the trained test bundles learn from: a 96x64 scene and a red
/// disc on transparency as the subject.
fn write_sources(scene: &Path, subject: &Path) -> Option<()> {
    scene_rgb8(96, 64).save(scene).ok()?;
    image::RgbaImage::from_fn(40, 40, |x, y| {
        let (dx, dy) = (x as f32 - 19.5, y as f32 - 19.5);
        let a = if dx * dx + dy * dy <= 18.0 * 18.0 { 255 } else { 0 };
        image::Rgba([230, 50, 30, a])
    })
    .save(subject)
    .ok()
}
