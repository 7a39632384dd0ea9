//! Synthetic bundles with real ONNX graphs, for tests, the benchmark and
//! `pie doctor`: the denoiser is the exact ε-predictor for images of one flat
//! colour per token, so what sampling should produce is known.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::bundle::{hex, sha256_file};
use crate::manifest::{Schedule, Stage};
use crate::onnxfile::write::{model, node, tensor_f32, tensor_i64, value_info};
use crate::onnxfile::{FLOAT, INT64};
use crate::schedule::NoiseSchedule;

pub struct Synthetic {
    pub name: String,
    /// A scene only, or a scene and a subject.
    pub stage: Stage,
    /// Colours (RGB in [0, 1]) that the scene and subject tokens denoise to.
    pub scene_rgb: [f32; 3],
    pub subject_rgb: [f32; 3],
    pub scene_short_side: u32,
    pub timesteps: u32,
    /// ε is scaled by this: below 1 the denoiser is slightly wrong, so some of
    /// the starting noise survives and different seeds give different images.
    pub gain: f32,
}

impl Default for Synthetic {
    fn default() -> Self {
        Synthetic {
            name: "synthetic".into(),
            stage: Stage::Subject,
            scene_rgb: [0.2, 0.5, 0.8],
            subject_rgb: [0.9, 0.2, 0.1],
            scene_short_side: 256,
            timesteps: 1000,
            gain: 0.9,
        }
    }
}

fn schedule(t: u32) -> Schedule {
    Schedule {
        kind: "ddpm".into(),
        num_train_timesteps: t,
        beta_schedule: "linear".into(),
        beta_start: 1e-4,
        beta_end: 0.02,
        prediction_type: "epsilon".into(),
        steps_offset: None,
        timestep_spacing: None,
        set_alpha_to_one: None,
    }
}

/// The manifest's `files` entries (path, sha256, bytes) of `files` in `dir`.
pub(crate) fn file_entries(dir: &Path, files: &[&str]) -> std::io::Result<Vec<serde_json::Value>> {
    files
        .iter()
        .map(|f| {
            let p = dir.join(f);
            Ok(json!({"path": f, "sha256": sha256_file(&p)?, "bytes": std::fs::metadata(&p)?.len()}))
        })
        .collect()
}

/// eps = gain · (x − √ᾱ_t·c_token) / √(1−ᾱ_t).
pub fn denoiser_onnx(s: &Synthetic) -> Vec<u8> {
    let sched = NoiseSchedule::from_manifest(&schedule(s.timesteps));
    let sa: Vec<f32> = sched.alphas_cumprod.iter().map(|a| a.sqrt() as f32).collect();
    let s1: Vec<f32> = sched.alphas_cumprod.iter().map(|a| (1.0 - a).sqrt() as f32).collect();
    let to_m = |c: [f32; 3]| c.map(|v| v * 2.0 - 1.0);
    let (sc, su) = (to_m(s.scene_rgb), to_m(s.subject_rgb));
    // Rows by token id: null 0 (unconditional = the scene), scene 1, subject 2.
    let colors: Vec<f32> = [sc, sc, su].concat();
    let t = i64::from(s.timesteps);
    model(
        &[
            node("Gather", &["sa", "t"], &["sat"]),
            node("Gather", &["s1", "t"], &["s1t"]),
            node("Reshape", &["sat", "shape_n111"], &["sat4"]),
            node("Reshape", &["s1t", "shape_n111"], &["s1t4"]),
            node("Gather", &["colors", "token"], &["c"]),
            node("Reshape", &["c", "shape_n311"], &["c4"]),
            node("Mul", &["sat4", "c4"], &["mean"]),
            node("Sub", &["x", "mean"], &["diff"]),
            node("Div", &["diff", "s1t4"], &["eps1"]),
            node("Mul", &["eps1", "gain"], &["eps"]),
        ],
        &[
            tensor_f32("sa", &[t], &sa),
            tensor_f32("s1", &[t], &s1),
            tensor_f32("colors", &[3, 3], &colors),
            tensor_f32("gain", &[], &[s.gain]),
            tensor_i64("shape_n111", &[4], &[-1, 1, 1, 1]),
            tensor_i64("shape_n311", &[4], &[-1, 3, 1, 1]),
        ],
        &[
            value_info("x", FLOAT, &[(-1, "N"), (3, ""), (-1, "H"), (-1, "W")]),
            value_info("t", INT64, &[(-1, "N")]),
            value_info("token", INT64, &[(-1, "N")]),
        ],
        &[value_info("eps", FLOAT, &[(-1, "N"), (3, ""), (-1, "H"), (-1, "W")])],
    )
}

