//! Loading a concept bundle and validating all of it before anything runs:
//! a bundle may come from someone else, so nothing in it is trusted.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::backbone::BackboneParts;
use crate::manifest::{self, DimSpec, Manifest, Role, Stage, TensorSpec};
use crate::onnxfile::{self, Dim};
use crate::{Error, Result};

/// A manifest larger than this is not a manifest.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// A fully validated bundle: what every backbone's has, and its backbone's part.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// sha256 of `bundle.json`, what a Stage II bundle records of its parent.
    pub manifest_sha256: String,
    pub scene_token: i64,
    /// Stage II only.
    pub subject_token: Option<i64>,
    pub null_token: i64,
    /// Stage II only: the subject cut-out, alpha = its mask.
    pub subject: Option<image::RgbaImage>,
    /// What its backbone loaded beyond the manifest.
    pub parts: BackboneParts,
}

impl Bundle {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// What its backbone's side of it is, for `pie concepts show`: one line each.
    pub fn describe(&self) -> Vec<String> {
        self.manifest.backbone.engine().describe(self)
    }

    /// The file of graph `key` (`denoiser`; `text_encoder`, `unet`, `vae_encoder`, `vae_decoder`).
    pub fn graph_path(&self, key: &str) -> Option<PathBuf> {
        self.manifest.graphs.all().into_iter().find(|(k, _)| *k == key).map(|(_, g)| self.dir.join(&g.file))
    }

    /// Loads and validates the bundle in `dir`: manifest, every file and its
    /// sha256, the denoiser's signature, tokens and path safety.
    pub fn load(dir: &Path) -> Result<Bundle> {
        let label = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let fail =
            |file: &str, what: String| Error::Bundle { bundle: label.clone(), file: file.to_string(), what };

        let mpath = dir.join("bundle.json");
        let meta = std::fs::symlink_metadata(&mpath).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                if dir.is_dir() {
                    fail("bundle.json", "missing: this folder is not a concept bundle".into())
                } else {
                    Error::bad(format!("no concept bundle at {}", dir.display()))
                }
            } else {
                fail("bundle.json", e.to_string())
            }
        })?;
        if !meta.is_file() {
            return Err(fail("bundle.json", "is not a regular file".into()));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(fail("bundle.json", format!("too large ({} bytes)", meta.len())));
        }
        let raw = crate::safefs::read_bounded(&mpath, MAX_MANIFEST_BYTES)
            .map_err(|e| fail("bundle.json", e.to_string()))?;
        let manifest_sha256 = hex(&Sha256::digest(&raw));
        let value: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| fail("bundle.json", format!("not valid JSON: {e}")))?;
        // Check the version before the shape, so a newer bundle says so instead of "unknown field".
        match value.get("format").and_then(|v| v.as_str()) {
            Some(manifest::FORMAT) => {}
            other => {
                return Err(fail(
                    "bundle.json",
                    format!("format is {other:?}, expected \"{}\"", manifest::FORMAT),
                ))
            }
        }
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(manifest::FORMAT_VERSION) => {}
            Some(v) => {
                return Err(fail(
                    "bundle.json",
                    format!(
                        "unknown format_version {v}: this pie reads version {}; update pie (or retrain the concept with this pie's trainer)",
                        manifest::FORMAT_VERSION
                    ),
                ))
            }
            None => return Err(fail("bundle.json", "format_version missing or not an integer".into())),
        }
        let m: Manifest = serde_json::from_value(value)
            .map_err(|e| fail("bundle.json", format!("does not match format_version 1: {e}")))?;

        check_manifest(&m).map_err(|w| fail("bundle.json", w))?;

        // Every listed file: a regular file inside the folder, right size, right hash.
        for f in &m.files {
            let p = dir.join(&f.path);
            let md = std::fs::symlink_metadata(&p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => fail(&f.path, "missing (listed in bundle.json)".into()),
                _ => fail(&f.path, e.to_string()),
            })?;
            if !md.is_file() {
                return Err(fail(&f.path, "is not a regular file (links are refused)".into()));
            }
            if md.len() != f.bytes {
                return Err(fail(&f.path, format!("is {} bytes, bundle.json says {}", md.len(), f.bytes)));
            }
            let sum = sha256_file(&p).map_err(|e| fail(&f.path, e.to_string()))?;
            if sum != f.sha256 {
                return Err(fail(
                    &f.path,
                    format!(
                        "sha256 is {sum}, bundle.json says {}: the file is corrupt or was changed",
                        f.sha256
                    ),
                ));
            }
        }

        let listed: HashSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        for (_, g) in m.graphs.all() {
            let bytes = std::fs::read(dir.join(&g.file)).map_err(|e| fail(&g.file, e.to_string()))?;
            let info = onnxfile::inspect(&bytes)
                .map_err(|e| fail(&g.file, format!("not a readable ONNX model: {e}")))?;
            for loc in &info.external_locations {
                if !manifest::is_relpath(loc) || !listed.contains(loc.as_str()) {
                    return Err(fail(
                        &g.file,
                        format!("refers to external data {loc:?} that is not a file of this bundle listed in bundle.json"),
                    ));
                }
            }
            check_signature(&g.inputs, &info.inputs)
                .map_err(|w| fail(&g.file, format!("graph inputs: {w}")))?;
            check_signature(&g.outputs, &info.outputs)
                .map_err(|w| fail(&g.file, format!("graph outputs: {w}")))?;
        }
        let parts = BackboneParts::load(dir, &m).map_err(|(file, what)| fail(&file, what))?;

        let subject = match &m.subject {
            None => None,
            Some(s) => {
                let img = crate::decode_image(&dir.join(&s.file)).map_err(|e| match e {
                    crate::ImageFailure::Io(e) => fail(&s.file, e.to_string()),
                    crate::ImageFailure::Refused(why) => fail(&s.file, why),
                })?;
                let img = img.to_rgba8();
                if !img.pixels().any(|p| p.0[3] > 0) {
                    return Err(fail(&s.file, "the subject's mask is empty (alpha is 0 everywhere)".into()));
                }
                Some(img)
            }
        };

        let tok = |role: Role| m.tokens.concepts.iter().find(|c| c.role == role).map(|c| c.id);
        let scene_token = tok(Role::Scene).ok_or_else(|| fail("bundle.json", "no scene token".into()))?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            subject_token: tok(Role::Subject),
            null_token: m.tokens.null,
            scene_token,
            subject,
            parts,
            manifest_sha256,
            manifest: m,
        })
    }
}

