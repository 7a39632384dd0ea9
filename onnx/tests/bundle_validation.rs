//! Every way a bundle can be broken gets its own, specific error, and no ONNX
//! Runtime is needed to find out.

mod common;

use std::path::{Path, PathBuf};

use pie::onnxfile::write::{model, node, value_info, Msg};
use pie::onnxfile::{FLOAT, INT64};
use pie::testkit::{write_bundle, Synthetic};
use pie::{Bundle, ErrorKind, Library, Stage};
use serde_json::Value;

fn fresh(stage: Stage) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let dir = write_bundle(d.path(), &Synthetic { name: "c".into(), stage, ..Default::default() }).unwrap();
    (d, dir)
}

fn edit(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("bundle.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Records the current hash and size of `file`, as a careful forger would.
fn rehash(dir: &Path, file: &str) {
    let sum = pie::bundle::sha256_file(&dir.join(file)).unwrap();
    let bytes = std::fs::metadata(dir.join(file)).unwrap().len();
    edit(dir, |v| {
        for f in v["files"].as_array_mut().unwrap() {
            if f["path"] == file {
                f["sha256"] = sum.clone().into();
                f["bytes"] = bytes.into();
            }
        }
    });
}

fn fails(dir: &Path, file: &str, what: &str) {
    let e = Bundle::load(dir).expect_err("the bundle should be refused");
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("concept bundle c"), "message should name the bundle: {msg}");
    assert!(msg.contains(file), "message should name {file}: {msg}");
    assert!(msg.contains(what), "message should say {what:?}: {msg}");
}

#[test]
fn valid_bundles_load() {
    for stage in [Stage::Scene, Stage::Subject] {
        let (_d, dir) = fresh(stage);
        let b = Bundle::load(&dir).unwrap();
        assert_eq!(b.scene_token, 1);
        assert_eq!(b.null_token, 0);
        assert_eq!(b.subject_token, if stage == Stage::Subject { Some(2) } else { None });
        assert_eq!(b.subject.is_some(), stage == Stage::Subject);
    }
}

#[test]
fn bad_json() {
    let (_d, dir) = fresh(Stage::Subject);
    std::fs::write(dir.join("bundle.json"), b"{\"format\": \"pie-bundle\", ").unwrap();
    fails(&dir, "bundle.json", "not valid JSON");
}

#[test]
fn missing_manifest_and_missing_folder() {
    let (d, dir) = fresh(Stage::Subject);
    std::fs::remove_file(dir.join("bundle.json")).unwrap();
    fails(&dir, "bundle.json", "missing");
    let e = Bundle::load(&d.path().join("nope")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(e.to_string().contains("no concept bundle"), "{e}");
}

#[test]
fn missing_file() {
    let (_d, dir) = fresh(Stage::Subject);
    std::fs::remove_file(dir.join("denoiser.onnx")).unwrap();
    fails(&dir, "denoiser.onnx", "missing");
}

#[test]
fn wrong_sha256() {
    let (_d, dir) = fresh(Stage::Subject);
    let p = dir.join("denoiser.onnx");
    let mut b = std::fs::read(&p).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&p, b).unwrap();
    fails(&dir, "denoiser.onnx", "sha256");
}

#[test]
fn wrong_size() {
    let (_d, dir) = fresh(Stage::Subject);
    std::fs::write(dir.join("subject.png"), b"short").unwrap();
    fails(&dir, "subject.png", "bytes");
}

#[test]
fn unknown_format_version() {
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["format_version"] = 2.into());
    fails(&dir, "bundle.json", "unknown format_version 2");
}

#[test]
fn unknown_field_and_wrong_types() {
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["surprise"] = true.into());
    fails(&dir, "bundle.json", "surprise");
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["stage"] = "two".into());
    fails(&dir, "bundle.json", "does not match format_version 1");
}

#[test]
fn wrong_graph_signature_in_the_manifest() {
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["graphs"]["denoiser"]["inputs"][1]["dtype"] = "float32".into());
    fails(&dir, "bundle.json", "pixel-unet contract");
}

#[test]
fn graph_does_not_match_the_manifest() {
    let (_d, dir) = fresh(Stage::Subject);
    // A real graph whose input is called "image", not "x".
    let m = model(
        &[node("Identity", &["image"], &["eps"])],
        &[],
        &[
            value_info("image", FLOAT, &[(-1, "N"), (3, ""), (-1, "H"), (-1, "W")]),
            value_info("t", INT64, &[(-1, "N")]),
            value_info("token", INT64, &[(-1, "N")]),
        ],
        &[value_info("eps", FLOAT, &[(-1, "N"), (3, ""), (-1, "H"), (-1, "W")])],
    );
    std::fs::write(dir.join("denoiser.onnx"), m).unwrap();
    rehash(&dir, "denoiser.onnx");
    fails(&dir, "denoiser.onnx", "does not match");
}