/// A subject image: a disc of the subject colour, alpha = the disc.
pub fn subject_png(s: &Synthetic) -> image::RgbaImage {
    let c = s.subject_rgb.map(|v| (v * 255.0).round() as u8);
    image::RgbaImage::from_fn(48, 64, |x, y| {
        let (dx, dy) = ((x as f32 - 23.5) / 22.0, (y as f32 - 31.5) / 30.0);
        let inside = dx * dx + dy * dy <= 1.0;
        image::Rgba([c[0], c[1], c[2], if inside { 255 } else { 0 }])
    })
}

/// Writes a complete, valid bundle into `<library>/<name>` and returns its folder.
pub fn write_bundle(library: &Path, s: &Synthetic) -> std::io::Result<PathBuf> {
    let dir = library.join(&s.name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("denoiser.onnx"), denoiser_onnx(s))?;
    let mut files = vec!["denoiser.onnx"];
    if s.stage == Stage::Subject {
        subject_png(s).save(dir.join("subject.png")).map_err(std::io::Error::other)?;
        files.push("subject.png");
    }
    let entries = file_entries(&dir, &files)?;
    let src = hex(&[7u8; 32]);
    let mut concepts = vec![
        json!({"id": 1, "identifier": "zwx", "name": "scene", "role": "scene", "stage": 1, "source_sha256": src, "source_size": [640, 427]}),
    ];
    if s.stage == Stage::Subject {
        concepts.push(json!({"id": 2, "identifier": "qbk", "name": s.name, "role": "subject", "stage": 2, "source_sha256": src, "source_size": [48, 64]}));
    }
    let spec = |n: &str, d: &str, shape: serde_json::Value| json!({"name": n, "dtype": d, "shape": shape});
    let mut m = json!({
        "format": "pie-bundle", "format_version": 1, "name": s.name, "stage": s.stage, "backbone": "pixel-unet",
        "parent": if s.stage == Stage::Subject { json!({"name": "scene", "manifest_sha256": src}) } else { json!(null) },
        "model": {"resolution": 64, "size_multiple": 4, "min_size": 16, "channels": 3, "value_range": [-1, 1], "base_channels": 32, "scene_short_side": s.scene_short_side},
        "schedule": schedule(s.timesteps),
        "tokens": {"null": 0, "vocab_size": 3, "concepts": concepts},
        "graphs": {"denoiser": {"file": "denoiser.onnx",
            "inputs": [spec("x", "float32", json!(["N", 3, "H", "W"])), spec("t", "int64", json!(["N"])), spec("token", "int64", json!(["N"]))],
            "outputs": [spec("eps", "float32", json!(["N", 3, "H", "W"]))]}},
        "files": entries,
        "training": {"synthetic": true},
        "trainer": {"name": "pie-testkit", "version": env!("CARGO_PKG_VERSION")},
        "created": "2026-01-01T00:00:00Z",
    });
    if s.stage == Stage::Subject {
        m["subject"] = json!({"file": "subject.png", "has_mask": true});
    }
    let text = serde_json::to_string_pretty(&m).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("bundle.json"), text)?;
    Ok(dir)
}
