//! What a hostile or unlucky input can make pie do: run code from where it
//! was started, delete outside its library, exhaust memory, hang. Each test
//! tries several cases of one class and checks what a user sees: the exit
//! code, the message, and that nothing outside the library changed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn pie_cmd(lib: &Path) -> Command {
    ort();
    let mut c = Command::new(env!("CARGO_BIN_EXE_pie"));
    c.arg("--library").arg(lib).env_remove("PIE_HOME").stdin(Stdio::null());
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `cmd`, killing it after `limit` (a hang is a failure, not a stuck test).
fn bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start pie");
    let t0 = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().expect("collect");
            panic!("pie hung for {limit:?}: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect")
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a plain libc call on a path the test owns.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Every file under `dir` with its bytes, for "nothing changed" checks.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

struct Scene {
    dir: tempfile::TempDir,
    scene: PathBuf,
    mask: PathBuf,
}

fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("scene.png");
    let mask = dir.path().join("sel.png");
    scene_rgb8(96, 72).save(&scene).unwrap();
    rect_mask(96, 72, 30, 20, 32, 32, 4).save(&mask).unwrap();
    Scene { dir, scene, mask }
}

fn add(lib: &Path, image: &Path, mask: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut c = pie_cmd(lib);
    c.arg("add").arg(image).arg("--selection").arg(mask).args(["--concept", "ball", "--out"]).arg(out);
    c.args(["--steps", "4", "--device", "cpu"]).args(extra);
    bounded(c, Duration::from_secs(120))
}

// ---- 1. code from the working folder, PYTHONPATH or a user site never runs

/// A folder of modules that, if imported, leave a marker file behind.
fn poisoned_folder(root: &Path, marker: &Path) {
    let body = format!("open({:?}, 'a').write(__name__ + '\\n')\n", marker.to_str().unwrap());
    for m in [
        "numpy.py",
        "torch/__init__.py",
        "PIL/__init__.py",
        "pie_trainer/__init__.py",
        "pie_trainer/__main__.py",
        "sitecustomize.py",
        "usercustomize.py",
        "onnx.py",
    ] {
        let p = root.join(m);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, &body).unwrap();
    }
}

#[test]
fn modules_in_the_working_folder_or_pythonpath_never_run_as_the_trainer() {
    if std::env::var_os("PIE_TRAINER_PATH").is_none() {
        std::env::set_var("PIE_TRAINER_PATH", trainer_source());
    }
    if let Err(e) = pie::train::find_trainer() {
        eprintln!("SKIP (no trainer environment): {e}");
        return;
    }
    let s = scene();
    let downloads = s.dir.path().join("downloads");
    let elsewhere = s.dir.path().join("pythonpath");
    let marker = s.dir.path().join("ran.txt");
    poisoned_folder(&downloads, &marker);
    poisoned_folder(&elsewhere, &marker);
    let lib = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = pie_cmd(lib.path());
        c.args(args).current_dir(&downloads).env("PYTHONPATH", &elsewhere).env("PYTHONUSERBASE", &elsewhere);
        c.env("PYTHONSTARTUP", elsewhere.join("numpy.py"));
        bounded(c, Duration::from_secs(600))
    };
    let o = run(&["doctor"]);
    assert!(text(&o).contains("| cuda"), "doctor did not reach the real torch: {}", text(&o));
    let tiny = [
        "--trainer-arg=--steps",
        "--trainer-arg=2",
        "--trainer-arg=--resolution",
        "--trainer-arg=16",
        "--trainer-arg=--bench-steps",
        "--trainer-arg=0",
    ];
    let mut a = vec!["learn-scene", s.scene.to_str().unwrap(), "--name", "s", "--device", "cpu"];
    a.extend(tiny);
    let o = run(&a);
    assert!(o.status.success(), "{}", text(&o));
    assert!(lib.path().join("s/bundle.json").is_file());
    assert!(!marker.exists(), "foreign code ran: {}", std::fs::read_to_string(&marker).unwrap_or_default());
}

// ---- 2. nothing outside the library is deleted, no link is followed