#[test]
fn graph_with_wrong_rank() {
    let (_d, dir) = fresh(Stage::Subject);
    let m = model(
        &[node("Identity", &["x"], &["eps"])],
        &[],
        &[
            value_info("x", FLOAT, &[(-1, "N"), (3, ""), (-1, "H")]),
            value_info("t", INT64, &[(-1, "N")]),
            value_info("token", INT64, &[(-1, "N")]),
        ],
        &[value_info("eps", FLOAT, &[(-1, "N"), (3, ""), (-1, "H"), (-1, "W")])],
    );
    std::fs::write(dir.join("denoiser.onnx"), m).unwrap();
    rehash(&dir, "denoiser.onnx");
    fails(&dir, "denoiser.onnx", "graph inputs");
}

#[test]
fn not_an_onnx_file() {
    let (_d, dir) = fresh(Stage::Subject);
    std::fs::write(dir.join("denoiser.onnx"), b"\x08\x08hello").unwrap();
    rehash(&dir, "denoiser.onnx");
    fails(&dir, "denoiser.onnx", "not a readable ONNX model");
}

#[test]
fn paths_escaping_the_folder() {
    for bad in ["../denoiser.onnx", "/etc/passwd", ".hidden", "sub/denoiser.onnx"] {
        let (_d, dir) = fresh(Stage::Subject);
        edit(&dir, |v| v["files"][0]["path"] = bad.into());
        fails(&dir, "bundle.json", "not a plain file name");
        let (_d, dir) = fresh(Stage::Subject);
        edit(&dir, |v| v["graphs"]["denoiser"]["file"] = bad.into());
        fails(&dir, "bundle.json", "not a plain file name");
    }
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["subject"]["file"] = "other.png".into());
    fails(&dir, "bundle.json", "not listed in files");
}

#[test]
fn external_data_outside_the_folder() {
    let (_d, dir) = fresh(Stage::Subject);
    let ext = Msg::default()
        .int(1, 3)
        .int(2, i64::from(FLOAT))
        .str(8, "w")
        .msg(13, &Msg::default().str(1, "location").str(2, "../../etc/passwd"))
        .int(14, 1);
    let m = model(
        &[node("Add", &["x", "w"], &["eps"])],
        &[ext],
        &[
            value_info("x", FLOAT, &[(-1, "N"), (3, ""), (-1, "H"), (-1, "W")]),
            value_info("t", INT64, &[(-1, "N")]),
            value_info("token", INT64, &[(-1, "N")]),
        ],
        &[value_info("eps", FLOAT, &[(-1, "N"), (3, ""), (-1, "H"), (-1, "W")])],
    );
    std::fs::write(dir.join("denoiser.onnx"), m).unwrap();
    rehash(&dir, "denoiser.onnx");
    fails(&dir, "denoiser.onnx", "external data \"../../etc/passwd\"");
}

#[test]
fn links_are_refused() {
    let (_d, dir) = fresh(Stage::Subject);
    std::fs::rename(dir.join("subject.png"), dir.join("elsewhere.png")).unwrap();
    std::os::unix::fs::symlink(dir.join("elsewhere.png"), dir.join("subject.png")).unwrap();
    fails(&dir, "subject.png", "not a regular file");
}

#[test]
fn token_rules() {
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["tokens"]["concepts"][1]["id"] = 0.into());
    fails(&dir, "bundle.json", "used twice");
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["tokens"]["concepts"][0]["identifier"] = "Zw".into());
    fails(&dir, "bundle.json", "malformed identifier");
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["tokens"]["concepts"][1]["id"] = 7.into());
    fails(&dir, "bundle.json", "vocab_size");
    let (_d, dir) = fresh(Stage::Scene);
    edit(&dir, |v| v["parent"] = serde_json::json!({"name": "x", "manifest_sha256": "0".repeat(64)}));
    fails(&dir, "bundle.json", "must not have a parent");
}

#[test]
fn library_resolution_names_and_remove() {
    let lib = common::synthetic_library();
    let l = Library::open(Some(lib.path().to_path_buf())).unwrap();
    let names: Vec<String> = l.list().unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["ball", "meadow"]);
    for bad in ["../ball", "/tmp", ".x", "Ball", ""] {
        assert_eq!(l.load(bad).unwrap_err().kind(), ErrorKind::BadInput, "{bad}");
        assert_eq!(l.remove(bad).unwrap_err().kind(), ErrorKind::BadInput, "{bad}");
    }
    let e = l.load("nothere").unwrap_err();
    assert!(e.to_string().contains("known: ball, meadow"), "{e}");
    // a dot-folder is never a concept
    std::fs::create_dir(lib.path().join(".partial-x-1")).unwrap();
    assert_eq!(l.list().unwrap().len(), 2);
    // folder name and manifest name must agree
    std::fs::rename(lib.path().join("meadow"), lib.path().join("field")).unwrap();
    assert!(l.load("field").unwrap_err().to_string().contains("names the concept \"meadow\""));
    l.remove("ball").unwrap();
    assert!(!lib.path().join("ball").exists());
    assert_eq!(l.list().unwrap().len(), 1);
}

