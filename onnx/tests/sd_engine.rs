//! The sd backbone end to end on synthetic bundles (real ONNX graphs, a
//! real CLIP-style tokenizer, ONNX Runtime on the CPU): validation, the
//! prompt contract, the step graph, and `pie add` through the command line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use pie::sd::testkit::{write_sd_bundle, SyntheticSd, MAX_LENGTH};

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

/// A library with the sd toys: "dog" (stage 2), "field" (stage 1),
/// "inpaint" (9 channels), "vpred" (v_prediction), "half" (float16), "fused"
/// (float16, its manifest saying its graphs were fused for CUDA).
fn sd_library() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for s in [
        SyntheticSd { name: "dog".into(), ..Default::default() },
        SyntheticSd { name: "field".into(), stage: pie::Stage::Scene, ..Default::default() },
        SyntheticSd { name: "inpaint".into(), inpainting: true, ..Default::default() },
        SyntheticSd { name: "vpred".into(), prediction: "v_prediction".into(), ..Default::default() },
        SyntheticSd { name: "half".into(), fp16: true, ..Default::default() },
        SyntheticSd { name: "fused".into(), fp16: true, optimized: true, ..Default::default() },
    ] {
        write_sd_bundle(d.path(), &s).unwrap();
    }
    pie::testkit::write_bundle(
        d.path(),
        &pie::testkit::Synthetic { name: "ball".into(), ..Default::default() },
    )
    .unwrap();
    d
}

struct Case {
    dir: tempfile::TempDir,
    lib: tempfile::TempDir,
    scene: PathBuf,
    mask: PathBuf,
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let scene = dir.path().join("scene.png");
    let mask = dir.path().join("sel.png");
    scene_rgb8(96, 72).save(&scene).unwrap();
    rect_mask(96, 72, 30, 20, 32, 28, 1).save(&mask).unwrap();
    Case { lib: sd_library(), dir, scene, mask }
}

