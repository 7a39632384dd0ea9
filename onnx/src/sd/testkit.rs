//! Synthetic sd bundles with real ONNX graphs and a real (tiny, CLIP-style)
//! tokenizer, for the tests: every graph follows the contract, and the UNet
//! is the exact denoiser of a latent of one flat colour per prompt, so what
//! sampling produces is known without a trained model.
//!
//! - text encoder: an embedding table (input_ids → [N, L, D]);
//! - UNet: ε (or v) of x ~ the flat latent c = mean over L of the first
//!   four hidden dims, times `gain`; an inpainting UNet reads channels 0..4;
//! - VAE encoder: mean of each 8×8 cell (R, G, B, luma); decoder: the
//!   inverse (each latent cell painted back, channels 0..3 as RGB).

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::bundle::hex;
use crate::manifest::{Schedule, Stage};
use crate::onnxfile::write::{
    model, node, node_attrs, node_ints, tensor_f16, tensor_f32, tensor_i64, value_info,
};
use crate::onnxfile::{FLOAT, INT64};
use crate::schedule::NoiseSchedule;

pub struct SyntheticSd {
    pub name: String,
    /// A scene only, or a scene and a subject.
    pub stage: Stage,
    /// A 9-channel inpainting UNet.
    pub inpainting: bool,
    /// Half-precision weights (graph I/O stays float32).
    pub fp16: bool,
    /// bundle.json says ONNX Runtime's transformer optimizer fused the UNet
    /// and the VAE decoder for CUDA (the graphs themselves stay plain).
    pub optimized: bool,
    /// "epsilon" or "v_prediction".
    pub prediction: String,
    /// Below 1 the denoiser is slightly wrong, so seeds differ.
    pub gain: f32,
    /// An sdxl bundle: a second embedding table for `input_ids_2` (hidden
    /// states twice as wide), pooled `text_embeds` that shift the flat latent,
    /// `time_ids` the UNet must be given; `Some(zero_negative)`.
    pub xl: Option<bool>,
}

impl Default for SyntheticSd {
    fn default() -> Self {
        SyntheticSd {
            name: "sdtoy".into(),
            stage: Stage::Subject,
            inpainting: false,
            fp16: false,
            optimized: false,
            prediction: "epsilon".into(),
            gain: 0.9,
            xl: None,
        }
    }
}

pub const MAX_LENGTH: usize = 16;
pub const HIDDEN: usize = 8;
/// sdxl: the width of the pooled `text_embeds` (the UNet reads four).
pub const POOLED: usize = 4;
const WORDS: [&str; 12] =
    ["a", "photo", "of", "in", "scene", "dog", "red", "blue", "zwx", "qbz", "on", "the"];

pub fn schedule() -> Schedule {
    Schedule {
        kind: "ddpm".into(),
        num_train_timesteps: 1000,
        beta_schedule: "scaled_linear".into(),
        beta_start: 0.00085,
        beta_end: 0.012,
        prediction_type: "epsilon".into(),
        steps_offset: Some(1),
        timestep_spacing: None,
        set_alpha_to_one: Some(false),
    }
}

/// CLIP's tokenizer.json layout (normalizer, regex Split + ByteLevel
/// pre-tokenizer, BPE with `</w>`) with a vocabulary of a few words.
/// Returns the JSON and the vocabulary (token → id).
pub fn tokenizer_json() -> (String, Vec<(String, u32)>) {
    let mut vocab: Vec<(String, u32)> = Vec::new();
    let add = |t: String, vocab: &mut Vec<(String, u32)>| {
        if !vocab.iter().any(|(k, _)| *k == t) {
            let id = vocab.len() as u32;
            vocab.push((t, id));
        }
    };
    for c in 'a'..='z' {
        add(c.to_string(), &mut vocab);
        add(format!("{c}</w>"), &mut vocab);
    }
    let mut merges: Vec<String> = Vec::new();
    for w in WORDS {
        let chars: Vec<String> = w.chars().map(|c| c.to_string()).collect();
        if chars.len() < 2 {
            continue;
        }
        let mut cur = chars[0].clone();
        for (i, c) in chars.iter().enumerate().skip(1) {
            let right = if i + 1 == chars.len() { format!("{c}</w>") } else { c.clone() };
            let m = format!("{cur} {right}");
            if !merges.contains(&m) {
                merges.push(m);
            }
            cur = format!("{cur}{right}");
            add(cur.clone(), &mut vocab);
        }
    }
    let bos = vocab.len() as u32;
    vocab.push(("<|startoftext|>".into(), bos));
    vocab.push(("<|endoftext|>".into(), bos + 1));
    let special = |id: u32, content: &str| json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": true});
    let v: serde_json::Map<String, serde_json::Value> =
        vocab.iter().map(|(k, i)| (k.clone(), json!(i))).collect();
    let j = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(bos, "<|startoftext|>"), special(bos + 1, "<|endoftext|>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", bos + 1], "cls": ["<|startoftext|>", bos],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>", "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "vocab": v, "merges": merges},
    });
    (serde_json::to_string_pretty(&j).unwrap_or_default(), vocab)
}