#[test]
fn library_path_resolution() {
    let explicit = Library::open(Some(PathBuf::from("/some/where"))).unwrap();
    assert_eq!(explicit.path(), Path::new("/some/where"));
}

#[test]
fn an_unknown_stage_role_backbone_or_precision_on_disk_is_named_with_what_is_accepted() {
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["stage"] = 3.into());
    fails(&dir, "bundle.json", "stage 3 is neither 1 (scene) nor 2 (subject)");
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["tokens"]["concepts"][1]["role"] = "object".into());
    fails(&dir, "bundle.json", "unknown variant `object`, expected `scene` or `subject`");
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["backbone"] = "sd3".into());
    fails(&dir, "bundle.json", "unknown variant `sd3`, expected one of `pixel-unet`, `sd`, `sdxl`");
    let (_d, dir) = fresh(Stage::Subject);
    edit(&dir, |v| v["tokens"]["concepts"][1]["stage"] = 1.into());
    fails(&dir, "bundle.json", "role \"subject\" cannot be bound in stage 1");

    let d = tempfile::tempdir().unwrap();
    let sd = pie::sd::testkit::SyntheticSd { name: "c".into(), ..Default::default() };
    let dir = pie::sd::testkit::write_sd_bundle(d.path(), &sd).unwrap();
    edit(&dir, |v| v["model"]["precision"] = "bfloat16".into());
    fails(&dir, "bundle.json", "unknown variant `bfloat16`, expected `float32` or `float16`");
}

#[test]
fn optimized_graphs_are_recorded_by_enums_and_only_for_float16() {
    let d = tempfile::tempdir().unwrap();
    let sd =
        pie::sd::testkit::SyntheticSd { name: "c".into(), fp16: true, optimized: true, ..Default::default() };
    let dir = pie::sd::testkit::write_sd_bundle(d.path(), &sd).unwrap();
    let b = Bundle::load(&dir).unwrap();
    let pie::backbone::Model::Sd(m) = &b.manifest.model else { panic!("not an sd model") };
    let o = m.optimized.as_ref().unwrap();
    assert_eq!(o.by, pie::manifest::Optimizer::OrtTransformers);
    assert_eq!(o.graphs, [pie::manifest::SdGraph::Unet, pie::manifest::SdGraph::VaeDecoder]);
    assert!(o.by.cuda_only());

    let original = std::fs::read(dir.join("bundle.json")).unwrap();
    let refused = |f: &dyn Fn(&mut Value), what: &str| {
        std::fs::write(dir.join("bundle.json"), &original).unwrap();
        edit(&dir, f);
        fails(&dir, "bundle.json", what);
    };
    refused(
        &|v| v["model"]["optimized"]["by"] = "tensorrt".into(),
        "unknown variant `tensorrt`, expected `onnxruntime-transformers`",
    );
    refused(&|v| v["model"]["optimized"]["graphs"][1] = "refiner".into(), "unknown variant `refiner`");
    refused(
        &|v| v["model"]["optimized"]["graphs"] = serde_json::json!(["unet", "unet"]),
        "model.optimized.graphs must list each rewritten graph once",
    );
    refused(
        &|v| v["model"]["optimized"]["graphs"] = serde_json::json!([]),
        "model.optimized.graphs must list each rewritten graph once",
    );
    refused(
        &|v| v["model"]["precision"] = "float32".into(),
        "onnxruntime-transformers rewrites float16 graphs only, model.precision is float32",
    );
    refused(&|v| v["model"]["optimized"]["passes"] = 3.into(), "unknown field `passes`");
}

#[test]
fn an_unreadable_concept_is_listed_as_before_with_stage_0() {
    let lib = common::synthetic_library();
    std::fs::create_dir(lib.path().join("broken")).unwrap();
    std::fs::write(lib.path().join("broken/bundle.json"), "{").unwrap();
    let l = Library::open(Some(lib.path().to_path_buf())).unwrap();
    let list = serde_json::to_value(l.list().unwrap()).unwrap();
    let by_name = |n: &str| list.as_array().unwrap().iter().find(|c| c["name"] == n).unwrap().clone();
    let broken = by_name("broken");
    assert_eq!(
        (&broken["stage"], &broken["role"], &broken["backbone"]),
        (&0.into(), &"?".into(), &"".into())
    );
    let ball = by_name("ball");
    assert_eq!(
        (&ball["stage"], &ball["role"], &ball["backbone"]),
        (&2.into(), &"subject".into(), &"pixel-unet".into())
    );
    let meadow = by_name("meadow");
    assert_eq!((&meadow["stage"], &meadow["role"]), (&1.into(), &"scene".into()));
}