/// The rules the JSON schema cannot state, plus its patterns.
fn check_manifest(m: &Manifest) -> std::result::Result<(), String> {
    if !manifest::is_concept_name(&m.name) {
        return Err(format!("name {:?} is not a valid concept name (a-z, 0-9, '-', '_')", m.name));
    }
    match (m.stage, &m.parent) {
        (Stage::Scene, None) => {}
        (Stage::Subject, Some(p)) => {
            if !manifest::is_concept_name(&p.name) || !manifest::is_sha256(&p.manifest_sha256) {
                return Err("parent has a malformed name or sha256".into());
            }
        }
        (Stage::Scene, Some(_)) => return Err("a stage 1 (scene) bundle must not have a parent".into()),
        (Stage::Subject, None) => return Err("a stage 2 (subject) bundle must name its parent scene".into()),
    }
    let backbone = m.backbone.engine();
    backbone.check_model(m)?;
    let s = &m.schedule;
    if s.steps_offset.is_some_and(|o| o >= s.num_train_timesteps) {
        return Err("schedule.steps_offset must be below num_train_timesteps".into());
    }
    if !(s.beta_schedule == "linear" || s.beta_schedule == "scaled_linear") {
        return Err(format!("unknown beta_schedule {:?}", s.beta_schedule));
    }
    let betas_ok = s.beta_start > 0.0 && s.beta_start <= s.beta_end && s.beta_end < 1.0;
    if !(2..=100_000).contains(&s.num_train_timesteps) || !betas_ok {
        return Err("schedule betas or num_train_timesteps are out of range".into());
    }

    let t = &m.tokens;
    if t.concepts.is_empty() || t.concepts.len() > 2 {
        return Err("tokens.concepts must list 1 or 2 concepts".into());
    }
    let mut ids = HashSet::new();
    ids.insert(t.null);
    for c in &t.concepts {
        if c.id < 0 || !ids.insert(c.id) {
            return Err(format!("token id {} is negative or used twice (null is {})", c.id, t.null));
        }
        if let Some(v) = t.vocab_size {
            if c.id >= v || t.null >= v {
                return Err(format!("token id {} is outside vocab_size {v}", c.id.max(t.null)));
            }
        }
        if !manifest::is_identifier(&c.identifier)
            || !manifest::is_concept_name(&c.name)
            || !manifest::is_sha256(&c.source_sha256)
        {
            return Err(format!("token {}: malformed identifier, name or source_sha256", c.id));
        }
        if c.role.stage() != c.stage {
            return Err(format!(
                "token {}: role {:?} cannot be bound in stage {}",
                c.id,
                c.role.name(),
                c.stage.number()
            ));
        }
    }
    let count = |r: Role| t.concepts.iter().filter(|c| c.role == r).count();
    let want_subjects = usize::from(m.stage == Stage::Subject);
    if count(Role::Scene) != 1 || count(Role::Subject) != want_subjects {
        return Err(format!(
            "a stage {} bundle needs one scene token{}",
            m.stage.number(),
            match m.stage {
                Stage::Subject => " and one subject token",
                Stage::Scene => " and no subject token",
            }
        ));
    }
    if t.null < 0 {
        return Err("tokens.null is negative".into());
    }

    let mut seen = HashSet::new();
    for f in &m.files {
        if !manifest::is_relpath(&f.path) {
            return Err(format!("files: {:?} is not a plain file name inside the bundle folder", f.path));
        }
        if f.path == "bundle.json" || !seen.insert(f.path.as_str()) {
            return Err(format!("files: {:?} is listed twice or is bundle.json itself", f.path));
        }
        if !manifest::is_sha256(&f.sha256) {
            return Err(format!("files: {:?} has a malformed sha256", f.path));
        }
    }
    let keys: Vec<(String, &str)> =
        m.graphs.all().into_iter().map(|(k, g)| (format!("graphs.{k}.file"), g.file.as_str())).collect();
    let mut referenced: Vec<(&str, &str)> = keys.iter().map(|(k, f)| (k.as_str(), *f)).collect();
    if let Some(t) = &m.text {
        referenced.push(("text.tokenizer", t.tokenizer.as_str()));
    }
    if let Some(s) = &m.subject {
        referenced.push(("subject.file", s.file.as_str()));
    }
    if let Some(p) = &m.preview {
        referenced.push(("preview", p.as_str()));
    }
    for (what, p) in referenced {
        if !manifest::is_relpath(p) {
            return Err(format!("{what} {p:?} is not a plain file name inside the bundle folder"));
        }
        if !seen.contains(p) {
            return Err(format!("{what} {p:?} is not listed in files (so its sha256 is unknown)"));
        }
    }
    match (m.stage, &m.subject) {
        (Stage::Subject, None) => return Err("a stage 2 bundle needs a subject image".into()),
        (Stage::Scene, Some(_)) => return Err("a stage 1 bundle must not have a subject image".into()),
        _ => {}
    }

    backbone.check_graphs(m)
}

