//! `bundle.json`, format_version 1, as typed Rust (see schema/bundle.schema.json).
//! Unknown fields are refused where the schema says `additionalProperties: false`.

use serde::{Deserialize, Serialize};

pub use crate::backbone::{Backbone, Graphs, Model};

pub const FORMAT: &str = "pie-bundle";
pub const FORMAT_VERSION: u64 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawManifest")]
pub struct Manifest {
    pub format: String,
    pub format_version: u64,
    pub name: String,
    pub stage: Stage,
    pub backbone: Backbone,
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

/// `bundle.json` as written, before `model` and `graphs` are read by the
/// backbone they belong to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: String,
    format_version: u64,
    name: String,
    stage: Stage,
    backbone: Backbone,
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
        let (model, graphs) = r.backbone.parse_branch(r.model, r.graphs, r.text.as_ref())?;
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

/// What a concept is: `stage` 1 in bundle.json (Stage I) or 2 (Stage II).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Stage {
    Scene,
    Subject,
}

impl Stage {
    /// Its number on disk and in the trainer's progress stream.
    pub fn number(self) -> u8 {
        match self {
            Stage::Scene => 1,
            Stage::Subject => 2,
        }
    }

    /// The role of the concept a bundle of this stage adds.
    pub fn role(self) -> Role {
        match self {
            Stage::Scene => Role::Scene,
            Stage::Subject => Role::Subject,
        }
    }

    /// "scene" or "subject", as listings say it.
    pub fn noun(self) -> &'static str {
        self.role().name()
    }
}

impl TryFrom<u8> for Stage {
    type Error = String;
    fn try_from(n: u8) -> Result<Stage, String> {
        match n {
            1 => Ok(Stage::Scene),
            2 => Ok(Stage::Subject),
            n => Err(format!("stage {n} is neither 1 (scene) nor 2 (subject)")),
        }
    }
}

impl From<Stage> for u8 {
    fn from(s: Stage) -> u8 {
        s.number()
    }
}

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Scene,
    Subject,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Scene => "scene",
            Role::Subject => "subject",
        }
    }

    /// The stage in which a token of this role is bound.
    pub fn stage(self) -> Stage {
        match self {
            Role::Scene => Stage::Scene,
            Role::Subject => Stage::Subject,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The weights of an exported graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Float32,
    Float16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Float32 => "float32",
            Precision::Float16 => "float16",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    pub name: String,
    pub manifest_sha256: String,
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
    /// The weights' (graph I/O is float32 either way).
    pub precision: Precision,
    pub base: SdBase,
    /// The graphs were rewritten after export (fused for CUDA); `None`: as exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimized: Option<Optimized>,
    /// sdxl only: the UNet's added conditioning; `None` in an sd bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditioning: Option<Conditioning>,
}

/// `model.conditioning` of an sdxl bundle (schema/README.md, "Backbone sdxl").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditioning {
    /// P: the width of `text_embeds`.
    pub pooled_size: u32,
    /// What `time_ids` hold, by name, in order.
    pub time_ids: Vec<String>,
    /// What `input_ids_2` are padded with.
    pub pad_id_2: i64,
    /// An empty negative prompt is all zeros rather than the encoding of "".
    pub zero_negative: bool,
}

/// `model.optimized` of an sd bundle: what rewrote which graphs after export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Optimized {
    pub by: Optimizer,
    /// The optimizer's version, for people.
    pub version: String,
    pub graphs: Vec<SdGraph>,
}

/// A graph rewriter the trainer may run on an sd bundle's graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Optimizer {
    /// ONNX Runtime's transformer optimizer: fused `com.microsoft` operators
    /// (GroupNorm, NhwcConv, BiasSplitGelu, ...) that ONNX Runtime has for CUDA only.
    #[serde(rename = "onnxruntime-transformers")]
    OrtTransformers,
}

impl Optimizer {
    /// Its name in bundle.json.
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::OrtTransformers => "onnxruntime-transformers",
        }
    }

    /// Whether the graphs it writes run on CUDA only.
    pub fn cuda_only(self) -> bool {
        match self {
            Optimizer::OrtTransformers => true,
        }
    }
}

impl std::fmt::Display for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A graph of an sd bundle, by its key in `graphs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdGraph {
    TextEncoder,
    Unet,
    VaeEncoder,
    VaeDecoder,
}

impl SdGraph {
    pub fn key(self) -> &'static str {
        match self {
            SdGraph::TextEncoder => "text_encoder",
            SdGraph::Unet => "unet",
            SdGraph::VaeEncoder => "vae_encoder",
            SdGraph::VaeDecoder => "vae_decoder",
        }
    }
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
    pub role: Role,
    pub stage: Stage,
    pub source_sha256: String,
    pub source_size: [u32; 2],
    /// sd: the class noun trained with the identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_word: Option<String>,
    /// sd: the exact prompt the concept was trained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelGraphs {
    pub denoiser: Graph,
    /// The same denoiser with int8 convolutions, where the trainer made one
    /// within its tolerance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denoiser_int8: Option<QuantizedGraph>,
}

/// A graph and how far its quantization moved it from the fp32 graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "QuantizedGraphFields", into = "QuantizedGraphFields")]
pub struct QuantizedGraph {
    pub graph: Graph,
    pub quantization: Quantization,
}

/// bundle.json's spelling of a [`QuantizedGraph`]: a graph's fields and `quantization`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuantizedGraphFields {
    file: String,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    quantization: Quantization,
}

impl From<QuantizedGraphFields> for QuantizedGraph {
    fn from(f: QuantizedGraphFields) -> Self {
        QuantizedGraph {
            graph: Graph { file: f.file, inputs: f.inputs, outputs: f.outputs },
            quantization: f.quantization,
        }
    }
}

impl From<QuantizedGraph> for QuantizedGraphFields {
    fn from(q: QuantizedGraph) -> Self {
        let Graph { file, inputs, outputs } = q.graph;
        QuantizedGraphFields { file, inputs, outputs, quantization: q.quantization }
    }
}

/// What the trainer measured of a quantized graph (its other notes are kept as they are).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quantization {
    /// `qdq`: QuantizeLinear/DequantizeLinear pairs around the quantized operators.
    pub format: String,
    /// RMS of (ε int8 − ε fp32) over the RMS of ε fp32, on inputs like Add's.
    pub rel_rms_diff: f64,
    pub max_abs_diff: f64,
    /// The largest `rel_rms_diff` the trainer accepted.
    pub tolerance: f64,
    #[serde(flatten)]
    pub notes: serde_json::Map<String, serde_json::Value>,
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
