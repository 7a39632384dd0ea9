//! The concept library: one folder per concept under the library folder.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bundle::Bundle;
use crate::manifest::{self, Manifest};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Library {
    path: PathBuf,
}

/// One entry of `Library::list`, read from the manifest without checking
/// hashes (that is `load`'s job).
#[derive(Debug, Clone, Serialize)]
pub struct ConceptInfo {
    pub name: String,
    pub path: PathBuf,
    /// 1 = scene, 2 = subject; 0 when the manifest could not be read.
    pub stage: u8,
    pub role: String,
    /// Stage II: the scene it grew from.
    pub parent: Option<String>,
    pub created: String,
    /// Why the manifest could not be read, if it could not.
    pub problem: Option<String>,
}

impl Library {
    /// `explicit` (`--library`), else `$PIE_HOME`, else `$XDG_DATA_HOME/pie`,
    /// else `~/.local/share/pie`. The folder need not exist yet.
    pub fn open(explicit: Option<PathBuf>) -> Result<Library> {
        let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let path = explicit
            .or_else(|| nonempty("PIE_HOME"))
            .or_else(|| nonempty("XDG_DATA_HOME").map(|d| d.join("pie")))
            .or_else(|| nonempty("HOME").map(|h| h.join(".local/share/pie")))
            .ok_or_else(|| Error::bad("no concept library: pass --library DIR or set PIE_HOME"))?;
        if path.exists() && !path.is_dir() {
            return Err(Error::bad(format!("the concept library {} is not a folder", path.display())));
        }
        Ok(Library { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where concept `name` lives (or would live); refuses names that are not
    /// plain concept names, so a name can never point outside the library.
    pub fn concept_dir(&self, name: &str) -> Result<PathBuf> {
        if !manifest::is_concept_name(name) {
            return Err(Error::bad(format!(
                "{name:?} is not a concept name: use 1-64 characters a-z, 0-9, '-' or '_', starting with a letter or digit"
            )));
        }
        Ok(self.path.join(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.concept_dir(name).map(|d| d.join("bundle.json").is_file()).unwrap_or(false)
    }

    /// All concepts, sorted by name. Folders starting with `.` (partial
    /// bundles, checkpoints) are never concepts.
    pub fn list(&self) -> Result<Vec<ConceptInfo>> {
        let rd = match std::fs::read_dir(&self.path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot read the concept library", &self.path, e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("cannot read the concept library", &self.path, e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = ent.path();
            if name.starts_with('.') || !path.join("bundle.json").is_file() {
                continue;
            }
            let parsed = std::fs::read(path.join("bundle.json"))
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()));
            out.push(match parsed {
                Ok(m) => ConceptInfo {
                    stage: m.stage,
                    role: if m.stage == 2 { "subject".into() } else { "scene".into() },
                    parent: m.parent.map(|p| p.name),
                    created: m.created,
                    problem: None,
                    name,
                    path,
                },
                Err(e) => ConceptInfo {
                    name,
                    path,
                    stage: 0,
                    role: "?".into(),
                    parent: None,
                    created: String::new(),
                    problem: Some(format!("bundle.json: {e}")),
                },
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Loads and fully validates concept `name`.
    pub fn load(&self, name: &str) -> Result<Bundle> {
        let dir = self.concept_dir(name)?;
        if !dir.is_dir() {
            let known: Vec<String> = self.list().unwrap_or_default().into_iter().map(|c| c.name).collect();
            return Err(Error::bad(format!(
                "no concept named {name:?} in {} (known: {})",
                self.path.display(),
                if known.is_empty() { "none; learn one with `pie learn-scene`".to_string() } else { known.join(", ") }
            )));
        }
        let b = Bundle::load(&dir)?;
        if b.manifest.name != name {
            return Err(Error::Bundle {
                bundle: name.to_string(),
                file: "bundle.json".into(),
                what: format!("names the concept {:?}, but its folder is {name:?}", b.manifest.name),
            });
        }
        Ok(b)
    }

    /// Deletes concept `name`. It is first renamed to a dot-folder, so a
    /// half-deleted concept is never listed.
    pub fn remove(&self, name: &str) -> Result<()> {
        let dir = self.concept_dir(name)?;
        if !dir.join("bundle.json").is_file() {
            return Err(Error::bad(format!("no concept named {name:?} in {}", self.path.display())));
        }
        let trash = self.path.join(format!(".removing-{name}-{}", std::process::id()));
        std::fs::rename(&dir, &trash).map_err(|e| Error::io("cannot remove concept", &dir, e))?;
        std::fs::remove_dir_all(&trash).map_err(|e| Error::io("cannot finish removing concept (left in)", &trash, e))
    }
}