fn add(c: &Case, concept: &str, out: &str, extra: &[&str]) -> (Output, PathBuf) {
    let out = c.dir.path().join(out);
    let mut a: Vec<String> = [
        "add",
        c.scene.to_str().unwrap(),
        "--selection",
        c.mask.to_str().unwrap(),
        "--concept",
        concept,
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "10",
        "--device",
        "cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    (pie(c.lib.path(), &refs), out)
}

/// Outside the selection byte-identical, inside changed; returns the image.
fn check_result(c: &Case, out: &Path) -> image::RgbImage {
    let img = image::open(out).unwrap().to_rgb8();
    let scene = image::open(&c.scene).unwrap().to_rgb8();
    let mask = image::open(&c.mask).unwrap().to_luma8();
    let mut changed = 0;
    for (x, y, p) in img.enumerate_pixels() {
        if mask.get_pixel(x, y).0[0] == 0 {
            assert_eq!(p, scene.get_pixel(x, y), "outside the selection at {x},{y}");
        } else if p != scene.get_pixel(x, y) {
            changed += 1;
        }
    }
    assert!(changed > 200, "only {changed} pixels changed inside the selection");
    img
}

#[test]
fn sd_bundles_validate_and_pixel_bundles_still_do() {
    let lib = sd_library();
    let l = pie::Library::open(Some(lib.path().to_path_buf())).unwrap();
    for name in ["dog", "field", "inpaint", "vpred", "half", "fused", "ball"] {
        let b = l.load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(b.manifest.backbone == pie::Backbone::Sd, name != "ball");
        assert_eq!(matches!(b.parts, pie::backbone::BackboneParts::Sd(_)), name != "ball");
    }
    let o = pie(lib.path(), &["concepts", "show", "half"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("backbone sd at 64 px, base toy-sd (/nonexistent/toy-sd), precision float16"),
        "{}",
        text(&o)
    );
    // Shown on any machine: only running it needs CUDA.
    let o = pie(lib.path(), &["concepts", "show", "fused"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("graphs fused by onnxruntime-transformers 1.31.1: unet, vae_decoder (CUDA only)"),
        "{}",
        text(&o)
    );
}

/// Rewrites bundle.json of `dir` through `f`, keeping the files' hashes right.
fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("bundle.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn rehash(dir: &Path, file: &str) {
    edit_manifest(dir, |v| {
        for f in v["files"].as_array_mut().unwrap() {
            if f["path"] == file {
                let p = dir.join(file);
                f["sha256"] = serde_json::json!(pie::bundle::sha256_file(&p).unwrap());
                f["bytes"] = serde_json::json!(std::fs::metadata(&p).unwrap().len());
            }
        }
    });
}

fn load_err(lib: &Path, name: &str) -> String {
    let e = pie::Library::open(Some(lib.to_path_buf())).unwrap().load(name).unwrap_err();
    assert_eq!(e.kind(), pie::ErrorKind::BadInput, "{e}");
    e.to_string()
}

#[test]
fn broken_sd_bundles_are_refused_with_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let mk = |name: &str| {
        write_sd_bundle(d.path(), &SyntheticSd { name: name.into(), ..Default::default() }).unwrap()
    };

    let b = mk("notok");
    std::fs::write(b.join("tokenizer.json"), "{\"not\": \"a tokenizer\"}").unwrap();
    rehash(&b, "tokenizer.json");
    let e = load_err(d.path(), "notok");
    assert!(e.contains("tokenizer.json: not a tokenizer"), "{e}");

    let b = mk("gone");
    std::fs::remove_file(b.join("vae_decoder.onnx")).unwrap();
    assert!(load_err(d.path(), "gone").contains("vae_decoder.onnx: missing"));

    let b = mk("badio");
    edit_manifest(&b, |v| v["graphs"]["unet"]["inputs"][1]["name"] = serde_json::json!("t"));
    let e = load_err(d.path(), "badio");
    assert!(e.contains("graphs.unet.inputs are [sample float32 rank 4, t int64 rank 1"), "{e}");

    let b = mk("chans");
    edit_manifest(&b, |v| v["model"]["unet_in_channels"] = serde_json::json!(9));
    let e = load_err(d.path(), "chans");
    assert!(e.contains("graphs.unet: sample has size 4 on axis 1, the bundle's model and text say 9"), "{e}");

    let b = mk("notext");
    edit_manifest(&b, |v| {
        v.as_object_mut().unwrap().remove("text");
    });
    assert!(load_err(d.path(), "notext").contains("an sd bundle needs a text section"));

    let b = mk("badid");
    edit_manifest(&b, |v| v["text"]["eos_id"] = serde_json::json!(100000));
    assert!(load_err(d.path(), "badid").contains("text.eos_id 100000 is outside the tokenizer's vocabulary"));

    let b = mk("external");
    // The UNet's graph as declared, but pointing at weights outside the folder.
    let w = pie::onnxfile::write::Msg::default()
        .int(2, 1)
        .str(8, "w")
        .msg(13, &pie::onnxfile::write::Msg::default().str(1, "location").str(2, "../../etc/passwd"))
        .int(14, 1);
    let bytes = std::fs::read(b.join("unet.onnx")).unwrap();
    let mut info = pie::onnxfile::inspect(&bytes).unwrap();
    assert!(info.external_locations.is_empty());
    let evil = pie::onnxfile::write::model(
        &[pie::onnxfile::write::node("Identity", &["sample"], &["noise_pred"])],
        &[w],
        &[
            pie::onnxfile::write::value_info("sample", 1, &[(-1, "N"), (4, ""), (-1, "h"), (-1, "w")]),
            pie::onnxfile::write::value_info("timestep", 7, &[(-1, "N")]),
            pie::onnxfile::write::value_info(
                "encoder_hidden_states",
                1,
                &[(-1, "N"), (MAX_LENGTH as i64, ""), (8, "")],
            ),
        ],
        &[pie::onnxfile::write::value_info("noise_pred", 1, &[(-1, "N"), (4, ""), (-1, "h"), (-1, "w")])],
    );
    info = pie::onnxfile::inspect(&evil).unwrap();
    assert_eq!(info.external_locations.len(), 1);
    std::fs::write(b.join("unet.onnx"), evil).unwrap();
    rehash(&b, "unet.onnx");
    let e = load_err(d.path(), "external");
    assert!(e.contains("unet.onnx: refers to external data \"../../etc/passwd\""), "{e}");
}

#[test]
fn prompts_follow_the_contract() {
    let d = tempfile::tempdir().unwrap();
    let dir = write_sd_bundle(d.path(), &SyntheticSd::default()).unwrap();
    let b = pie::Bundle::load(&dir).unwrap();
    let pie::backbone::BackboneParts::Sd(sd) = &b.parts else { panic!("not an sd bundle") };
    let p = &sd.prompter;
    let (_, vocab) = pie::sd::testkit::tokenizer_json();
    let id = |t: &str| i64::from(vocab.iter().find(|(k, _)| k == t).unwrap().1);
    let (bos, eos) = (id("<|startoftext|>"), id("<|endoftext|>"));
    // Lower-cased, whitespace folded, words to `word</w>`, no special tokens from the tokenizer itself.
    let (ids, cut) = p.ids("A  photo of\tQBZ dog").unwrap();
    let words = ["a</w>", "photo</w>", "of</w>", "qbz</w>", "dog</w>"].map(id);
    let mut want = vec![bos];
    want.extend(words);
    want.push(eos);
    want.resize(MAX_LENGTH, eos);
    assert_eq!(ids, want);
    assert!(!cut);
    // Empty: bos, eos, padding.
    let (ids, _) = p.ids("").unwrap();
    assert_eq!(&ids[..3], &[bos, eos, eos]);
    assert_eq!(ids.len(), MAX_LENGTH);
    // Too long: L − 2 ids kept, eos still last before nothing.
    let long = vec!["dog"; 40].join(" ");
    let (ids, cut) = p.ids(&long).unwrap();
    assert!(cut);
    assert_eq!(ids.len(), MAX_LENGTH);
    assert_eq!(ids[0], bos);
    assert_eq!(ids[MAX_LENGTH - 1], eos);
    assert!(ids[1..MAX_LENGTH - 1].iter().all(|&i| i == id("dog</w>")));
    // A word outside the vocabulary splits into letters (CLIP's BPE), never fails.
    let (ids, _) = p.ids("zebra").unwrap();
    assert_eq!(&ids[1..6], &["z", "e", "b", "r", "a</w>"].map(id));
}

/// The tokenizer against Hugging Face's own Python `tokenizers`, where the trainer's environment has it.
#[test]
fn prompts_match_the_python_tokenizers() {
    let Ok(python) = std::env::var("PIE_TRAINER_PYTHON") else {
        eprintln!("SKIP: PIE_TRAINER_PYTHON is not set");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let dir = write_sd_bundle(d.path(), &SyntheticSd::default()).unwrap();
    let prompts =
        ["a photo of qbz dog in zwx scene", "  Red   DOG on the BLUE scene!!", "zebra's 42 photos", ""];
    let script = format!(
        "import json,sys\nfrom tokenizers import Tokenizer\nt=Tokenizer.from_file({:?})\nprint(json.dumps([t.encode(p, add_special_tokens=False).ids for p in json.loads(sys.argv[1])]))",
        dir.join("tokenizer.json").display().to_string()
    );
    let o = Command::new(&python)
        .args(["-c", &script, &serde_json::to_string(&prompts).unwrap()])
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!("SKIP: python tokenizers unavailable: {}", String::from_utf8_lossy(&o.stderr));
        return;
    }
    let want: Vec<Vec<i64>> = serde_json::from_slice(&o.stdout).unwrap();
    let b = pie::Bundle::load(&dir).unwrap();
    let pie::backbone::BackboneParts::Sd(sd) = &b.parts else { panic!("not an sd bundle") };
    let p = &sd.prompter;
    let text = b.manifest.text.as_ref().unwrap();
    for (prompt, raw) in prompts.iter().zip(want) {
        let mut expect = vec![text.bos_id];
        expect.extend(raw.iter().take(MAX_LENGTH - 2));
        expect.push(text.eos_id);
        expect.resize(MAX_LENGTH, text.pad_id);
        assert_eq!(p.ids(prompt).unwrap().0, expect, "{prompt:?}");
    }
}

/// The step graph (what runs on the GPU) against the same step in Rust.
#[test]
fn the_step_graph_matches_the_reference_step() {
    use ort::value::TensorRef;
    use pie::sd::step::{graph, reference, StepShape};
    ort();
    pie::runtime::init().unwrap();
    for (batch, unet_in) in [(2usize, 4usize), (1, 4), (2, 9)] {
        let s = StepShape { batch, latent: 4, unet_in, h: 3, w: 5 };
        let n = 4 * 15;
        let v = |k: usize, len: usize| -> Vec<f32> {
            (0..len).map(|i| ((i * 7 + k * 13) % 11) as f32 / 5.0 - 1.0).collect()
        };
        let (np, x, x0p, z, known, n0, keep) = (
            v(1, batch * n),
            v(2, n),
            v(3, n),
            v(4, n),
            v(5, n),
            v(6, n),
            v(7, 15).iter().map(|k| f32::from(*k > 0.0)).collect::<Vec<_>>(),
        );
        let cond = v(8, (unet_in - 4) * 15);
        let coef = [7.5f32, 1.1, -0.4, 0.9, 0.3, -0.2, 0.05, 0.7, 0.6];
        let bytes = graph(&s);
        let mut sess = pie::runtime::open_with(
            pie::runtime::ModelSource::Bytes(&bytes, "step"),
            pie::Device::Cpu,
            Some(1),
            None,
        )
        .unwrap()
        .session;
        fn t(d: &[f32], shape: Vec<usize>) -> ort::value::ValueRef<'_, ort::value::DynValueTypeMarker> {
            TensorRef::from_array_view((shape, d)).unwrap().into_dyn()
        }
        let lat = vec![1, 4, 3, 5];
        let mut inputs = vec![
            ("noise_pred", t(&np, vec![batch, 4, 3, 5])),
            ("x", t(&x, lat.clone())),
            ("x0_prev", t(&x0p, lat.clone())),
            ("z", t(&z, lat.clone())),
            ("known", t(&known, lat.clone())),
            ("noise0", t(&n0, lat.clone())),
            ("keep", t(&keep, vec![1, 1, 3, 5])),
            ("coef", t(&coef, vec![9])),
        ];
        if unet_in > 4 {
            inputs.push(("cond", t(&cond, vec![1, unet_in - 4, 3, 5])));
        }
        let out = sess.run(inputs).unwrap();
        let (xn, x0) = reference(&np, batch, &x, &x0p, &z, &known, &n0, &keep, &coef);
        let got = |k: &str| out[k].try_extract_tensor::<f32>().unwrap().1.to_vec();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-5);
        assert!(close(&got("x_next"), &xn), "x_next, batch {batch}");
        assert!(close(&got("x0"), &x0), "x0, batch {batch}");
        let sample = got("sample");
        assert_eq!(sample.len(), batch * unet_in * 15);
        for b in 0..batch {
            let one = &sample[b * unet_in * 15..(b + 1) * unet_in * 15];
            assert!(close(&one[..n], &xn));
            assert!(close(&one[n..], &cond));
        }
    }
}