/// input_ids[N, L] int64 → last_hidden_state[N, L, D] float32.
fn text_encoder(vocab: usize, fp16: bool) -> Vec<u8> {
    // Each word's embedding: a colour-ish direction in the first four dims.
    let emb: Vec<f32> = (0..vocab * HIDDEN)
        .map(|i| {
            let (t, d) = (i / HIDDEN, i % HIDDEN);
            (((t * 37 + d * 11) % 17) as f32 / 8.0 - 1.0) * 0.5
        })
        .collect();
    let l = MAX_LENGTH as i64;
    let (nodes, init) = if fp16 {
        (
            vec![
                node("Gather", &["emb16", "input_ids"], &["h16"]),
                node_attrs("Cast", &["h16"], &["last_hidden_state"], &[("to", i64::from(FLOAT))]),
            ],
            tensor_f16("emb16", &[vocab as i64, HIDDEN as i64], &emb),
        )
    } else {
        (
            vec![node("Gather", &["emb", "input_ids"], &["last_hidden_state"])],
            tensor_f32("emb", &[vocab as i64, HIDDEN as i64], &emb),
        )
    };
    model(
        &nodes,
        &[init],
        &[value_info("input_ids", INT64, &[(-1, "N"), (l, "")])],
        &[value_info("last_hidden_state", FLOAT, &[(-1, "N"), (l, ""), (HIDDEN as i64, "")])],
    )
}

/// sdxl's text graph: input_ids, input_ids_2 → last_hidden_state [N, L, 2D]
/// (two tables, concatenated), text_embeds [N, POOLED] (the mean over L of
/// the second table's first dims).
fn text_encoder_xl(vocab: usize) -> Vec<u8> {
    let table = |k: usize| -> Vec<f32> {
        (0..vocab * HIDDEN)
            .map(|i| {
                let (t, d) = (i / HIDDEN, i % HIDDEN);
                (((t * (37 + k) + d * 11 + k * 5) % 17) as f32 / 8.0 - 1.0) * 0.5
            })
            .collect()
    };
    let l = MAX_LENGTH as i64;
    model(
        &[
            node("Gather", &["emb", "input_ids"], &["h1"]),
            node("Gather", &["emb2", "input_ids_2"], &["h2"]),
            node_attrs("Concat", &["h1", "h2"], &["last_hidden_state"], &[("axis", 2)]),
            node("ReduceSum", &["h2", "ax1"], &["s2"]),
            node("Slice", &["s2", "p0", "pn", "ax2"], &["s2p"]),
            node("Reshape", &["s2p", "shape_np"], &["s2r"]),
            node("Mul", &["s2r", "inv_l"], &["text_embeds"]),
        ],
        &[
            tensor_f32("emb", &[vocab as i64, HIDDEN as i64], &table(0)),
            tensor_f32("emb2", &[vocab as i64, HIDDEN as i64], &table(1)),
            tensor_i64("p0", &[1], &[0]),
            tensor_i64("pn", &[1], &[POOLED as i64]),
            tensor_i64("ax1", &[1], &[1]),
            tensor_i64("ax2", &[1], &[2]),
            tensor_i64("shape_np", &[2], &[-1, POOLED as i64]),
            tensor_f32("inv_l", &[], &[1.0 / MAX_LENGTH as f32]),
        ],
        &[
            value_info("input_ids", INT64, &[(-1, "N"), (l, "")]),
            value_info("input_ids_2", INT64, &[(-1, "N"), (l, "")]),
        ],
        &[
            value_info("last_hidden_state", FLOAT, &[(-1, "N"), (l, ""), (2 * HIDDEN as i64, "")]),
            value_info("text_embeds", FLOAT, &[(-1, "N"), (POOLED as i64, "")]),
        ],
    )
}

