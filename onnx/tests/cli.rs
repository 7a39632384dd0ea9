//! The `pie` command line: exit codes, messages, outputs written whole or
//! not at all, and the trainer round trip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn pie(lib: &Path, args: &[&str]) -> Output {
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

/// A scene, a selection and an empty output folder.
struct Case {
    _dir: tempfile::TempDir,
    lib: tempfile::TempDir,
    scene: PathBuf,
    mask: PathBuf,
    outdir: PathBuf,
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("scene.png");
    let mask = dir.path().join("sel.png");
    scene_rgb8(96, 72).save(&scene).unwrap();
    rect_mask(96, 72, 30, 20, 32, 32, 4).save(&mask).unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    Case { lib: synthetic_library(), _dir: dir, scene, mask, outdir }
}

fn add_args<'a>(c: &'a Case, out: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "add".into(),
        c.scene.display().to_string(),
        "--selection".into(),
        c.mask.display().to_string(),
        "--concept".into(),
        "ball".into(),
        "--out".into(),
        out.into(),
        "--steps".into(),
        "8".into(),
        "--device".into(),
        "cpu".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_add(c: &Case, out: &str, extra: &[&str]) -> Output {
    let a = add_args(c, out, extra);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    pie(c.lib.path(), &refs)
}

#[test]
fn add_writes_the_result_and_variants_get_suffixes() {
    let c = case();
    let out = c.outdir.join("res.png");
    let o = run_add(&c, out.to_str().unwrap(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let img = image::open(&out).unwrap().to_rgb8();
    let scene = image::open(&c.scene).unwrap().to_rgb8();
    let mask = image::open(&c.mask).unwrap().to_luma8();
    for (x, y, p) in img.enumerate_pixels() {
        if mask.get_pixel(x, y).0[0] == 0 {
            assert_eq!(p, scene.get_pixel(x, y));
        }
    }
    // Results are ordinary files: readable by others under the usual umask,
    // not the 0600 of the temporary file they were written through.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o044, 0o044, "result mode {mode:o}");
    let o = run_add(&c, c.outdir.join("v.png").to_str().unwrap(), &["--variants", "3", "--seed", "5"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(listing(&c.outdir), ["res.png", "v-1.png", "v-2.png", "v-3.png"]);
    assert!(text(&o).contains("v-3.png (seed 7, 2 steps on cpu,"), "{}", text(&o));
    // --json: JSON lines only, one "done" per output, with its seed
    let o = run_add(&c, c.outdir.join("j.tif").to_str().unwrap(), &["--json", "--seed", "9"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let done: Vec<_> = lines.iter().filter(|v| v["event"] == "done").collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["seed"], 9);
    assert!(c.outdir.join("j.tif").is_file());
}

#[test]
fn bad_inputs_exit_2_with_a_specific_message_and_write_nothing() {
    let c = case();
    let small = c.outdir.parent().unwrap().join("small.png");
    image::GrayImage::new(50, 50).save(&small).unwrap();
    let empty = c.outdir.parent().unwrap().join("empty.png");
    image::GrayImage::new(96, 72).save(&empty).unwrap();
    let full = c.outdir.parent().unwrap().join("full.png");
    image::GrayImage::from_pixel(96, 72, image::Luma([255])).save(&full).unwrap();
    let tiny = c.outdir.parent().unwrap().join("tiny.png");
    rect_mask(96, 72, 40, 30, 4, 4, 0).save(&tiny).unwrap();
    let out = c.outdir.join("r.png");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (swap(add_args(&c, o, &[]), "--selection", &small), "same size"),
        (swap(add_args(&c, o, &[]), "--selection", &empty), "empty"),
        (swap(add_args(&c, o, &[]), "--selection", &full), "whole image"),
        (swap(add_args(&c, o, &[]), "--selection", &tiny), "selection is 4x4"),
        (swap(add_args(&c, o, &[]), "--concept", Path::new("nosuch")), "no concept named \"nosuch\""),
        (swap(add_args(&c, o, &[]), "--concept", Path::new("../etc")), "not a concept name"),
        (add_args(&c, o, &["--strength", "2"]), "--strength"),
        (add_args(&c, c.outdir.join("r.bmpx").to_str().unwrap(), &[]), "unknown output type"),
        (add_args(&c, "/nonexistent-dir/r.png", &[]), "does not exist"),
        (add_args(&c, c.outdir.to_str().unwrap(), &[]), "is a folder"),
    ];
    for (args, want) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = pie(c.lib.path(), &refs);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {}", text(&r));
        assert!(text(&r).contains(want), "{args:?} should say {want:?}: {}", text(&r));
        assert!(listing(&c.outdir).is_empty(), "{args:?} wrote {:?}", listing(&c.outdir));
    }
    // a missing input image
    let r = pie(
        c.lib.path(),
        &["add", "/no/such.png", "--selection", c.mask.to_str().unwrap(), "--concept", "ball", "--out", o],
    );
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("/no/such.png"));
    // a corrupt bundle names itself and the file
    std::fs::write(c.lib.path().join("ball/subject.png"), b"xx").unwrap();
    let r = run_add(&c, o, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("concept bundle ball: subject.png"), "{}", text(&r));
    assert!(listing(&c.outdir).is_empty());
}

fn swap(mut v: Vec<String>, flag: &str, val: &Path) -> Vec<String> {
    if let Some(i) = v.iter().position(|a| a == flag) {
        v[i + 1] = val.display().to_string();
    }
    v
}

#[test]
fn unavailable_things_exit_4() {
    let c = case();
    let out = c.outdir.join("r.png");
    let a = swap(add_args(&c, out.to_str().unwrap(), &[]), "--device", Path::new("cuda"));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = pie(c.lib.path(), &refs);
    let cuda_works = o.status.success();
    if !cuda_works {
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        assert!(text(&o).contains("--device cuda: CUDA cannot be used here"), "{}", text(&o));
        assert!(listing(&c.outdir).is_empty());
    }
    // no ONNX Runtime library
    let a = add_args(&c, out.to_str().unwrap(), &[]);
    let r = Command::new(env!("CARGO_BIN_EXE_pie"))
        .arg("--library")
        .arg(c.lib.path())
        .args(&a)
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(4), "{}", text(&r));
    assert!(text(&r).contains("ORT_DYLIB_PATH"), "{}", text(&r));
    // no trainer
    let r = Command::new(env!("CARGO_BIN_EXE_pie"))
        .arg("--library")
        .arg(c.lib.path())
        .args(["learn-scene", c.scene.to_str().unwrap(), "--name", "s"])
        .env("PIE_TRAINER_PYTHON", "/nonexistent/python")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(4), "{}", text(&r));
    assert!(text(&r).contains("PIE_TRAINER_PYTHON"), "{}", text(&r));
}