#[test]
fn remove_deletes_only_what_pie_wrote_and_follows_no_link() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("thesis.tex"), "years of work").unwrap();
    std::fs::write(outside.path().join("state.pt"), "looks like a checkpoint").unwrap();
    std::fs::write(outside.path().join("bundle.json"), "{}").unwrap();
    std::fs::create_dir(outside.path().join("ball")).unwrap();
    std::fs::write(outside.path().join("ball/state.pt"), "someone else's").unwrap();
    let before = snapshot(outside.path());

    // a .checkpoints that is a link out of the library
    let lib = synthetic_library();
    std::os::unix::fs::symlink(outside.path(), lib.path().join(".checkpoints")).unwrap();
    let o = bounded(
        {
            let mut c = pie_cmd(lib.path());
            c.args(["concepts", "remove", "ball"]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("leaves it alone"), "{}", text(&o));
    assert!(lib.path().join("ball/bundle.json").is_file(), "the concept was removed before the refusal");

    // a checkpoint folder that is a link, and one holding what the trainer never writes
    let lib = synthetic_library();
    std::fs::create_dir(lib.path().join(".checkpoints")).unwrap();
    std::os::unix::fs::symlink(outside.path(), lib.path().join(".checkpoints/ball")).unwrap();
    let odd = lib.path().join(".checkpoints/meadow");
    std::fs::create_dir_all(odd.join("photos")).unwrap();
    std::fs::write(odd.join("state.pt"), "x").unwrap();
    for name in ["ball", "meadow"] {
        let o = bounded(
            {
                let mut c = pie_cmd(lib.path());
                c.args(["concepts", "remove", name]);
                c
            },
            Duration::from_secs(30),
        );
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
        assert!(lib.path().join(name).join("bundle.json").is_file(), "{name}");
    }
    assert!(odd.join("photos").is_dir());

    // a concept folder that is a link to a folder that looks like a concept
    let lib = synthetic_library();
    std::os::unix::fs::symlink(outside.path(), lib.path().join("fake")).unwrap();
    let o = bounded(
        {
            let mut c = pie_cmd(lib.path());
            c.args(["concepts", "remove", "fake"]);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(snapshot(outside.path()), before, "a file outside the library changed");

    // what pie did write still goes
    let o = bounded(
        {
            let mut c = pie_cmd(lib.path());
            c.args(["concepts", "remove", "ball"]);
            c
        },
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!lib.path().join("ball").exists());
}

// ---- 3. decompression bombs and oversized images are refused from the header

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// A PNG whose header claims `w`x`h` 8-bit RGB, with a little real data.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        v.extend_from_slice(&body);
        v.extend_from_slice(&crc32(&body).to_be_bytes());
        v
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend(chunk(b"IHDR", &ihdr));
    // a zlib stream of zeros: every row filter 0, every pixel black
    v.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]));
    v.extend(chunk(b"IEND", &[]));
    v
}