#[test]
fn add_keeps_the_outside_and_is_reproducible() {
    let c = case();
    let (o, a) = add(&c, "dog", "a.png", &["--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("(seed 3, 7 steps on cpu"), "{}", text(&o));
    check_result(&c, &a);
    let (o, b) = add(&c, "dog", "b.png", &["--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same seed, different bytes");
    let (o, other) = add(&c, "dog", "c.png", &["--seed", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&other).unwrap(), "another seed, same bytes");
}

#[test]
fn both_schedulers_inpainting_v_prediction_and_scene_bundles_run() {
    let c = case();
    for (concept, extra) in [
        ("dog", vec!["--scheduler", "dpm++2m"]),
        ("dog", vec!["--sampler", "ddpm", "--strength", "1"]),
        ("dog", vec!["--guidance", "1"]),
        ("inpaint", vec![]),
        ("inpaint", vec!["--scheduler", "dpm++2m", "--strength", "1"]),
        ("vpred", vec!["--scheduler", "dpm++2m"]),
        ("field", vec!["--prompt", "a red photo of {scene}"]),
        (
            "dog",
            vec![
                "--prompt",
                "a photo of {subject} on the blue {scene}",
                "--negative-prompt",
                "red",
                "--variants",
                "2",
            ],
        ),
    ] {
        let (o, out) = add(&c, concept, "r.png", &extra);
        assert!(o.status.success(), "{concept} {extra:?}: {}", text(&o));
        if extra.contains(&"--variants") {
            for i in [1, 2] {
                check_result(&c, &c.dir.path().join(format!("r-{i}.png")));
            }
        } else {
            check_result(&c, &out);
        }
    }
}

#[test]
fn refusals_exit_2_with_a_specific_message() {
    let c = case();
    let (o, out) = add(&c, "half", "h.png", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("float16") && text(&o).contains("--device cuda") && text(&o).contains("float32"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    // Fused graphs: refused on the CPU before a session is made (a session
    // would fail on their contrib operators with ONNX Runtime's own words).
    let (o, out) = add(&c, "fused", "x.png", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(
            "concept \"fused\" has graphs fused for CUDA by onnxruntime-transformers (unet, vae_decoder), \
             whose operators ONNX Runtime runs on CUDA only (--device cpu was asked): use --device cuda"
        ) && t.contains("--optimize off"),
        "{t}"
    );
    assert!(!t.contains("ONNX Runtime failed") && !t.contains("GroupNorm"), "{t}");
    assert!(!out.exists());
    let lib = pie::Library::open(Some(c.lib.path().to_path_buf())).unwrap();
    let fused = lib.load("fused").unwrap();
    let scene = image::open(&c.scene).unwrap();
    let mask = image::open(&c.mask).unwrap().to_luma8();
    let req = pie::AddRequest::default();
    match library_add(&fused, &scene, &mask, pie::Device::Cpu, &req) {
        Err(pie::Error::CudaOnly { concept, needs: pie::CudaOnly::Fused { graphs, .. }, cuda: None }) => {
            assert_eq!((concept.as_str(), graphs), ("fused", vec!["unet", "vae_decoder"]));
        }
        other => panic!("expected CudaOnly, got {other:?}"),
    }
    // Automatic: CUDA if this machine has it, else the same refusal saying why not.
    match library_add(&fused, &scene, &mask, pie::Device::Auto, &req) {
        Ok(outs) => assert_eq!(outs[0].device, pie::Device::Cuda),
        Err(pie::Error::CudaOnly { cuda: Some(why), .. }) => assert!(!why.is_empty()),
        Err(e) => panic!("expected CUDA or CudaOnly, got {e}"),
    }
    let (o, _) = add(&c, "field", "f.png", &["--prompt", "a photo of {subject}"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("{subject}, but \"field\" is a scene concept"), "{}", text(&o));
    let (o, _) = add(&c, "dog", "f.png", &["--prompt", "a photo of {subjcet}"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown placeholder {subjcet}"), "{}", text(&o));
    let (o, _) = add(&c, "ball", "f.png", &["--scheduler", "dpm++2m"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--scheduler dpm++2m is for sd and sdxl concepts"), "{}", text(&o));
    let (o, _) = add(&c, "dog", "f.png", &["--scheduler", "dpm++2m", "--sampler", "ddpm"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A corrupted graph: its sha256 no longer matches.
    let unet = c.lib.path().join("dog/unet.onnx");
    let mut bytes = std::fs::read(&unet).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&unet, bytes).unwrap();
    let (o, _) = add(&c, "dog", "f.png", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("concept bundle dog: unet.onnx: sha256 is"), "{}", text(&o));
    assert_eq!(listing(c.dir.path()), ["scene.png", "sel.png"]);
}

#[test]
fn ctrl_c_during_sd_add_exits_3_and_writes_nothing() {
    let c = case();
    let big = c.dir.path().join("big.png");
    let bigmask = c.dir.path().join("bigmask.png");
    scene_rgb8(512, 384).save(&big).unwrap();
    rect_mask(512, 384, 100, 100, 250, 200, 8).save(&bigmask).unwrap();
    let out = c.dir.path().join("r.png");
    ort();
    // The synthetic model is so small that a fixed sleep can outlast the whole
    // run; the first JSON event says the add has begun, so Ctrl-C lands inside it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pie"))
        .arg("--json")
        .arg("--library")
        .arg(c.lib.path())
        .args([
            "add",
            big.to_str().unwrap(),
            "--selection",
            bigmask.to_str().unwrap(),
            "--concept",
            "dog",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "1000",
            "--strength",
            "1",
            "--variants",
            "64",
            "--device",
            "cpu",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{first}{rest}");
    assert!(!out.exists());
    assert_eq!(listing(c.dir.path()), ["big.png", "bigmask.png", "scene.png", "sel.png"]);
}

fn library_add(
    b: &pie::Bundle,
    scene: &image::DynamicImage,
    mask: &image::GrayImage,
    device: pie::Device,
    sd: &pie::AddRequest,
) -> pie::Result<Vec<pie::AddOutput>> {
    let opts = pie::AddRequest {
        strength: Some(0.2),
        scheduler: sd.scheduler,
        cuda_graph: sd.cuda_graph,
        steps: Some(10),
        guidance: Some(pie::sd::DEFAULT_GUIDANCE),
        device,
        seed: 2,
        ..Default::default()
    };
    let mut outs = Vec::new();
    pie::add_each(b, scene, mask, &opts, &mut pie::NoProgress, &mut |o| {
        outs.push(o);
        Ok(())
    })?;
    Ok(outs)
}

/// What the plug-in calls (`pie::add`, no sd options) runs sd bundles too.
#[test]
fn the_library_entry_point_dispatches_on_the_backbone() {
    ort();
    let lib = sd_library();
    let l = pie::Library::open(Some(lib.path().to_path_buf())).unwrap();
    let scene = image::DynamicImage::ImageRgb8(scene_rgb8(96, 72));
    let mask = rect_mask(96, 72, 30, 20, 32, 28, 1);
    for name in ["dog", "ball"] {
        let b = l.load(name).unwrap();
        let opts = pie::AddRequest { steps: Some(6), device: pie::Device::Cpu, ..Default::default() };
        let outs = pie::add(&b, &scene, &mask, &opts, &mut pie::NoProgress).unwrap();
        assert_eq!(outs.len(), 1);
        assert_eq!((outs[0].image.width(), outs[0].image.height()), (96, 72));
        assert!(outs[0].image.as_bytes() != scene.as_bytes(), "{name}: nothing changed");
    }
}

/// On a machine with CUDA (skipped elsewhere): CUDA with device-resident
/// latents, with a CUDA graph, and a float16 bundle, against the CPU.
#[test]
fn cuda_where_there_is_one_matches_the_cpu() {
    ort();
    if !pie::runtime::probe_cuda().map(|r| r.is_ok()).unwrap_or(false) {
        eprintln!("SKIP: CUDA is not usable here");
        return;
    }
    let lib = sd_library();
    let l = pie::Library::open(Some(lib.path().to_path_buf())).unwrap();
    let scene = image::DynamicImage::ImageRgb8(scene_rgb8(160, 120));
    let mask = rect_mask(160, 120, 50, 30, 48, 48, 6);
    let mean_diff = |a: &pie::AddOutput, b: &pie::AddOutput| {
        a.image.as_bytes().iter().zip(b.image.as_bytes()).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>()
            / a.image.as_bytes().len() as f64
    };
    for name in ["dog", "inpaint", "vpred"] {
        let b = l.load(name).unwrap();
        for scheduler in [pie::Scheduler::Ddim, pie::Scheduler::DpmSolver2M] {
            let cpu = library_add(
                &b,
                &scene,
                &mask,
                pie::Device::Cpu,
                &pie::AddRequest { scheduler: Some(scheduler), ..Default::default() },
            )
            .unwrap();
            // Off, on, and the default (on where ONNX Runtime can capture the UNet).
            for cuda_graph in [Some(false), Some(true), None] {
                let sd = pie::AddRequest { scheduler: Some(scheduler), cuda_graph, ..Default::default() };
                let gpu = library_add(&b, &scene, &mask, pie::Device::Cuda, &sd)
                    .unwrap_or_else(|e| panic!("{name} {scheduler} graph {cuda_graph:?}: {e}"));
                let again = library_add(&b, &scene, &mask, pie::Device::Cuda, &sd).unwrap();
                assert_eq!(gpu[0].device, pie::Device::Cuda);
                assert!(
                    gpu[0].image.as_bytes() == again[0].image.as_bytes(),
                    "{name}: CUDA, same seed, different images"
                );
                let d = mean_diff(&gpu[0], &cpu[0]);
                assert!(
                    d < 1.0,
                    "{name} {scheduler} graph {cuda_graph:?}: CUDA and CPU differ by {d} per sample"
                );
            }
        }
    }
    // float16 weights: CUDA only, also under auto.
    let half = l.load("half").unwrap();
    let dog = l.load("dog").unwrap();
    let h = library_add(&half, &scene, &mask, pie::Device::Auto, &pie::AddRequest::default()).unwrap();
    assert_eq!(h[0].device, pie::Device::Cuda);
    let f = library_add(&dog, &scene, &mask, pie::Device::Cuda, &pie::AddRequest::default()).unwrap();
    let d = mean_diff(&h[0], &f[0]);
    assert!(d < 3.0, "float16 and float32 differ by {d} per sample");
}

#[test]
fn learn_options_for_sd_are_checked_before_the_trainer_starts() {
    let c = case();
    let img = c.scene.to_str().unwrap();
    let o = pie(
        c.lib.path(),
        &["learn-scene", img, "--name", "new", "--backbone", "sd", "--base", "/nonexistent/sd15"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--base /nonexistent/sd15: does not exist"), "{}", text(&o));
    let o = pie(c.lib.path(), &["learn-scene", img, "--name", "new", "--lora-rank", "4"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--lora-rank is an option of --backbone sd"), "{}", text(&o));
    let o = pie(c.lib.path(), &["learn-scene", img, "--name", "new", "--optimize", "on"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--optimize is an option of --backbone sd"), "{}", text(&o));
    // A subject grows on its scene's backbone: "field" is an sd scene.
    let o = pie(
        c.lib.path(),
        &["learn-subject", img, "--scene", "field", "--name", "new", "--backbone", "pixel-unet"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("was learned with the sd backbone"), "{}", text(&o));
}

#[test]
fn sd_adds_take_on_the_look_options_instead_of_ignoring_them() {
    let c = case();
    let plain = ["--strength", "0.2", "--harmonize", "0", "--shadow", "0", "--no-grain"];
    let (o, none) = add(&c, "dog", "none.png", &plain);
    assert!(o.status.success(), "{}", text(&o));
    let mut shadowed = plain.to_vec();
    shadowed[5] = "1";
    let (o, shadow) = add(&c, "dog", "shadow.png", &shadowed);
    assert!(o.status.success(), "{}", text(&o));
    let (none, shadow) = (check_result(&c, &none), check_result(&c, &shadow));
    // The selection is x 30..62, y 20..48; the subject stands at its bottom.
    let luma = |img: &image::RgbImage, rows: std::ops::Range<u32>| {
        let mut s = 0.0;
        let mut n = 0.0;
        for y in rows {
            for x in 32..60 {
                let p = img.get_pixel(x, y).0;
                s += 0.3 * f64::from(p[0]) + 0.59 * f64::from(p[1]) + 0.11 * f64::from(p[2]);
                n += 1.0;
            }
        }
        s / n
    };
    let (below_none, below_shadow) = (luma(&none, 42..48), luma(&shadow, 42..48));
    // The synthetic VAE paints 8x8 cells back, so the shadow shows averaged.
    assert!(below_shadow < below_none - 0.3, "no shadow under the subject: {below_none} -> {below_shadow}");
    let (above_none, above_shadow) = (luma(&none, 20..24), luma(&shadow, 20..24));
    assert_eq!(above_none, above_shadow, "above the subject changed: {above_none} -> {above_shadow}");
    let mut lit = plain.to_vec();
    lit[3] = "1";
    let (o, harmonized) = add(&c, "dog", "lit.png", &lit);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(std::fs::read(c.dir.path().join("none.png")).unwrap(), std::fs::read(harmonized).unwrap());
}

/// The sdxl toys: "xldog" (a subject, an empty negative is zeros), "xlflat"
/// (the same, the empty negative encoded), "xlfield" (a scene).
fn sdxl_library() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, stage, zero) in [
        ("xldog", pie::Stage::Subject, true),
        ("xlflat", pie::Stage::Subject, false),
        ("xlfield", pie::Stage::Scene, true),
    ] {
        write_sd_bundle(
            d.path(),
            &SyntheticSd { name: name.into(), stage, xl: Some(zero), ..Default::default() },
        )
        .unwrap();
    }
    d
}

#[test]
fn sdxl_bundles_validate_and_show_their_conditioning() {
    let lib = sdxl_library();
    let l = pie::Library::open(Some(lib.path().to_path_buf())).unwrap();
    for name in ["xldog", "xlflat", "xlfield"] {
        let b = l.load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(b.manifest.backbone, pie::Backbone::Sdxl);
    }
    let o = pie(lib.path(), &["concepts", "show", "xldog"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("backbone sdxl at 64 px"), "{t}");
    assert!(
        t.contains("two text encoders (16 wide together), pooled embeddings 4 wide, size conditioning, an empty negative prompt is zeros"),
        "{t}"
    );
}

#[test]
fn sdxl_add_feeds_the_added_conditioning_and_keeps_the_outside() {
    let mut c = case();
    c.lib = sdxl_library();
    let (o, a) = add(&c, "xldog", "a.png", &["--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    let img = check_result(&c, &a);
    let (o, b) = add(&c, "xldog", "b.png", &["--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same seed, different bytes");
    for (concept, extra) in [
        ("xldog", vec!["--scheduler", "dpm++2m"]),
        ("xldog", vec!["--guidance", "1"]),
        ("xldog", vec!["--negative-prompt", "red", "--variants", "2"]),
        ("xlfield", vec!["--prompt", "a red photo of {scene}"]),
    ] {
        let (o, out) = add(&c, concept, "r.png", &extra);
        assert!(o.status.success(), "{concept} {extra:?}: {}", text(&o));
        if extra.contains(&"--variants") {
            check_result(&c, &c.dir.path().join("r-1.png"));
        } else {
            check_result(&c, &out);
        }
    }
    // Same graphs, same seed: only what the unconditional half is told differs.
    let (o, flat) = add(&c, "xlflat", "flat.png", &["--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    let flat = check_result(&c, &flat);
    let differ = img.pixels().zip(flat.pixels()).filter(|(p, q)| p != q).count();
    assert!(differ > 200, "zeros and the encoded empty prompt gave nearly the same result ({differ} pixels)");
}

#[test]
fn broken_sdxl_bundles_are_refused_with_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let mk = |name: &str, xl: Option<bool>| {
        write_sd_bundle(d.path(), &SyntheticSd { name: name.into(), xl, ..Default::default() }).unwrap()
    };
    let b = mk("nocond", Some(true));
    edit_manifest(&b, |v| {
        v["model"].as_object_mut().unwrap().remove("conditioning");
    });
    let e = load_err(d.path(), "nocond");
    assert!(e.contains("an sdxl bundle needs model.conditioning"), "{e}");

    let b = mk("sdwithcond", Some(true));
    edit_manifest(&b, |v| v["backbone"] = serde_json::json!("sd"));
    let e = load_err(d.path(), "sdwithcond");
    assert!(e.contains("model.conditioning is an sdxl bundle's, and this one says backbone sd"), "{e}");

    let b = mk("notime", Some(true));
    edit_manifest(&b, |v| {
        v["graphs"]["unet"]["inputs"].as_array_mut().unwrap().pop();
    });
    let e = load_err(d.path(), "notime");
    assert!(e.contains("graphs.unet.inputs are [") && e.contains("time_ids float32 rank 2]"), "{e}");

    let b = mk("refiner", Some(true));
    edit_manifest(&b, |v| v["model"]["conditioning"]["time_ids"][5] = serde_json::json!("aesthetic_score"));
    let e = load_err(d.path(), "refiner");
    assert!(e.contains("model.conditioning.time_ids are [") && e.contains("aesthetic_score"), "{e}");

    // An sd graph set under an sdxl manifest: the text graph lacks input_ids_2.
    let b = mk("plain", None);
    edit_manifest(&b, |v| {
        v["backbone"] = serde_json::json!("sdxl");
        v["model"]["conditioning"] = serde_json::json!({"pooled_size": 4, "time_ids": pie::sdxl::TIME_IDS,
                                                        "pad_id_2": 0, "zero_negative": true});
    });
    let e = load_err(d.path(), "plain");
    assert!(e.contains("graphs.text_encoder.inputs are [input_ids int64 rank 2]"), "{e}");
}

#[test]
fn cuda_graphs_can_be_switched_off_but_not_both_ways_at_once() {
    let c = case();
    // On the CPU there is no graph to capture: asking for none changes nothing.
    let (o, a) = add(&c, "dog", "a.png", &["--seed", "5", "--no-cuda-graph"]);
    assert!(o.status.success(), "{}", text(&o));
    let (o, b) = add(&c, "dog", "b.png", &["--seed", "5"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let (o, _) = add(&c, "ball", "p.png", &["--no-cuda-graph"]);
    assert!(o.status.success(), "a pixel concept refused --no-cuda-graph: {}", text(&o));
    let (o, _) = add(&c, "dog", "x.png", &["--cuda-graph", "--no-cuda-graph"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--no-cuda-graph") && text(&o).contains("cannot be used with"), "{}", text(&o));
}