#[test]
fn concepts_list_show_remove() {
    let c = case();
    let o = pie(c.lib.path(), &["concepts"]);
    assert!(o.status.success());
    assert!(text(&o).contains("ball") && text(&o).contains("meadow"), "{}", text(&o));
    let o = pie(c.lib.path(), &["--json", "concepts", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["concepts"].as_array().unwrap().len(), 2);
    // Each concept's size on disk: the sum of its folder's files, shown in MB.
    let ball = v["concepts"].as_array().unwrap().iter().find(|c| c["name"] == "ball").unwrap();
    let on_disk: u64 = std::fs::read_dir(c.lib.path().join("ball"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(ball["bytes"].as_u64(), Some(on_disk));
    let listed = text(&pie(c.lib.path(), &["concepts"]));
    let mb = format!("{:.1} MB", on_disk as f64 / 1e6);
    assert!(
        listed.lines().any(|l| l.trim_start().starts_with("ball ") && l.contains(&mb)),
        "want {mb} for ball:\n{listed}"
    );
    let o = pie(c.lib.path(), &["concepts", "show", "ball"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("token 2: ball (subject"), "{}", text(&o));
    let o = pie(c.lib.path(), &["concepts", "show", "nosuch"]);
    assert_eq!(o.status.code(), Some(2));
    let o = pie(c.lib.path(), &["concepts", "remove", "meadow"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!c.lib.path().join("meadow").exists());
    let o = pie(c.lib.path(), &["concepts", "remove", "meadow"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn doctor_reports() {
    let c = case();
    let o = pie(c.lib.path(), &["doctor"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("ONNX Runtime:") && t.contains(pie::locations::ORT_VERSION), "{t}");
    assert!(t.contains("CUDA:") && t.contains("trainer:") && t.contains("GIMP plug-in:"), "{t}");
    let o = pie(c.lib.path(), &["--json", "doctor"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["event"], "doctor");
    assert!(v["cuda"]["why"].is_string());
}

/// The real trainer (tiny settings) → bundles → `pie add`.
#[test]
fn trained_bundles_round_trip() {
    let Some(lib) = trained_library() else { return };
    let l = pie::Library::open(Some(lib.clone())).unwrap();
    let b = l.load("subject").expect("the trainer's bundle validates");
    assert_eq!(b.manifest.stage, pie::Stage::Subject);
    assert_eq!(b.subject_token, Some(2));
    let scene = l.load("scene").unwrap();
    assert_eq!(b.manifest.parent.as_ref().unwrap().manifest_sha256, scene.manifest_sha256);

    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("scene.png");
    let sel = dir.path().join("sel.png");
    scene_rgb8(96, 64).save(&img).unwrap();
    rect_mask(96, 64, 30, 14, 36, 36, 4).save(&sel).unwrap();
    let out = |n: &str| dir.path().join(n).display().to_string();
    let go = |o: &str, seed: &str| {
        let r = pie(
            &lib,
            &[
                "add",
                img.to_str().unwrap(),
                "--selection",
                sel.to_str().unwrap(),
                "--concept",
                "subject",
                "--out",
                o,
                "--steps",
                "10",
                "--seed",
                seed,
                "--device",
                "cpu",
            ],
        );
        assert!(r.status.success(), "{}", text(&r));
        image::open(o).unwrap().to_rgb8()
    };
    let a = go(&out("a.png"), "1");
    let a2 = go(&out("a2.png"), "1");
    let b2 = go(&out("b.png"), "2");
    assert!(a == a2, "same seed, different images");
    assert!(a != b2, "different seeds, same image");
    let scene_img = image::open(&img).unwrap().to_rgb8();
    let mask = image::open(&sel).unwrap().to_luma8();
    for (x, y, p) in a.enumerate_pixels() {
        if mask.get_pixel(x, y).0[0] == 0 {
            assert_eq!(p, scene_img.get_pixel(x, y));
        }
    }
    // The subject is red (230, 50, 30) on a blue scene: the selection should redden.
    let before = mean_inside(&scene_img, &mask);
    let after = mean_inside(&a, &mask);
    let subject = [230.0, 50.0, 30.0];
    assert!(
        dist(after, subject) < dist(before, subject),
        "selection mean {after:?} did not move toward the subject from {before:?}"
    );
}

fn interrupt_after(child: std::process::Child, wait: std::time::Duration) -> Output {
    std::thread::sleep(wait);
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    child.wait_with_output().expect("wait for pie")
}

#[test]
fn ctrl_c_during_add_exits_3_and_writes_nothing() {
    let c = case();
    let big = c.outdir.parent().unwrap().join("big.png");
    let bigmask = c.outdir.parent().unwrap().join("bigmask.png");
    scene_rgb8(1024, 768).save(&big).unwrap();
    rect_mask(1024, 768, 200, 200, 500, 400, 8).save(&bigmask).unwrap();
    let out = c.outdir.join("r.png");
    ort();
    let child = Command::new(env!("CARGO_BIN_EXE_pie"))
        .arg("--library")
        .arg(c.lib.path())
        .args([
            "add",
            big.to_str().unwrap(),
            "--selection",
            bigmask.to_str().unwrap(),
            "--concept",
            "ball",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "1000",
            "--strength",
            "1",
            "--device",
            "cpu",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = interrupt_after(child, std::time::Duration::from_millis(1500));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(listing(&c.outdir).is_empty(), "{:?}", listing(&c.outdir));
}

#[test]
fn ctrl_c_during_training_stops_the_trainer() {
    let Some(_) = trained_library() else { return };
    let c = case();
    let child = Command::new(env!("CARGO_BIN_EXE_pie"))
        .arg("--library")
        .arg(c.lib.path())
        .args([
            "--json",
            "learn-scene",
            c.scene.to_str().unwrap(),
            "--name",
            "long",
            "--device",
            "cpu",
            "--steps",
            "100000",
        ])
        .args([
            "--trainer-arg=--bench-steps",
            "--trainer-arg=0",
            "--trainer-arg=--resolution",
            "--trainer-arg=16",
            "--trainer-arg=--threads",
            "--trainer-arg=1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = interrupt_after(child, std::time::Duration::from_secs(12));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!c.lib.path().join("long").exists(), "a cancelled run left a concept");
    let last: serde_json::Value = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    assert_eq!(last["kind"], "cancelled", "{}", text(&o));
}

/// What GIMP's cancel does to the plug-in: SIGKILL. The trainer, orphaned and
/// unread, still stops with a checkpoint that `--resume` (and `pie concepts`) finds.
#[test]
fn killing_pie_during_training_leaves_a_resumable_run() {
    let Some(_) = trained_library() else { return };
    let c = case();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pie"))
        .arg("--library")
        .arg(c.lib.path())
        .args([
            "learn-scene",
            c.scene.to_str().unwrap(),
            "--name",
            "killed",
            "--device",
            "cpu",
            "--steps",
            "100000",
        ])
        .args([
            "--trainer-arg=--bench-steps",
            "--trainer-arg=0",
            "--trainer-arg=--resolution",
            "--trainer-arg=16",
            "--trainer-arg=--threads",
            "--trainer-arg=1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ck = c.lib.path().join(".checkpoints/killed");
    let t0 = std::time::Instant::now();
    while !ck.join("meta.json").is_file() {
        assert!(t0.elapsed().as_secs() < 120, "the trainer never started its run");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    child.kill().unwrap();
    child.wait().unwrap();
    // Our ends of its pipes go too, as they would with the plug-in.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let t1 = std::time::Instant::now();
    while !ck.join("state.pt").is_file() {
        assert!(t1.elapsed().as_secs() < 60, "no checkpoint 60 s after pie was killed: {:?}", listing(&ck));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!c.lib.path().join("killed").exists(), "a killed run left a concept");
    let o = pie(c.lib.path(), &["--json", "concepts", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["interrupted"].as_array().unwrap().iter().any(|r| r["name"] == "killed"), "{v}");
}

#[test]
fn trainer_refusals_are_bad_input() {
    let Some(_) = trained_library() else { return };
    let c = case();
    let o = pie(
        c.lib.path(),
        &[
            "learn-scene",
            c.scene.to_str().unwrap(),
            "--name",
            "odd",
            "--steps",
            "1",
            "--trainer-arg=--resolution",
            "--trainer-arg=7",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("multiple of 4"), "{}", text(&o));
    let o = pie(c.lib.path(), &["learn-scene", c.scene.to_str().unwrap(), "--name", "ball"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    let o =
        pie(c.lib.path(), &["learn-subject", c.scene.to_str().unwrap(), "--scene", "ball", "--name", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is a subject, not a scene"), "{}", text(&o));
    assert!(!c.lib.path().join("odd").exists() && !c.lib.path().join("x").exists());
}

#[test]
fn sixteen_bit_rgba_in_sixteen_bit_rgba_out() {
    let c = case();
    let src = c.outdir.parent().unwrap().join("deep.png");
    let rgba = image::DynamicImage::ImageRgb8(scene_rgb8(96, 72)).to_rgba16();
    let mut rgba = rgba;
    for (x, _, p) in rgba.enumerate_pixels_mut() {
        p.0[3] = 20000 + x as u16 * 300;
    }
    rgba.save(&src).unwrap();
    let out = c.outdir.join("deep-out.png");
    let o = pie(
        c.lib.path(),
        &[
            "add",
            src.to_str().unwrap(),
            "--selection",
            c.mask.to_str().unwrap(),
            "--concept",
            "ball",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "6",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let back = image::open(&out).unwrap();
    assert_eq!(back.color(), image::ColorType::Rgba16);
    let back = back.to_rgba16();
    let mask = image::open(&c.mask).unwrap().to_luma8();
    for (x, y, p) in back.enumerate_pixels() {
        let q = rgba.get_pixel(x, y);
        assert_eq!(p.0[3], q.0[3], "alpha changed at {x},{y}");
        if mask.get_pixel(x, y).0[0] == 0 {
            assert_eq!(p, q);
        }
    }
}

#[test]
fn add_never_overwrites_its_inputs_or_a_read_only_file() {
    let c = case();
    let scene_before = std::fs::read(&c.scene).unwrap();
    let mask_before = std::fs::read(&c.mask).unwrap();
    // the scene itself, the same file through a link, and the selection
    let link = c.outdir.parent().unwrap().join("link.png");
    std::os::unix::fs::symlink(&c.scene, &link).unwrap();
    for (out, input) in [(&c.scene, "scene.png"), (&link, "scene.png"), (&c.mask, "sel.png")] {
        let o = run_add(&c, out.to_str().unwrap(), &[]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("does not overwrite its inputs") && text(&o).contains(input),
            "{}",
            text(&o)
        );
    }
    assert_eq!(std::fs::read(&c.scene).unwrap(), scene_before, "the input image was overwritten");
    assert_eq!(std::fs::read(&c.mask).unwrap(), mask_before, "the selection was overwritten");
    // a read-only result of an earlier run is not replaced behind the user's back
    let ro = c.outdir.join("keep.png");
    std::fs::write(&ro, b"precious").unwrap();
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let o = run_add(&c, ro.to_str().unwrap(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("read-only"), "{}", text(&o));
    assert_eq!(std::fs::read(&ro).unwrap(), b"precious");
    assert_eq!(listing(&c.outdir), ["keep.png"]);
    // an unwritable folder is named without pie's temporary probe file
    let o = run_add(&c, "/proc/r.png", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!text(&o).contains(".pie-probe"), "{}", text(&o));
}

#[test]
fn a_mistyped_concept_name_gets_the_close_name_suggested() {
    let c = case();
    for (typo, want) in [
        ("bal", "did you mean \"ball\""),
        ("Ball", "did you mean \"ball\""),
        ("medow", "did you mean \"meadow\""),
    ] {
        let o = pie(
            c.lib.path(),
            &swap(add_args(&c, c.outdir.join("r.png").to_str().unwrap(), &[]), "--concept", Path::new(typo))
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "{typo}: {}", text(&o));
    }
    let o = pie(c.lib.path(), &["concepts", "remove", "medow"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("did you mean \"meadow\"") && text(&o).contains("known: ball, meadow"),
        "{}",
        text(&o)
    );
    assert!(c.lib.path().join("meadow/bundle.json").is_file());
    let o = pie(c.lib.path(), &["concepts", "show", "zebra"]);
    assert!(text(&o).contains("known: ball, meadow") && !text(&o).contains("did you mean"), "{}", text(&o));
    // a subject given as the scene: say which scenes there are
    let o =
        pie(c.lib.path(), &["learn-subject", c.scene.to_str().unwrap(), "--scene", "ball", "--name", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("is a subject, not a scene") && text(&o).contains("scenes: meadow"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_colour_mask_is_refused_and_a_transparent_one_is_read_from_its_alpha() {
    let c = case();
    let dir = c.outdir.parent().unwrap();
    // the photo given as the selection, by mistake
    let o = run_add(&c, c.outdir.join("r.png").to_str().unwrap(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_file(c.outdir.join("r.png")).unwrap();
    let a = swap(add_args(&c, c.outdir.join("r.png").to_str().unwrap(), &[]), "--selection", &c.scene);
    let o = pie(c.lib.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is a colour image"), "{}", text(&o));
    assert!(listing(&c.outdir).is_empty());
    // a gray mask saved as RGB is fine, and gives the same result as the gray one
    let gray = image::open(&c.mask).unwrap().to_luma8();
    let as_rgb = dir.join("sel-rgb.png");
    image::DynamicImage::ImageLuma8(gray.clone()).to_rgb8().save(&as_rgb).unwrap();
    // the same selection as the alpha of a white layer
    let as_alpha = dir.join("sel-alpha.png");
    image::RgbaImage::from_fn(96, 72, |x, y| image::Rgba([255, 255, 255, gray.get_pixel(x, y).0[0]]))
        .save(&as_alpha)
        .unwrap();
    let reference = {
        let o = run_add(&c, c.outdir.join("ref.png").to_str().unwrap(), &[]);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read(c.outdir.join("ref.png")).unwrap()
    };
    for (mask, out) in [(&as_rgb, "rgb.png"), (&as_alpha, "alpha.png")] {
        let a = swap(add_args(&c, c.outdir.join(out).to_str().unwrap(), &[]), "--selection", mask);
        let o = pie(c.lib.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{out}: {}", text(&o));
        assert!(
            std::fs::read(c.outdir.join(out)).unwrap() == reference,
            "{out} differs from the gray mask's result"
        );
    }
}

/// EXIF orientation 6 (the camera was turned: rotate 90° clockwise to view).
fn save_rotated_png(img: &image::RgbImage, path: &Path) {
    use image::ImageEncoder;
    let exif = vec![
        0x49, 0x49, 0x2a, 0x00, 0x08, 0x00, 0x00, 0x00, // TIFF header, little-endian, IFD at 8
        0x01, 0x00, // one entry
        0x12, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, // Orientation = 6
        0x00, 0x00, 0x00, 0x00,
    ];
    let f = std::fs::File::create(path).unwrap();
    let mut enc = image::codecs::png::PngEncoder::new(f);
    enc.set_exif_metadata(exif).unwrap();
    enc.write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8).unwrap();
}

#[test]
fn an_exif_rotated_photo_is_used_the_way_gimp_shows_it() {
    let c = case();
    let dir = c.outdir.parent().unwrap();
    // stored 96x72 landscape, shown (by GIMP, viewers, the trainer) as 72x96 portrait
    let stored = scene_rgb8(96, 72);
    let photo = dir.join("phone.png");
    save_rotated_png(&stored, &photo);
    let shown = pie::open_image(&photo).unwrap();
    assert_eq!((shown.width(), shown.height()), (72, 96));
    assert_eq!(shown.to_rgb8().get_pixel(71, 0), stored.get_pixel(0, 0), "not rotated clockwise");
    // a selection drawn over what GIMP shows
    let sel = dir.join("portrait-sel.png");
    rect_mask(72, 96, 20, 30, 32, 32, 4).save(&sel).unwrap();
    let out = c.outdir.join("r.png");
    let o = pie(
        c.lib.path(),
        &[
            "add",
            photo.to_str().unwrap(),
            "--selection",
            sel.to_str().unwrap(),
            "--concept",
            "ball",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "4",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let res = image::open(&out).unwrap().to_rgb8();
    assert_eq!(res.dimensions(), (72, 96));
    let mask = image::open(&sel).unwrap().to_luma8();
    let shown = shown.to_rgb8();
    for (x, y, p) in res.enumerate_pixels() {
        if mask.get_pixel(x, y).0[0] == 0 {
            assert_eq!(p, shown.get_pixel(x, y));
        }
    }
}

#[test]
fn option_mistakes_are_caught_before_anything_runs() {
    let c = case();
    let learn = |extra: &[&str]| {
        let mut a = vec!["learn-scene", c.scene.to_str().unwrap(), "--name", "s"];
        a.extend(extra);
        // No trainer here: a mistake must be reported before pie looks for one.
        Command::new(env!("CARGO_BIN_EXE_pie"))
            .arg("--library")
            .arg(c.lib.path())
            .args(&a)
            .env("PIE_TRAINER_PYTHON", "/nonexistent/python")
            .output()
            .unwrap()
    };
    let o = learn(&["--steps", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--steps") && text(&o).contains("at least 1"), "{}", text(&o));
    let o = learn(&["--device", "gpuu"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("possible values: auto, cpu, cuda"), "{}", text(&o));
    let o = run_add(&c, c.outdir.join("r.png").to_str().unwrap(), &["--sampler", "euler"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("possible values: ddim, ddpm"), "{}", text(&o));
    // `gpu` still means cuda
    let a = swap(add_args(&c, c.outdir.join("r.png").to_str().unwrap(), &[]), "--device", Path::new("gpu"));
    let o = pie(c.lib.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success() || o.status.code() == Some(4), "{}", text(&o));
}

#[test]
fn a_time_budget_reaches_the_trainer_and_bad_ones_are_refused_first() {
    let c = case();
    let dir = c.outdir.parent().unwrap();
    let argv = dir.join("argv.txt");
    // A stand-in trainer that writes down its arguments and refuses, as a trainer may.
    let fake = dir.join("python");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\necho '{{\"v\":1,\"event\":\"error\",\"kind\":\"bad_input\",\"message\":\"stand-in\"}}'\nexit 2\n",
            argv.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let learn = |python: &Path, extra: &[&str]| {
        let mut a = vec!["learn-scene", c.scene.to_str().unwrap(), "--name", "budgeted"];
        a.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_pie"))
            .arg("--library")
            .arg(c.lib.path())
            .args(&a)
            .env("PIE_TRAINER_PYTHON", python)
            .env_remove("PIE_HOME")
            .output()
            .unwrap()
    };
    for bad in ["0", "-1", "nan", "inf", "five", ""] {
        // No trainer at all: the value is refused before pie looks for one.
        let o = learn(Path::new("/nonexistent/python"), &["--minutes", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains("--minutes") && text(&o).contains("minutes"), "{bad}: {}", text(&o));
        assert!(!argv.exists() && !c.lib.path().join("budgeted").exists(), "{bad}");
    }
    let o = learn(&fake, &["--minutes", "2.5", "--quick"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let args = std::fs::read_to_string(&argv).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let at = args.iter().position(|a| *a == "--minutes").unwrap_or_else(|| panic!("{args:?}"));
    assert_eq!(args[at + 1], "2.5", "{args:?}");
    assert!(args.contains(&"scene") && args.contains(&"--quick"), "{args:?}");
    let o = learn(&fake, &["--minutes=-3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("positive number of minutes"), "{}", text(&o));
}

#[test]
fn stopped_runs_are_listed_and_remove_takes_the_checkpoints_too() {
    let c = case();
    let ck = c.lib.path().join(".checkpoints");
    std::fs::create_dir_all(ck.join("ball")).unwrap();
    std::fs::write(ck.join("ball/weights.pt"), vec![0u8; 1000]).unwrap();
    std::fs::create_dir_all(ck.join("garden")).unwrap();
    std::fs::write(ck.join("garden/state.pt"), vec![0u8; 2_500_000]).unwrap();
    std::fs::write(ck.join("garden/meta.json"), br#"{"stage": 1, "identifier": "zqx"}"#).unwrap();
    let o = pie(c.lib.path(), &["concepts"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("stopped training runs")
            && text(&o).contains("garden")
            && text(&o).contains("2.5 MB"),
        "{}",
        text(&o)
    );
    let o = pie(c.lib.path(), &["--json", "concepts"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["interrupted"][0]["name"], "garden");
    assert_eq!(v["interrupted"][0]["stage"], 1);
    // removing a concept frees its checkpoints as well
    let o = pie(c.lib.path(), &["concepts", "remove", "ball"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!c.lib.path().join("ball").exists() && !ck.join("ball").exists(), "{:?}", listing(&ck));
    // a stopped run can be discarded by name
    let o = pie(c.lib.path(), &["concepts", "remove", "garden"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(listing(&ck).is_empty(), "{:?}", listing(&ck));
    assert!(!text(&pie(c.lib.path(), &["concepts"])).contains("stopped"));
}

#[test]
fn doctor_checks_the_trainer_as_learning_runs_it_isolated() {
    let c = case();
    let dir = c.outdir.parent().unwrap();
    // A stand-in Python that reports how it was called.
    let fake = dir.join("python");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"torch 0 | cuda False | args=$1 $2 $5 | PYTHONPATH=$PYTHONPATH\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ort();
    let o = Command::new(env!("CARGO_BIN_EXE_pie"))
        .args(["--library", c.lib.path().to_str().unwrap(), "doctor"])
        .env("PIE_TRAINER_PYTHON", &fake)
        .env("PIE_TRAINER_PATH", "/src/trainer")
        .env("PYTHONPATH", "/users/site")
        .output()
        .unwrap();
    // isolated mode, the trainer's folder as an argument, PYTHONPATH not extended
    assert!(text(&o).contains("args=-I -u /src/trainer | PYTHONPATH=/users/site"), "{}", text(&o));
}

#[test]
fn doctor_finds_the_plug_in_where_gimp_looks_for_it() {
    let c = case();
    let cfg = c.outdir.parent().unwrap().join("config");
    let plugin = cfg.join("GIMP/3.0/plug-ins/pie/pie");
    std::fs::create_dir_all(plugin.parent().unwrap()).unwrap();
    std::fs::write(&plugin, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ort();
    let doctor = |k: &str, v: &Path| {
        Command::new(env!("CARGO_BIN_EXE_pie"))
            .args(["--library", c.lib.path().to_str().unwrap(), "doctor"])
            .env(k, v)
            .output()
            .unwrap()
    };
    let o = doctor("XDG_CONFIG_HOME", &cfg);
    assert!(text(&o).contains(&format!("GIMP plug-in: installed at {}", plugin.display())), "{}", text(&o));
    let o = doctor("GIMP3_DIRECTORY", &cfg.join("GIMP/3.0"));
    assert!(text(&o).contains(&format!("GIMP plug-in: installed at {}", plugin.display())), "{}", text(&o));
    let o = doctor("XDG_CONFIG_HOME", &cfg.join("elsewhere"));
    assert!(text(&o).contains("GIMP plug-in: not installed (looked at"), "{}", text(&o));
}

#[test]
fn doctor_tells_a_current_plug_in_from_a_stale_one_in_each_gimp_profile() {
    let c = case();
    let root = c.outdir.parent().unwrap();
    // pie as install.sh lays it out: <prefix>/bin/pie, the record in <prefix>/lib/pie.
    let bin = root.join("prefix/bin/pie");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pie"), &bin).unwrap();
    std::fs::create_dir_all(root.join("prefix/lib/pie")).unwrap();
    let cfg = root.join("config");
    let put = |version: &str, body: &str| {
        let p = cfg.join(format!("GIMP/{version}/plug-ins/pie/pie"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    };
    let new = put("3.2", "#!/bin/sh\n# new\n");
    let old = put("3.0", "#!/bin/sh\n# old\n");
    let sum = pie::bundle::sha256_file(&new).unwrap();
    std::fs::write(root.join("prefix/lib/pie/gimp-plugin.sha256"), format!("{sum}\n")).unwrap();
    ort();
    let o = Command::new(&bin)
        .args(["--library", c.lib.path().to_str().unwrap(), "doctor"])
        .env("XDG_CONFIG_HOME", &cfg)
        .env("PATH", root)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(t.contains(&format!("installed at {} (GIMP 3.2), the current one", new.display())), "{t}");
    assert!(t.contains(&format!("stale at {} (GIMP 3.0)", old.display())), "{t}");
    assert!(t.contains("run install.sh again"), "{t}");
    assert!(t.contains("GIMP 3: not found on PATH"), "{t}");
}

#[test]
fn a_closed_pipe_stops_pie_quietly() {
    let c = case();
    ort();
    for args in [&["concepts"][..], &["--json", "concepts"], &["--help"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pie"))
            .arg("--library")
            .arg(c.lib.path())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // `| head -0`
        let o = child.wait_with_output().unwrap();
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("panicked"),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_ne!(o.status.code(), Some(101), "{args:?}");
    }
}

#[test]
fn with_json_even_a_usage_mistake_is_a_json_error() {
    let c = case();
    let o = pie(c.lib.path(), &["--json", "add", c.scene.to_str().unwrap(), "--steps", "many"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o)));
    assert_eq!(v["event"], "error");
    assert_eq!(v["kind"], "bad_input");
    assert!(v["message"].as_str().unwrap().contains("--steps"), "{v}");
    // without --json it stays text for a person
    let o = pie(c.lib.path(), &["add", c.scene.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Usage:"), "{}", text(&o));
}

#[test]
fn a_second_ctrl_c_quits_at_once_and_still_leaves_no_temporary_files() {
    let c = case();
    let big = c.outdir.parent().unwrap().join("big.png");
    let bigmask = c.outdir.parent().unwrap().join("bigmask.png");
    scene_rgb8(1600, 1200).save(&big).unwrap();
    rect_mask(1600, 1200, 200, 200, 1000, 800, 8).save(&bigmask).unwrap();
    // Sampled at full size, so each step lasts long enough for the second press to land inside one.
    pie::testkit::write_bundle(
        c.lib.path(),
        &pie::testkit::Synthetic { name: "full".into(), scene_short_side: 4096, ..Default::default() },
    )
    .unwrap();
    let out = c.outdir.join("r.png");
    ort();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pie"))
        .arg("--library")
        .arg(c.lib.path())
        .args([
            "add",
            big.to_str().unwrap(),
            "--selection",
            bigmask.to_str().unwrap(),
            "--concept",
            "full",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--steps", "20", "--variants", "3", "--device", "cpu", "--threads", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first variant sits in its temporary file.
    let t0 = std::time::Instant::now();
    while listing(&c.outdir).is_empty() {
        assert!(t0.elapsed().as_secs() < 120, "no temporary file appeared");
        if child.try_wait().unwrap().is_some() {
            panic!("pie finished before it could be interrupted");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for _ in 0..2 {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(listing(&c.outdir).is_empty(), "left behind: {:?}", listing(&c.outdir));
}

#[test]
fn saving_an_alpha_image_as_jpeg_says_what_is_lost() {
    let c = case();
    let src = c.outdir.parent().unwrap().join("alpha.png");
    image::DynamicImage::ImageRgb8(scene_rgb8(96, 72)).to_rgba8().save(&src).unwrap();
    let out = c.outdir.join("r.jpg");
    let o = pie(
        c.lib.path(),
        &[
            "add",
            src.to_str().unwrap(),
            "--selection",
            c.mask.to_str().unwrap(),
            "--concept",
            "ball",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "4",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("cannot hold the image's alpha"), "{}", text(&o));
    assert!(out.is_file());
    // an RGB photo to JPEG loses nothing worth a word
    let o = run_add(&c, c.outdir.join("plain.jpg").to_str().unwrap(), &[]);
    assert!(o.status.success() && !text(&o).contains("cannot hold"), "{}", text(&o));
}

#[test]
fn blend_writes_the_fitted_subject_and_refuses_what_it_cannot_place() {
    let c = case();
    let dir = c.outdir.parent().unwrap();
    // a cut-out: a red disc with transparency around it
    let cut = dir.join("cutout.png");
    image::RgbaImage::from_fn(20, 24, |x, y| {
        let (dx, dy) = (x as f32 - 9.5, y as f32 - 11.5);
        image::Rgba([220, 40, 30, if dx * dx / 90.0 + dy * dy / 130.0 <= 1.0 { 255 } else { 0 }])
    })
    .save(&cut)
    .unwrap();
    let out = c.outdir.join("blended.png");
    let run_as = |concept: &str, extra: &[&str], out: &Path| {
        let mut a = vec![
            "blend",
            c.scene.to_str().unwrap(),
            "--concept",
            concept,
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "6",
            "--device",
            "cpu",
        ];
        a.extend(extra);
        pie(c.lib.path(), &a)
    };
    let run = |extra: &[&str], out: &Path| run_as("meadow", extra, out);
    let placed = ["--subject", cut.to_str().unwrap(), "--at", "38,24"];
    let o = run(&placed, &out);
    assert!(o.status.success(), "{}", text(&o));
    let (s, r) = (image::open(&c.scene).unwrap().to_rgb8(), image::open(&out).unwrap().to_rgb8());
    assert!(r.get_pixel(48, 36).0[0] > 150, "the subject is not there: {:?}", r.get_pixel(48, 36));
    assert_eq!(r.get_pixel(5, 5), s.get_pixel(5, 5), "far from the subject the scene changed");
    // the subject concept learned in that scene blends too, and its token makes a result of its own
    let as_subject = c.outdir.join("blended-ball.png");
    let o = run_as("ball", &placed, &as_subject);
    assert!(o.status.success(), "{}", text(&o));
    let b = image::open(&as_subject).unwrap().to_rgb8();
    assert!(b.get_pixel(48, 36).0[0] > 150, "the subject is not there: {:?}", b.get_pixel(48, 36));
    assert_eq!(b.get_pixel(5, 5), s.get_pixel(5, 5), "far from the subject the scene changed");
    assert_ne!(b.as_raw(), r.as_raw(), "the subject concept gave the scene concept's result");
    // refused, nothing written: no transparency, off the image, an empty mask, both ways at once
    let opaque = dir.join("opaque.png");
    image::RgbImage::new(10, 10).save(&opaque).unwrap();
    let empty = dir.join("empty.png");
    image::GrayImage::new(96, 72).save(&empty).unwrap();
    for (extra, says) in [
        (vec!["--subject", opaque.to_str().unwrap()], "no transparency"),
        (vec!["--subject", cut.to_str().unwrap(), "--at", "500,10"], "does not overlap"),
        (vec!["--mask", empty.to_str().unwrap()], "empty"),
        (vec!["--mask", c.mask.to_str().unwrap(), "--subject", cut.to_str().unwrap()], "cannot be used with"),
    ] {
        let bad = c.outdir.join("bad.png");
        let o = run(&extra, &bad);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{extra:?}: {}", text(&o));
        assert!(!bad.exists());
    }
}

#[test]
fn add_places_the_subject_as_asked_and_refuses_unknown_placements() {
    let c = case();
    let o = run_add(
        &c,
        c.outdir.join("left.png").to_str().unwrap(),
        &["--anchor", "left", "--scale", "0.5", "--flip", "--shadow", "0"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let r = image::open(c.outdir.join("left.png")).unwrap().to_rgb8();
    // the half-size ball rests against the selection's left side (x 30..62), vertically centred
    let red = |x: u32, y: u32| r.get_pixel(x, y).0[0] > 150 && r.get_pixel(x, y).0[2] < 120;
    assert!(red(36, 36), "{:?}", r.get_pixel(36, 36));
    assert!(!red(56, 36), "{:?}", r.get_pixel(56, 36));
    for (extra, says) in [
        (&["--anchor", "middle"][..], "middle"),
        (&["--scale", "0"][..], "--scale"),
        (&["--shadow", "2"][..], "--shadow"),
    ] {
        let out = c.outdir.join("bad.png");
        let o = run_add(&c, out.to_str().unwrap(), extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{extra:?}: {}", text(&o));
        assert!(!out.exists());
    }
}

/// An installed pie (`<prefix>/bin/pie`, `<prefix>/lib/pie/venv`) whose
/// trainer environment is gone or broken: `pie doctor` and `pie learn-scene`
/// say which environment, what is wrong and that install.sh repairs it,
/// instead of a traceback or another environment.
#[test]
fn an_installed_pie_whose_trainer_environment_broke_says_run_install_sh_again() {
    let c = case();
    let root = c.outdir.parent().unwrap().join("prefix");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let exe = root.join("bin/pie");
    std::fs::copy(env!("CARGO_BIN_EXE_pie"), &exe).unwrap();
    let venv = root.join("lib/pie/venv");
    std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
    // A build cache with a complete venv of its own, which must not be taken instead.
    let cache = c.outdir.parent().unwrap().join("cache");
    std::fs::create_dir_all(cache.join("venv-0/bin")).unwrap();
    std::fs::write(cache.join("venv-0/.complete"), "").unwrap();
    std::fs::write(cache.join("venv-0/bin/python"), "#!/bin/sh\nexit 0\n").unwrap();
    ort();
    let run = |args: &[&str]| {
        Command::new(&exe)
            .arg("--library")
            .arg(c.lib.path())
            .args(args)
            .env_remove("PIE_TRAINER_PYTHON")
            .env_remove("PIE_TRAINER_PATH")
            .env("PIE_CACHE", &cache)
            .output()
            .unwrap()
    };
    let learn = || run(&["learn-scene", c.scene.to_str().unwrap(), "--name", "fresh"]);
    let says = |o: &Output, what: &str| {
        let t = text(o);
        assert!(t.contains(what) && t.contains("install.sh again") && !t.contains("Traceback"), "{t}");
    };

    // What an older install.sh left (a link into the cache) after `rm -rf ~/.cache/pie`.
    std::os::unix::fs::symlink(c.outdir.parent().unwrap().join("cleared/venv-1"), &venv).unwrap();
    let o = learn();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    says(&o, "the installed trainer environment");
    says(&o, "no longer exists");
    says(&run(&["doctor"]), "trainer: the installed trainer environment");

    // A venv whose Python runs but lacks a module (a half-removed environment).
    std::fs::remove_file(&venv).unwrap();
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    let py = venv.join("bin/python");
    std::fs::write(
        &py,
        "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n\
         echo \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&py, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = learn();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    says(
        &o,
        &format!(
            "{} (installed) cannot run the trainer: ModuleNotFoundError: No module named 'torch'",
            venv.display()
        ),
    );
    says(&run(&["doctor"]), "cannot run the trainer: ModuleNotFoundError");
    assert!(!c.lib.path().join("fresh").exists());
}