/// The exact denoiser of the flat latent c(prompt).
fn unet(s: &SyntheticSd) -> Vec<u8> {
    let sched = NoiseSchedule::from_manifest(&schedule());
    let sa: Vec<f32> = sched.alphas_cumprod.iter().map(|a| a.sqrt() as f32).collect();
    let s1: Vec<f32> = sched.alphas_cumprod.iter().map(|a| (1.0 - a).sqrt() as f32).collect();
    let c_in: i64 = if s.inpainting { 9 } else { 4 };
    let mut nodes = vec![
        node("Slice", &["sample", "s0", "s4", "ax1"], &["x"]),
        node("Gather", &["sa", "timestep"], &["sat"]),
        node("Gather", &["s1", "timestep"], &["s1t"]),
        node("Reshape", &["sat", "shape_n111"], &["sat4"]),
        node("Reshape", &["s1t", "shape_n111"], &["s1t4"]),
        node("ReduceSum", &["encoder_hidden_states", "ax1"], &["hsum"]),
        node("Slice", &["hsum", "s0", "s4", "ax2"], &["h4"]),
        node("Reshape", &["h4", "shape_n411"], &["h4r"]),
        node("Mul", &["h4r", "inv_l"], &["c"]),
    ];
    let hidden = if s.xl.is_some() { 2 * HIDDEN } else { HIDDEN } as i64;
    if s.xl.is_some() {
        // c also moves with the pooled embedding; time_ids are read (times 0) so they must be fed.
        nodes.pop();
        nodes.extend([
            node("Mul", &["h4r", "inv_l"], &["c_text"]),
            node("Reshape", &["text_embeds", "shape_n411"], &["pooled4"]),
            node("Add", &["c_text", "pooled4"], &["c_sum"]),
            node("Mul", &["time_ids", "zero"], &["t0"]),
            node("ReduceSum", &["t0", "ax1"], &["t0s"]),
            node("Reshape", &["t0s", "shape_n111"], &["t04"]),
            node("Add", &["c_sum", "t04"], &["c"]),
        ]);
    }
    if s.prediction == "v_prediction" {
        // v = (√ᾱ·x − c)/√(1−ᾱ)
        nodes.push(node("Mul", &["x", "sat4"], &["sx"]));
        nodes.push(node("Sub", &["sx", "c"], &["diff"]));
    } else {
        // ε = (x − √ᾱ·c)/√(1−ᾱ)
        nodes.push(node("Mul", &["sat4", "c"], &["mean"]));
        nodes.push(node("Sub", &["x", "mean"], &["diff"]));
    }
    nodes.push(node("Div", &["diff", "s1t4"], &["raw"]));
    nodes.push(node("Mul", &["raw", "gain"], &["noise_pred"]));
    let l = MAX_LENGTH as i64;
    let mut unet_inputs = vec![
        value_info("sample", FLOAT, &[(-1, "N"), (c_in, ""), (-1, "h"), (-1, "w")]),
        value_info("timestep", INT64, &[(-1, "N")]),
        value_info("encoder_hidden_states", FLOAT, &[(-1, "N"), (l, ""), (hidden, "")]),
    ];
    if s.xl.is_some() {
        unet_inputs.push(value_info("text_embeds", FLOAT, &[(-1, "N"), (POOLED as i64, "")]));
        unet_inputs.push(value_info("time_ids", FLOAT, &[(-1, "N"), (6, "")]));
    }
    model(
        &nodes,
        &[
            tensor_f32("sa", &[1000], &sa),
            tensor_f32("s1", &[1000], &s1),
            tensor_f32("gain", &[], &[s.gain]),
            tensor_f32("inv_l", &[], &[1.0 / MAX_LENGTH as f32]),
            tensor_i64("s0", &[1], &[0]),
            tensor_i64("s4", &[1], &[4]),
            tensor_i64("ax1", &[1], &[1]),
            tensor_i64("ax2", &[1], &[2]),
            tensor_i64("shape_n111", &[4], &[-1, 1, 1, 1]),
            tensor_i64("shape_n411", &[4], &[-1, 4, 1, 1]),
            tensor_f32("zero", &[], &[0.0]),
        ],
        &unet_inputs,
        &[value_info("noise_pred", FLOAT, &[(-1, "N"), (4, ""), (-1, "h"), (-1, "w")])],
    )
}

