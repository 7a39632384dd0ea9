//! `bundle.json`, format_version 1, as typed Rust (see schema/bundle.schema.json).
//! Unknown fields are refused where the schema says `additionalProperties: false`.

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "pie-bundle";
pub const FORMAT_VERSION: u64 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawManifest")]
pub struct Manifest {
    pub format: String,
    pub format_version: u64,
    pub name: String,
    pub stage: u8,
    pub backbone: String,
    pub parent: Option<Parent>,
    pub model: Model,
    pub schedule: Schedule,
    pub tokens: Tokens,
    pub graphs: Graphs,
    /// sd only: how prompts become the text encoder's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    pub files: Vec<FileEntry>,
    pub training: serde_json::Map<String, serde_json::Value>,
    pub trainer: Trainer,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// The backbones this pie runs.
pub const PIXEL_UNET: &str = "pixel-unet";
pub const SD: &str = "sd";

/// `bundle.json` as written, before `model` and `graphs` are read by the
/// backbone they belong to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: String,
    format_version: u64,
    name: String,
    stage: u8,
    backbone: String,
    parent: Option<Parent>,
    model: serde_json::Value,
    schedule: Schedule,
    tokens: Tokens,
    graphs: serde_json::Value,
    #[serde(default)]
    text: Option<Text>,
    #[serde(default)]
    subject: Option<Subject>,
    files: Vec<FileEntry>,
    training: serde_json::Map<String, serde_json::Value>,
    trainer: Trainer,
    created: String,
    #[serde(default)]
    preview: Option<String>,
}

impl TryFrom<RawManifest> for Manifest {
    type Error = String;
    fn try_from(r: RawManifest) -> Result<Manifest, String> {
        let (model, graphs) = match r.backbone.as_str() {
            PIXEL_UNET => {
                if r.text.is_some() {
                    return Err("a pixel-unet bundle has no text section".into());
                }
                (
                    Model::Pixel(serde_json::from_value(r.model).map_err(|e| format!("model: {e}"))?),
                    Graphs::Pixel(serde_json::from_value(r.graphs).map_err(|e| format!("graphs: {e}"))?),
                )
            }
            SD => {
                if r.text.is_none() {
                    return Err("an sd bundle needs a text section (tokenizer, max_length, prompts)".into());
                }
                (
                    Model::Sd(serde_json::from_value(r.model).map_err(|e| format!("model: {e}"))?),
                    Graphs::Sd(serde_json::from_value(r.graphs).map_err(|e| format!("graphs: {e}"))?),
                )
            }
            other => {
                return Err(format!(
                    "backbone {other:?} is not supported by this pie (only \"pixel-unet\" and \"sd\")"
                ))
            }
        };
        Ok(Manifest {
            format: r.format,
            format_version: r.format_version,
            name: r.name,
            stage: r.stage,
            backbone: r.backbone,
            parent: r.parent,
            model,
            schedule: r.schedule,
            tokens: r.tokens,
            graphs,
            text: r.text,
            subject: r.subject,
            files: r.files,
            training: r.training,
            trainer: r.trainer,
            created: r.created,
            preview: r.preview,
        })
    }
}

impl Manifest {
    pub fn is_sd(&self) -> bool {
        matches!(self.model, Model::Sd(_))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    pub name: String,
    pub manifest_sha256: String,
}

/// `model`, by backbone.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Model {
    Pixel(PixelModel),
    Sd(SdModel),
}

