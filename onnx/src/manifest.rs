//! `bundle.json`, format_version 1, as typed Rust (see schema/bundle.schema.json).
//! Unknown fields are refused where the schema says `additionalProperties: false`.

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "pie-bundle";
pub const FORMAT_VERSION: u64 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    pub files: Vec<FileEntry>,
    pub training: serde_json::Map<String, serde_json::Value>,
    pub trainer: Trainer,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    pub name: String,
    pub manifest_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graphs {
    pub denoiser: Graph,
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
        for bad in ["", ".", "..", "../x", "a/b", "/etc/passwd", ".hidden", "a\\b", "a b", "x\0", "é.onnx", &"a".repeat(129)] {
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