/// A graph's declared inputs or outputs against the contract's (name, dtype, rank);
/// e.g. pixel-unet: x[N,3,H,W] f32, t[N] i64, token[N] i64 -> eps[N,3,H,W] f32.
pub(crate) fn check_contract(
    graph: &str,
    backbone: &str,
    what: &str,
    got: &[TensorSpec],
    want: &[(&str, &str, usize)],
) -> std::result::Result<(), String> {
    let show = |v: &[TensorSpec]| {
        v.iter()
            .map(|t| format!("{} {} rank {}", t.name, t.dtype, t.shape.len()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ok = got.len() == want.len()
        && got.iter().zip(want).all(|(g, (n, d, r))| g.name == *n && g.dtype == *d && g.shape.len() == *r);
    if ok {
        Ok(())
    } else {
        let w: Vec<String> = want.iter().map(|(n, d, r)| format!("{n} {d} rank {r}")).collect();
        Err(format!("{graph}.{what} are [{}], the {backbone} contract is [{}]", show(got), w.join(", ")))
    }
}

/// The graph must have exactly the inputs/outputs the manifest declares.
fn check_signature(
    declared: &[TensorSpec],
    actual: &[onnxfile::TensorSig],
) -> std::result::Result<(), String> {
    let list = |v: &[onnxfile::TensorSig]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
    if declared.len() != actual.len() {
        return Err(format!(
            "the graph has [{}], bundle.json declares {} tensors",
            list(actual),
            declared.len()
        ));
    }
    for (d, a) in declared.iter().zip(actual) {
        let dtype_ok = onnxfile::dtype_name(a.elem_type) == d.dtype;
        let rank_ok = match &a.dims {
            Some(dims) => {
                dims.len() == d.shape.len()
                    && dims.iter().zip(&d.shape).all(|(ad, dd)| match (ad, dd) {
                        (Dim::Fixed(x), DimSpec::Fixed(y)) => x == y,
                        (Dim::Fixed(_), DimSpec::Named(_)) => false,
                        _ => true,
                    })
            }
            None => false,
        };
        if d.name != a.name || !dtype_ok || !rank_ok {
            return Err(format!(
                "the graph has [{}], which does not match bundle.json's {} {} rank {}",
                list(actual),
                d.name,
                d.dtype,
                d.shape.len()
            ));
        }
    }
    Ok(())
}

pub fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