/// RGB → latent [R, G, B, luma], the mean of each 8×8 cell.
fn vae_encoder() -> Vec<u8> {
    let mut w = vec![0.0f32; 4 * 3 * 64];
    let mix = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.3, 0.6, 0.1]];
    for (o, row) in mix.iter().enumerate() {
        for (i, v) in row.iter().enumerate() {
            for k in 0..64 {
                w[(o * 3 + i) * 64 + k] = v / 64.0;
            }
        }
    }
    model(
        &[node_ints(
            "Conv",
            &["image", "w"],
            &["latent"],
            &[("kernel_shape", &[8, 8]), ("strides", &[8, 8])],
        )],
        &[tensor_f32("w", &[4, 3, 8, 8], &w)],
        &[value_info("image", FLOAT, &[(-1, "N"), (3, ""), (-1, "H"), (-1, "W")])],
        &[value_info("latent", FLOAT, &[(-1, "N"), (4, ""), (-1, "h"), (-1, "w")])],
    )
}

/// Latent → RGB: channels 0..3 painted over each 8×8 cell.
fn vae_decoder() -> Vec<u8> {
    let mut w = vec![0.0f32; 4 * 3 * 64];
    for c in 0..3 {
        for k in 0..64 {
            w[(c * 3 + c) * 64 + k] = 1.0;
        }
    }
    model(
        &[node_ints(
            "ConvTranspose",
            &["latent", "w"],
            &["image"],
            &[("kernel_shape", &[8, 8]), ("strides", &[8, 8])],
        )],
        &[tensor_f32("w", &[4, 3, 8, 8], &w)],
        &[value_info("latent", FLOAT, &[(-1, "N"), (4, ""), (-1, "h"), (-1, "w")])],
        &[value_info("image", FLOAT, &[(-1, "N"), (3, ""), (-1, "H"), (-1, "W")])],
    )
}