impl Model {
    /// The engine module that runs this branch.
    pub(crate) fn backbone(&self) -> &'static dyn crate::add::Backbone {
        match self {
            Model::Pixel(_) => &crate::pixel::PixelUnet,
            Model::Sd(_) => &crate::sd::pipeline::Sd,
        }
    }

    /// The native image side in pixels.
    pub fn resolution(&self) -> u32 {
        match self {
            Model::Pixel(m) => m.resolution,
            Model::Sd(m) => m.resolution,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdModel {
    pub resolution: u32,
    pub size_multiple: u32,
    pub min_size: u32,
    pub channels: u32,
    pub value_range: [i32; 2],
    pub latent_channels: u32,
    pub vae_scale_factor: u32,
    pub scaling_factor: f64,
    pub unet_in_channels: u32,
    /// `float32` or `float16` (the weights; graph I/O is float32 either way).
    pub precision: String,
    pub base: SdBase,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SdBase {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub tokenizer: String,
    pub max_length: u32,
    pub bos_id: i64,
    pub eos_id: i64,
    pub pad_id: i64,
    pub hidden_size: u32,
    pub prompts: Prompts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompts {
    pub add: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    pub negative: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelModel {
    pub resolution: u32,
    pub size_multiple: u32,
    pub min_size: u32,
    pub channels: u32,
    pub value_range: [i32; 2],
    pub base_channels: u32,
    pub scene_short_side: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(rename = "type")]
    pub kind: String,
    pub num_train_timesteps: u32,
    pub beta_schedule: String,
    pub beta_start: f64,
    pub beta_end: f64,
    pub prediction_type: String,
    /// sd: the base scheduler's steps_offset (diffusers); 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_offset: Option<u32>,
    /// sd: the base scheduler's timestep_spacing when its config names one;
    /// absent: each scheduler's own default (DDIM leading, DPM-Solver linspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestep_spacing: Option<Spacing>,
    /// sd: the base scheduler's set_alpha_to_one (where DDIM's last step lands); absent: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_alpha_to_one: Option<bool>,
}

/// How the inference timesteps are spread over the training ones (diffusers'
/// `timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    pub null: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<i64>,
    pub concepts: Vec<Concept>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concept {
    pub id: i64,
    pub identifier: String,
    pub name: String,
    pub role: String,
    pub stage: u8,
    pub source_sha256: String,
    pub source_size: [u32; 2],
    /// sd: the class noun trained with the identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_word: Option<String>,
    /// sd: the exact prompt the concept was trained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// `graphs`, by backbone.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // one per bundle
pub enum Graphs {
    Pixel(PixelGraphs),
    Sd(SdGraphs),
}

impl Graphs {
    /// Every graph, with its key in `graphs`.
    pub fn all(&self) -> Vec<(&'static str, &Graph)> {
        match self {
            Graphs::Pixel(g) => vec![("denoiser", &g.denoiser)],
            Graphs::Sd(g) => vec![
                ("text_encoder", &g.text_encoder),
                ("unet", &g.unet),
                ("vae_encoder", &g.vae_encoder),
                ("vae_decoder", &g.vae_decoder),
            ],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelGraphs {
    pub denoiser: Graph,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdGraphs {
    pub text_encoder: Graph,
    pub unet: Graph,
    pub vae_encoder: Graph,
    pub vae_decoder: Graph,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    pub file: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<DimSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DimSpec {
    Fixed(i64),
    Named(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub file: String,
    pub has_mask: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trainer {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `^[a-z0-9][a-z0-9_-]{0,63}$`: also what keeps a concept name a plain folder name.
pub fn is_concept_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// `^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`: a plain file name, so no `/`, no
/// leading dot and therefore no `..`.
pub fn is_relpath(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

pub fn is_identifier(s: &str) -> bool {
    (3..=8).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_safety() {
        for ok in ["denoiser.onnx", "subject.png", "a", "_x.data", "W-1.bin"] {
            assert!(is_relpath(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            ".hidden",
            "a\\b",
            "a b",
            "x\0",
            "é.onnx",
            &"a".repeat(129),
        ] {
            assert!(!is_relpath(bad), "{bad:?}");
        }
        for ok in ["kitchen", "my-dog_2", "0"] {
            assert!(is_concept_name(ok));
        }
        for bad in ["", "-x", "_x", "Dog", "a/b", "..", ".x", "a.b", &"a".repeat(65)] {
            assert!(!is_concept_name(bad), "{bad:?}");
        }
        assert!(is_sha256(&"0a".repeat(32)));
        assert!(!is_sha256(&"0A".repeat(32)));
        assert!(is_identifier("zwx") && !is_identifier("zw") && !is_identifier("zwx1"));
    }
}