/// A real JPEG whose frame header is patched to claim `w`x`h`, as bombs are made.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut v = Vec::new();
    image::DynamicImage::ImageRgb8(scene_rgb8(16, 16))
        .write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
        .unwrap();
    let sof = v.windows(2).position(|m| m == [0xff, 0xc0]).expect("a baseline frame header");
    v[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    v[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    v
}

#[test]
fn images_claiming_huge_sizes_are_refused_before_decoding_in_bounded_memory() {
    let s = scene();
    let lib = synthetic_library();
    let bombs = [
        ("bomb.jpg", jpeg_claiming(65000, 65000)),
        ("bomb.png", png_claiming(60000, 60000)),
        ("wide.png", png_claiming(40000, 8)),
    ];
    for (name, bytes) in &bombs {
        let p = s.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let out = s.dir.path().join("out.png");
        // under a 1.5 GB address-space limit: a decode would need 12 GB
        for (image, mask) in [(&p, &s.mask), (&s.scene, &p)] {
            let mut c = Command::new("sh");
            c.arg("-c").arg("ulimit -v 1500000; exec \"$@\"").arg("sh").arg(env!("CARGO_BIN_EXE_pie"));
            c.arg("--library").arg(lib.path()).arg("add").arg(image).arg("--selection").arg(mask);
            c.args(["--concept", "ball", "--out"]).arg(&out).args(["--device", "cpu"]);
            ort();
            let o = bounded(c, Duration::from_secs(60));
            assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
            assert!(text(&o).contains(name) && text(&o).contains("megapixels"), "{name}: {}", text(&o));
            assert!(!out.exists());
        }
        // learning refuses it the same way, before the trainer starts
        let o = bounded(
            {
                let mut c = pie_cmd(lib.path());
                c.arg("learn-scene").arg(&p).args(["--name", "big"]);
                c
            },
            Duration::from_secs(60),
        );
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
        assert!(text(&o).contains("megapixels"), "{name}: {}", text(&o));
    }
}

#[test]
fn animated_and_unsupported_formats_are_refused_alike_by_learn_and_add() {
    let s = scene();
    let lib = synthetic_library();
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec();
    let mut webp = b"RIFF\x1a\x00\x00\x00WEBPVP8 ".to_vec();
    webp.extend_from_slice(&[0u8; 14]);
    for (name, bytes) in [("anim.gif", gif), ("photo.webp", webp)] {
        let p = s.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let learn = bounded(
            {
                let mut c = pie_cmd(lib.path());
                c.arg("learn-scene").arg(&p).args(["--name", "g"]);
                c
            },
            Duration::from_secs(60),
        );
        let added = add(lib.path(), &p, &s.mask, &s.dir.path().join("o.png"), &[]);
        for o in [&learn, &added] {
            assert_eq!(o.status.code(), Some(2), "{name}: {}", text(o));
            assert!(
                text(o).contains("is not an image pie can read (PNG, JPEG, TIFF)"),
                "{name}: {}",
                text(o)
            );
        }
        assert!(!lib.path().join("g").exists());
    }
}

// ---- 5 and 9. named pipes and poisoned library files neither hang nor spread

#[test]
fn named_pipes_as_images_or_library_files_get_an_error_not_a_hang() {
    let s = scene();
    let lib = synthetic_library();
    let fifo = s.dir.path().join("camera.png");
    mkfifo(&fifo);
    let o = add(lib.path(), &fifo, &s.mask, &s.dir.path().join("o.png"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("named pipe"), "{}", text(&o));
    let o = add(lib.path(), &s.scene, &fifo, &s.dir.path().join("o.png"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = bounded(
        {
            let mut c = pie_cmd(lib.path());
            c.arg("learn-scene").arg(&fifo).args(["--name", "p"]);
            c
        },
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("named pipe"), "{}", text(&o));

    // poisoned concepts beside good ones: a FIFO, a huge and a deeply nested bundle.json
    for bad in ["piped", "huge", "nested"] {
        std::fs::create_dir(lib.path().join(bad)).unwrap();
    }
    mkfifo(&lib.path().join("piped/bundle.json"));
    std::fs::write(lib.path().join("huge/bundle.json"), vec![b' '; 2 << 20]).unwrap();
    std::fs::write(lib.path().join("nested/bundle.json"), "[".repeat(100_000)).unwrap();
    let o = bounded(
        {
            let mut c = pie_cmd(lib.path());
            c.args(["concepts", "list"]);
            c
        },
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", text(&o));
    for good in ["ball", "meadow"] {
        assert!(text(&o).contains(good), "{}", text(&o));
    }
    // a concept listed with its problem can still be used by name elsewhere: the good one works
    let out = s.dir.path().join("ok.png");
    let o = add(lib.path(), &s.scene, &s.mask, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    for bad in ["piped", "huge", "nested"] {
        let o = bounded(
            {
                let mut c = pie_cmd(lib.path());
                c.args(["concepts", "show", bad]);
                c
            },
            Duration::from_secs(30),
        );
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
    }
}

// ---- 7. results never land inside the library

#[test]
fn out_inside_the_library_is_refused_and_the_concept_survives() {
    let s = scene();
    let lib = synthetic_library();
    let before = snapshot(lib.path());
    for out in [
        lib.path().join("ball/subject.png"),
        lib.path().join("new.png"),
        lib.path().join("meadow/../ball/x.png"),
    ] {
        let o = add(lib.path(), &s.scene, &s.mask, &out, &[]);
        assert_eq!(o.status.code(), Some(2), "{}: {}", out.display(), text(&o));
        assert!(text(&o).contains("inside the concept library"), "{}", text(&o));
    }
    // through a link to the library, too
    let link = s.dir.path().join("lib-link");
    std::os::unix::fs::symlink(lib.path(), &link).unwrap();
    let o = add(lib.path(), &s.scene, &s.mask, &link.join("ball/denoiser.onnx.png"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(snapshot(lib.path()), before);
}

// ---- 8. options without bounds

#[test]
fn unbounded_or_not_a_number_options_are_refused() {
    let s = scene();
    let lib = synthetic_library();
    let out = s.dir.path().join("o.png");
    for (extra, says) in [
        (&["--threads", "100000"][..], "--threads 100000"),
        (&["--strength", "NaN"][..], "finite"),
        (&["--guidance", "nan"][..], "finite"),
        (&["--guidance", "inf"][..], "finite"),
        (&["--detail", "NaN"][..], "finite"),
    ] {
        let o = add(lib.path(), &s.scene, &s.mask, &out, extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{extra:?}: {}", text(&o));
        assert!(!out.exists());
    }
}

// ---- 9. the smaller ones

#[test]
fn control_codes_in_names_never_reach_the_terminal() {
    let s = scene();
    let lib = synthetic_library();
    for name in ["\x1b[31mred.png", "bell\x07.png", "\x1b]0;title\x07.png"] {
        let p = s.dir.path().join(name);
        std::fs::write(&p, "not an image").unwrap();
        for json in [false, true] {
            let mut c = pie_cmd(lib.path());
            if json {
                c.arg("--json");
            }
            c.arg("add")
                .arg(&p)
                .arg("--selection")
                .arg(&s.mask)
                .args(["--concept", "ball", "--out"])
                .arg(s.dir.path().join("o.png"));
            let o = bounded(c, Duration::from_secs(30));
            assert_eq!(o.status.code(), Some(2), "{}", text(&o));
            let t = text(&o);
            assert!(!t.contains('\x1b') && !t.contains('\x07'), "{t:?}");
            assert!(t.contains("\\u{1b}") || t.contains("\\u{7}"), "{t:?}");
        }
    }
}

#[test]
fn a_killed_runs_temporary_results_are_cleaned_and_a_replaced_file_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let s = scene();
    let lib = synthetic_library();
    let outdir = s.dir.path().join("results");
    std::fs::create_dir(&outdir).unwrap();
    // what a killed `add --variants 3` leaves, and names that are not pie's
    let stale = [outdir.join(".pie-a1B2c3.tmp"), outdir.join(".pie-zzzzzz.tmp")];
    let foreign =
        [outdir.join(".pie-notes.tmp"), outdir.join("draft.tmp"), outdir.join(".pie-abcdef.tmp.keep")];
    for p in stale.iter().chain(&foreign) {
        std::fs::write(p, "x").unwrap();
    }
    let out = outdir.join("private.png");
    std::fs::write(&out, "old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = add(lib.path(), &s.scene, &s.mask, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    for p in &stale {
        assert!(!p.exists(), "{} was left", p.display());
    }
    for p in &foreign {
        assert!(p.exists(), "{} is not pie's and was deleted", p.display());
    }
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    // a temporary result another live pie holds is left alone
    let held = outdir.join(".pie-h0LdMe.tmp");
    let f = std::fs::File::create(&held).unwrap();
    // SAFETY: flock on a descriptor the test owns.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let o = add(lib.path(), &s.scene, &s.mask, &outdir.join("new.png"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(held.exists());
}

#[test]
fn a_second_learn_of_the_same_name_is_refused_at_once() {
    let s = scene();
    let lib = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(lib.path().join(".learning-garden.lock")).unwrap();
    // SAFETY: flock on a descriptor the test owns, standing in for a running learn.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let t0 = Instant::now();
    let o = bounded(
        {
            let mut c = pie_cmd(lib.path());
            c.arg("learn-scene")
                .arg(&s.scene)
                .args(["--name", "garden"])
                .env("PIE_TRAINER_PYTHON", "/bin/true");
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("another pie is learning \"garden\""), "{}", text(&o));
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert!(!lib.path().join("garden").exists());
}

#[test]
fn a_broken_onnx_runtime_library_is_reported_as_missing_not_a_crash() {
    let s = scene();
    let lib = synthetic_library();
    let d = tempfile::tempdir().unwrap();
    // right version string, no usable API: what a damaged or foreign build looks like
    let src = d.path().join("ort.c");
    std::fs::write(
        &src,
        "typedef struct { const void* (*GetApi)(unsigned); const char* (*GetVersionString)(void); } Base;\n\
         static const void* api(unsigned v) { (void)v; return 0; }\n\
         static const char* ver(void) { return \"ORT_VERSION\"; }\n\
         static Base base = { api, ver };\n\
         const Base* OrtGetApiBase(void) { return &base; }\n"
            .replace("ORT_VERSION", pie::locations::ORT_VERSION),
    )
    .unwrap();
    let so = d.path().join(format!("libonnxruntime.so.{}", pie::locations::ORT_VERSION));
    let cc = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&so).arg(&src).output();
    if !cc.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP (no C compiler to build a broken library): {cc:?}");
        return;
    }
    for empty in [false, true] {
        if empty {
            std::fs::write(&so, b"\x7fELF not really").unwrap();
        }
        let mut c = Command::new(env!("CARGO_BIN_EXE_pie"));
        c.arg("--library").arg(lib.path()).arg("add").arg(&s.scene).arg("--selection").arg(&s.mask);
        c.args(["--concept", "ball", "--out"]).arg(s.dir.path().join("o.png")).env("ORT_DYLIB_PATH", &so);
        let o = bounded(c, Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        assert!(text(&o).contains(so.to_str().unwrap()) && !text(&o).contains("panicked"), "{}", text(&o));
    }
}