/// Writes a complete, valid sd bundle into `<library>/<name>` and returns its folder.
pub fn write_sd_bundle(library: &Path, s: &SyntheticSd) -> std::io::Result<PathBuf> {
    let dir = library.join(&s.name);
    std::fs::create_dir_all(&dir)?;
    let (tok, vocab) = tokenizer_json();
    std::fs::write(dir.join("tokenizer.json"), tok)?;
    let text_graph = match s.xl {
        Some(_) => text_encoder_xl(vocab.len()),
        None => text_encoder(vocab.len(), s.fp16),
    };
    std::fs::write(dir.join("text_encoder.onnx"), text_graph)?;
    std::fs::write(dir.join("unet.onnx"), unet(s))?;
    std::fs::write(dir.join("vae_encoder.onnx"), vae_encoder())?;
    std::fs::write(dir.join("vae_decoder.onnx"), vae_decoder())?;
    let mut files =
        vec!["tokenizer.json", "text_encoder.onnx", "unet.onnx", "vae_encoder.onnx", "vae_decoder.onnx"];
    if s.stage == Stage::Subject {
        image::RgbaImage::from_fn(48, 64, |x, y| {
            let (dx, dy) = ((x as f32 - 23.5) / 22.0, (y as f32 - 31.5) / 30.0);
            image::Rgba([230, 50, 30, if dx * dx + dy * dy <= 1.0 { 255 } else { 0 }])
        })
        .save(dir.join("subject.png"))
        .map_err(std::io::Error::other)?;
        files.push("subject.png");
    }
    let entries = crate::testkit::file_entries(&dir, &files)?;
    let id = |w: &str| vocab.iter().find(|(k, _)| k == &format!("{w}</w>")).map(|(_, i)| *i).unwrap_or(0);
    let eos = vocab.len() as u32 - 1;
    let src = hex(&[7u8; 32]);
    let mut concepts = vec![
        json!({"id": id("zwx"), "identifier": "zwx", "name": "scene", "role": "scene", "stage": 1,
        "source_sha256": src, "source_size": [640, 427], "class_word": "scene", "prompt": "a photo of zwx scene"}),
    ];
    if s.stage == Stage::Subject {
        concepts.push(json!({"id": id("qbz"), "identifier": "qbz", "name": s.name, "role": "subject", "stage": 2,
            "source_sha256": src, "source_size": [48, 64], "class_word": "dog", "prompt": "a photo of qbz dog"}));
    }
    let spec = |n: &str, d: &str, shape: serde_json::Value| json!({"name": n, "dtype": d, "shape": shape});
    let graph = |file: &str, ins: Vec<serde_json::Value>, outs: Vec<serde_json::Value>| json!({"file": file, "inputs": ins, "outputs": outs});
    let c_in = if s.inpainting { 9 } else { 4 };
    let mut sched = schedule();
    sched.prediction_type = s.prediction.clone();
    let mut m = json!({
        "format": "pie-bundle", "format_version": 1, "name": s.name, "stage": s.stage, "backbone": "sd",
        "parent": if s.stage == Stage::Subject { json!({"name": "scene", "manifest_sha256": src}) } else { json!(null) },
        "model": {"resolution": 64, "size_multiple": 16, "min_size": 16, "channels": 3, "value_range": [-1, 1],
                  "latent_channels": 4, "vae_scale_factor": 8, "scaling_factor": 1.0, "unet_in_channels": c_in,
                  "precision": if s.fp16 { "float16" } else { "float32" }, "base": {"name": "toy-sd", "path": "/nonexistent/toy-sd"}},
        "schedule": sched,
        "tokens": {"null": eos, "vocab_size": vocab.len(), "concepts": concepts},
        "graphs": {
            "text_encoder": graph("text_encoder.onnx", vec![spec("input_ids", "int64", json!(["N", MAX_LENGTH]))],
                                  vec![spec("last_hidden_state", "float32", json!(["N", MAX_LENGTH, HIDDEN]))]),
            "unet": graph("unet.onnx", vec![spec("sample", "float32", json!(["N", c_in, "h", "w"])), spec("timestep", "int64", json!(["N"])),
                                            spec("encoder_hidden_states", "float32", json!(["N", MAX_LENGTH, HIDDEN]))],
                          vec![spec("noise_pred", "float32", json!(["N", 4, "h", "w"]))]),
            "vae_encoder": graph("vae_encoder.onnx", vec![spec("image", "float32", json!(["N", 3, "H", "W"]))],
                                 vec![spec("latent", "float32", json!(["N", 4, "h", "w"]))]),
            "vae_decoder": graph("vae_decoder.onnx", vec![spec("latent", "float32", json!(["N", 4, "h", "w"]))],
                                 vec![spec("image", "float32", json!(["N", 3, "H", "W"]))]),
        },
        "text": {"tokenizer": "tokenizer.json", "max_length": MAX_LENGTH, "bos_id": eos - 1, "eos_id": eos, "pad_id": eos,
                 "hidden_size": HIDDEN, "prompts": {"add": if s.stage == Stage::Subject { "a photo of qbz dog in zwx scene" } else { "a photo of zwx scene" },
                 "scene": "a photo of zwx scene", "negative": ""}},
        "files": entries,
        "training": {"synthetic": true},
        "trainer": {"name": "pie-testkit", "version": env!("CARGO_PKG_VERSION")},
        "created": "2026-01-01T00:00:00Z",
    });
    if s.stage == Stage::Subject {
        m["subject"] = json!({"file": "subject.png", "has_mask": true});
    }
    if let Some(zero_negative) = s.xl {
        let hidden = 2 * HIDDEN;
        m["backbone"] = json!("sdxl");
        m["model"]["conditioning"] = json!({"pooled_size": POOLED, "time_ids": crate::sdxl::TIME_IDS,
                                            "pad_id_2": 0, "zero_negative": zero_negative});
        m["text"]["hidden_size"] = json!(hidden);
        m["graphs"]["text_encoder"] = graph(
            "text_encoder.onnx",
            vec![
                spec("input_ids", "int64", json!(["N", MAX_LENGTH])),
                spec("input_ids_2", "int64", json!(["N", MAX_LENGTH])),
            ],
            vec![
                spec("last_hidden_state", "float32", json!(["N", MAX_LENGTH, hidden])),
                spec("text_embeds", "float32", json!(["N", POOLED])),
            ],
        );
        m["graphs"]["unet"] = graph(
            "unet.onnx",
            vec![
                spec("sample", "float32", json!(["N", c_in, "h", "w"])),
                spec("timestep", "int64", json!(["N"])),
                spec("encoder_hidden_states", "float32", json!(["N", MAX_LENGTH, hidden])),
                spec("text_embeds", "float32", json!(["N", POOLED])),
                spec("time_ids", "float32", json!(["N", 6])),
            ],
            vec![spec("noise_pred", "float32", json!(["N", 4, "h", "w"]))],
        );
    }
    if s.optimized {
        m["model"]["optimized"] =
            json!({"by": "onnxruntime-transformers", "version": "1.31.1", "graphs": ["unet", "vae_decoder"]});
    }
    std::fs::write(
        dir.join("bundle.json"),
        serde_json::to_string_pretty(&m).map_err(std::io::Error::other)?,
    )?;
    Ok(dir)
}
